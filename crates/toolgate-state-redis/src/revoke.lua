-- Revokes a session. KEYS: [1] "{prefix}:rev:{id}". ARGV: [1] until_ms (the
-- session's end, gateway clock), [2] milliseconds from now to then (>= 1).
-- The later end is kept; the key expires with it (PEXPIRE). Reply: 1.
local held = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
