-- Gives back what a grant took (see acquire.lua for the layout of a log).
--
-- KEYS: two per taken draw: the log and its running sum.
-- ARGV: two per taken draw: the time it was admitted (ms) and its cost.
--
-- The units come off the entry that covers the admission time, if that
-- entry is still in the log: quota whose entry has expired is not given
-- back twice. Keys keep their time to live. Reply: 1.

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
      take_off(log, sum, hit, units, cost)
    end
  end
end
return 1
