-- Read a card's profile hash for its marketing projection (receiptflow.processors.profiles.projections).
-- Named positions: the same names as projections.ReadKey in Python.
-- KEYS: the profile hash. Returns HGETALL as one JSON array [field, value, ...]: one reply to parse
-- instead of one per field and value.
local PROFILE = 1
return cjson.encode(redis.call('HGETALL', KEYS[PROFILE]))
