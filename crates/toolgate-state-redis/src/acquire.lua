-- Takes every draw of one call at `now`, or none of them, in one atomic step.
--
-- KEYS: two per draw, in draw order: the log (a sorted set) and its running
--       sum (a string), e.g. "toolgate:c:rate%1Fgrant%1Fg" and
--       "toolgate:c:rate%1Fgrant%1Fg:sum".
-- ARGV: [1] now (ms, the gateway's clock); then three per draw: window (ms,
--       at least 1), max, cost.
--
-- A log entry covers the admissions from `start` to `end`: its score is
-- `end`, its member "<start>:<units>". An admission less than window / 64
-- after the start of the newest entry merges into it (as in toolgate-policy's
-- window.rs), so a key holds at most about 65 entries whatever the call rate.
-- An entry stops counting when end + window <= now. Starts are strictly
-- increasing (a new entry is only opened at or after the newest end), so a
-- member is unique.
--
-- Reply: {1, used_1, ..., used_n} when every draw was taken (used: units in
-- the window after this call, as strings), or {0, i, retry_after_ms, used}
-- naming the first draw i that did not fit; retry_after_ms is when every
-- draw that did not fit has room again.

local EPSILON = 1e-9
local now = tonumber(ARGV[1])
local draws = #KEYS / 2

local function fmt(x)
  return string.format('%.17g', x)
end

local function parse(member)
  local sep = string.find(member, ':', 1, true)
  return tonumber(string.sub(member, 1, sep - 1)), tonumber(string.sub(member, sep + 1))
end

local function sum_of(log)
  local total = 0
  for _, member in ipairs(redis.call('ZRANGE', log, 0, -1)) do
    local _, units = parse(member)
    total = total + units
  end
  return total
end

-- Drops the entries that no longer count at `now`; returns the units left
-- and the newest entry ({member, end}, empty when the log is).
local function expire(log, sum, window)
  local cutoff = fmt(now - window)
  local total = tonumber(redis.call('GET', sum) or '')
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
    if total then
      for _, member in ipairs(gone) do
        local _, units = parse(member)
        total = total - units
      end
    end
  end
  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #newest == 0 then
    if total then
      redis.call('DEL', sum)
    end
    return 0, newest
  end
  if not total then
    -- The sum expired a moment before its log: count the log again.
    total = sum_of(log)
  elseif #gone > 0 then
    total = math.max(total, 0)
    redis.call('SET', sum, fmt(total), 'KEEPTTL')
  end
  return math.max(total, 0), newest
end

-- When `extra + cost` more units fit: after the oldest entries whose
-- expiry frees enough room (the window length when nothing will).
local function retry_after(log, total, extra, cost, max, window)
  if extra + cost > max + EPSILON then
    return window
  end
  local remaining = total
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local _, units = parse(entries[i])
    remaining = remaining - units
    if remaining + extra + cost <= max + EPSILON then
      return math.max(tonumber(entries[i + 1]) + window - now, 1)
    end
  end
  return window
end

-- Check every draw; earlier draws of this call on the same key count too.
local logs = {}
local refused, refused_retry, refused_used = nil, 0, 0
for i = 1, draws do
  local log, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 * i - 1])
  local max = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local state = logs[log]
  if not state then
    local total, newest = expire(log, sum, window)
    state = { total = total, extra = 0, newest = newest }
    logs[log] = state
  end
  if state.total + state.extra + cost > max + EPSILON then
    local retry = retry_after(log, state.total, state.extra, cost, max, window)
    if not refused then
      refused, refused_retry, refused_used = i, retry, state.total
    elseif retry > refused_retry then
      refused_retry = retry
    end
  end
  state.extra = state.extra + cost
end
if refused then
  return { 0, refused, refused_retry, fmt(refused_used) }
end

-- Take every draw.
local reply = { 1 }
for i = 1, draws do
  local log, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i + 1])
  local state = logs[log]
  if cost > 0 then
    local newest = state.newest
    local newest_end = now
    local member = nil
    if #newest > 0 then
      local start, units = parse(newest[1])
      local last_end = tonumber(newest[2])
      if now < last_end or now - start < math.max(1, math.floor(window / 64)) then
        newest_end = math.max(last_end, now)
        member = fmt(start) .. ':' .. fmt(units + cost)
        redis.call('ZREM', log, newest[1])
      end
    end
    if not member then
      member = ARGV[1] .. ':' .. fmt(cost)
    end
    redis.call('ZADD', log, fmt(newest_end), member)
    state.newest = { member, fmt(newest_end) }
    state.total = state.total + cost
    -- The key lives as long as its newest entry counts (a clock behind the
    -- newest entry's adds at most one more window).
    local ttl = fmt(window + math.min(newest_end - now, window))
    redis.call('PEXPIRE', log, ttl)
    redis.call('SET', sum, fmt(state.total), 'PX', ttl)
  end
  reply[i + 1] = fmt(state.total)
end
return reply
