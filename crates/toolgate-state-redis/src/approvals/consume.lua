-- Marks the approved, unused, unexpired request of a call's key used, in one
-- atomic step: an approval runs one call.
--
-- KEYS: [1] the key index "{prefix}:aprkey:{key}".
-- ARGV: [1] now (ms, an integer), [2] the record key prefix "{prefix}:apr:".
--
-- Reply: the used record, or nil when there is nothing to consume.

local id = redis.call('GET', KEYS[1])
if not id then
  return false
end
local key = ARGV[2] .. id
local record = redis.call('GET', key)
if not record then
  return false
end
local expires, state = string.match(record, '^{"expires_ms":(%d+),"state":"(%a+)"')
if state ~= 'approved' or tonumber(ARGV[1]) >= tonumber(expires) then
  return false
end
-- The decision is the JSON object between the head and ',"used_at_ms":null,'
-- (its strings cannot hold an unescaped quote, so that text is not in it).
local head = '{"expires_ms":' .. expires .. ',"state":"approved","decided":'
local tail = ',"used_at_ms":null,'
local tail_at = string.find(record, tail, #head + 1, true)
if string.sub(record, 1, #head) ~= head or not tail_at then
  return redis.error_reply('malformed approval record ' .. key)
end
local used = '{"expires_ms":' .. expires .. ',"state":"used","decided":'
  .. string.sub(record, #head + 1, tail_at - 1)
  .. ',"used_at_ms":' .. ARGV[1] .. ',' .. string.sub(record, tail_at + #tail)
redis.call('SET', key, used, 'KEEPTTL')
-- The key has no live request any more: the same call asks again.
redis.call('DEL', KEYS[1])
return used
