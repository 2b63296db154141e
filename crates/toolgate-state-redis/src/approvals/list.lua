-- Every request still stored, in one atomic step (the caller sorts them).
--
-- KEYS: [1] the list index "{prefix}:aprs".
-- ARGV: [1] now (ms, the gateway's clock), [2] the record key prefix.
--
-- Reply: the records. Ids whose records have expired leave the index.

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local records = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local record = redis.call('GET', ARGV[2] .. id)
  if record then
    records[#records + 1] = record
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return records
