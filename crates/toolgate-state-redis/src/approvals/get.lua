-- One request's record. KEYS: [1] "{prefix}:apr:{id}". Reply: it, or nil.
return redis.call('GET', KEYS[1])
