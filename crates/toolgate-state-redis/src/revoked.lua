-- Whether a session is revoked. KEYS: [1] "{prefix}:rev:{id}". ARGV: [1]
-- now_ms (gateway clock). Reply: 1 when revoked and not ended, else 0.
local held = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if held > tonumber(ARGV[1]) then
  return 1
end
return 0
