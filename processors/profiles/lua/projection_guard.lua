-- Take the token of a card's marketing projection (receiptflow.processors.profiles.projections).
-- Named positions: the same names as projections.GuardKey / GuardArg in Python.
-- KEYS: the projection hash, its guard (both in the slot of the card's marketing hash).
-- ARGV: mode, new token. "keep": the guard's token (the new one when there is none), taken before the
--       profile is read; "strip": the new token, and the projection's product fields ("P...") deleted
--       and its consent flag cleared at once (a consent change or a reset: stricter first).
local PROJECTION, GUARD = 1, 2
local MODE, TOKEN = 1, 2
if ARGV[MODE] == 'keep' then
  local t = redis.call('GET', KEYS[GUARD])
  if t then return t end
  redis.call('SET', KEYS[GUARD], ARGV[TOKEN])
  return ARGV[TOKEN]
end
redis.call('SET', KEYS[GUARD], ARGV[TOKEN])
if redis.call('EXISTS', KEYS[PROJECTION]) == 1 then
  for _, k in ipairs(redis.call('HKEYS', KEYS[PROJECTION])) do
    if string.byte(k, 1) == 80 then redis.call('HDEL', KEYS[PROJECTION], k) end
  end
  redis.call('HSET', KEYS[PROJECTION], 'c', '0')
end
return ARGV[TOKEN]
