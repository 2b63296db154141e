-- Approves or denies a pending, unexpired request, in one atomic step.
--
-- KEYS: [1] the request's record "{prefix}:apr:{id}".
-- ARGV: [1] now (ms), [2] the new state ("approved" or "denied"), [3] the
--       decision as JSON ({"by":...,"via":...,"at_ms":...,"reason":...}).
--
-- Reply: {1, new record}; {0} when there is no such request; {2} when it
-- has expired; {3, state} when it was already decided.

local record = redis.call('GET', KEYS[1])
if not record then
  return {0}
end
local expires, state = string.match(record, '^{"expires_ms":(%d+),"state":"(%a+)"')
if not expires then
  return redis.error_reply('malformed approval record ' .. KEYS[1])
end
if state ~= 'pending' then
  return {3, state}
end
if tonumber(ARGV[1]) >= tonumber(expires) then
  return {2}
end
local head = '{"expires_ms":' .. expires .. ',"state":"pending","decided":null,"used_at_ms":null,'
if string.sub(record, 1, #head) ~= head then
  return redis.error_reply('malformed approval record ' .. KEYS[1])
end
local decided = '{"expires_ms":' .. expires .. ',"state":"' .. ARGV[2] .. '","decided":' .. ARGV[3]
  .. ',"used_at_ms":null,' .. string.sub(record, #head + 1)
redis.call('SET', KEYS[1], decided, 'KEEPTTL')
return {1, decided}
