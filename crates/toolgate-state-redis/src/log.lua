-- What acquire.lua and release.lua share (script.rs puts it in front of
-- each): the layout of a log's members, and taking units off one entry.

local EPSILON = 1e-9

local function fmt(x)
  return string.format('%.17g', x)
end

local function parse(member)
  local sep = string.find(member, ':', 1, true)
  return tonumber(string.sub(member, 1, sep - 1)), tonumber(string.sub(member, sep + 1))
end

-- Takes up to `units` off the entry `hit` ({member, end}) that holds
-- `held`, keeping the running sum; returns the units taken off. The shrunk
-- entry is added before the old one is removed: a log that never empties
-- keeps its time to live.
local function take_off(log, sum, hit, held, units)
  local returned = math.min(units, held)
  local left = held - returned
  local start = parse(hit[1])
  if left > EPSILON then
    local member = fmt(start) .. ':' .. fmt(left)
    if member ~= hit[1] then
      redis.call('ZADD', log, hit[2], member)
      redis.call('ZREM', log, hit[1])
    end
  else
    returned = held
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
  return returned
end

