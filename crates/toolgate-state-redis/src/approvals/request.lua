-- The live approval request of a call's key, or a new pending one, in one
-- atomic step.
--
-- KEYS: [1] the key index "{prefix}:aprkey:{key}" (the live request's id),
--       [2] the new request's record "{prefix}:apr:{new id}",
--       [3] the list index "{prefix}:aprs" (a sorted set of ids, scored by
--       when their record expires, on the gateway's clock).
-- ARGV: [1] now (ms, the gateway's clock), [2] the record key prefix
--       "{prefix}:apr:", [3] the new id, [4] the new record, [5] its time to
--       live (ms), [6] its score in the list index.
--
-- A record is JSON that starts
--   {"expires_ms":N,"state":"S","decided":D,"used_at_ms":U,"request":{...}}
-- (see approvals.rs); the scripts read and rewrite only that head, so the
-- request (the call's arguments) is stored exactly as the gateway wrote it.
--
-- Reply: the live record, or the new one.

local now = tonumber(ARGV[1])
local live = redis.call('GET', KEYS[1])
if live then
  local record = redis.call('GET', ARGV[2] .. live)
  if record then
    local expires, state = string.match(record, '^{"expires_ms":(%d+),"state":"(%a+)"')
    if expires and (state == 'pending' or state == 'approved') and now < tonumber(expires) then
      return record
    end
  end
end

local ttl = tonumber(ARGV[5])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ttl)
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
-- Ids whose records have expired leave the list index.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[3])
if redis.call('PTTL', KEYS[3]) < ttl then
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return ARGV[4]
