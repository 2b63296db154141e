-- Takes every draw of one call at `now`, or none of them, in one atomic step.
--
-- KEYS: two per draw, in draw order: the log (a sorted set) and its running
--       sum (a string), e.g. "toolgate:c:rate%1Fgrant%1Fg" and
--       "toolgate:c:rate%1Fgrant%1Fg:sum".
-- ARGV: [1] now (ms, the gateway's clock); then eight per draw: window (ms,
--       at least 1), max, cost, slice, ceiling, until, back_start,
--       back_units. A draw with a slice above 0 also takes that many units
--       ahead (a slice of toolgate-policy's lease.rs) when the log then
--       holds at most `ceiling`, as an entry that counts until
--       `until + window`; back_units above 0 first gives back the unspent
--       units of the slice taken at back_start (from the entry that holds
--       back_start and ends after it).
--
-- A log entry covers the admissions from `start` to `end`: its score is
-- `end`, its member "<start>:<units>". An admission less than window / 64
-- after the start of the newest entry merges into it (as in toolgate-policy's
-- window.rs), so a key holds at most about 65 entries whatever the call rate.
-- An entry stops counting when end + window <= now. Starts are strictly
-- increasing (a new entry is only opened at or after the newest end), so a
-- member is unique.
--
-- Reply: {1, used_1, ..., used_n, slice_1, ..., slice_n} when every draw was
-- taken (used: units in the window after this call, slice: the units taken
-- ahead, both as strings), or {0, i, retry_after_ms, used}
-- naming the first draw i that did not fit; retry_after_ms is when every
-- draw that did not fit has room again.

local now = tonumber(ARGV[1])
local draws = #KEYS / 2
local PER_DRAW = 8

local function arg(i, n)
  return tonumber(ARGV[1 + PER_DRAW * (i - 1) + n])
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

-- Gives back `units` unspent units of the slice taken at `start`.
local function give_back(log, sum, start, units)
  local hit = redis.call('ZRANGEBYSCORE', log, '(' .. fmt(start), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #hit == 0 then
    return
  end
  local first, held = parse(hit[1])
  if first > start then
    return
  end
  take_off(log, sum, hit, held, units)
end

-- Adds `units` taken at `now`, to be spent until `until_` (now for a call),
-- merging into the newest entry as window.rs does.
local function add(log, sum, state, window, units, until_)
  local newest = state.newest
  local newest_end = until_
  local member = nil
  if #newest > 0 then
    local start, held = parse(newest[1])
    local last_end = tonumber(newest[2])
    if now < last_end or now - start < math.max(1, math.floor(window / 64)) then
      newest_end = math.max(last_end, until_)
      member = fmt(start) .. ':' .. fmt(held + units)
      redis.call('ZREM', log, newest[1])
    end
  end
  if not member then
    member = ARGV[1] .. ':' .. fmt(units)
  end
  redis.call('ZADD', log, fmt(newest_end), member)
  state.newest = { member, fmt(newest_end) }
  state.total = state.total + units
  -- The key lives as long as its newest entry counts (a clock behind the
  -- newest entry's adds at most one more window).
  local ttl = fmt(window + math.min(newest_end - now, window))
  redis.call('PEXPIRE', log, ttl)
  redis.call('SET', sum, fmt(state.total), 'PX', ttl)
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
  local window = arg(i, 1)
  local max = arg(i, 2)
  local cost = arg(i, 3)
  local state = logs[log]
  if not state then
    if arg(i, 8) > 0 then
      give_back(log, sum, arg(i, 7), arg(i, 8))
    end
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

-- Take every draw, then the slices.
local reply = { 1 }
for i = 1, draws do
  local log, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local cost = arg(i, 3)
  local state = logs[log]
  if cost > 0 then
    add(log, sum, state, arg(i, 1), cost, now)
  end
  reply[i + 1] = fmt(state.total)
end
for i = 1, draws do
  local log, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local slice = arg(i, 4)
  local state = logs[log]
  if slice > 0 and state.total + slice <= arg(i, 5) + EPSILON then
    add(log, sum, state, arg(i, 1), slice, arg(i, 6))
    reply[draws + i + 1] = fmt(slice)
  else
    reply[draws + i + 1] = '0'
  end
end
return reply
