-- Replace a card's marketing projection (receiptflow.processors.profiles.projections).
-- Named positions: the same names as projections.GuardKey / WriteArg in Python.
-- KEYS: the projection hash, its guard (both in the slot of the card's marketing hash).
-- ARGV: the token taken before the profile was read, then the projection's fields as a JSON array
--       [field, value, ...] (one argument: cheaper to send than one per field); empty when the card has
--       no profile (erased, or never seen): projection and guard are deleted.
-- Written only while the guard still holds that token: a consent change, a reset or an erasure since
-- the profile was read changed or deleted it, and a projection of the older profile is not written.
local PROJECTION, GUARD = 1, 2
local TOKEN, FIELDS = 1, 2
if redis.call('GET', KEYS[GUARD]) ~= ARGV[TOKEN] then return 0 end
redis.call('DEL', KEYS[PROJECTION])
if ARGV[FIELDS] == '' then
  redis.call('DEL', KEYS[GUARD])
  return 1
end
redis.call('HSET', KEYS[PROJECTION], unpack(cjson.decode(ARGV[FIELDS])))
return 1
