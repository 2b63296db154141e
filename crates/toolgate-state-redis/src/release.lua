-- Gives back what a grant took (see acquire.lua for the layout of a log).
--
-- KEYS: two per taken draw: the log and its running sum.
-- ARGV: two per taken draw: the time it was admitted (ms) and its cost.
--
-- The units come off the entry that covers the admission time, if that
-- entry is still in the log: quota whose entry has expired is not given
-- back twice. Keys keep their time to live. Reply: 1.

local EPSILON = 1e-9

local function fmt(x)
  return string.format('%.17g', x)
end

local function parse(member)
  local sep = string.find(member, ':', 1, true)
  return tonumber(string.sub(member, 1, sep - 1)), tonumber(string.sub(member, sep + 1))
end

for i = 1, #KEYS / 2 do
  local log, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local at = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  if cost > 0 then
    -- The first entry that ends at or after `at`; it holds the admission if
    -- it also starts at or before it.
    local hit = redis.call('ZRANGEBYSCORE', log, fmt(at), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    local start, units = nil, 0
    if #hit > 0 then
      start, units = parse(hit[1])
    end
    if start and start <= at then
      local returned = math.min(cost, units)
      local left = units - returned
      if left > EPSILON then
        -- Add the shrunk entry before removing the old one: a log that
        -- never empties keeps its time to live.
        local member = fmt(start) .. ':' .. fmt(left)
        if member ~= hit[1] then
          redis.call('ZADD', log, hit[2], member)
          redis.call('ZREM', log, hit[1])
        end
      else
        returned = units
        redis.call('ZREM', log, hit[1])
      end
      if redis.call('ZCARD', log) == 0 then
        redis.call('DEL', sum)
      else
        local total = tonumber(redis.call('GET', sum) or '')
        if total then
          redis.call('SET', sum, fmt(math.max(total - returned, 0)), 'KEEPTTL')
        end
      end
    end
  end
end
return 1
