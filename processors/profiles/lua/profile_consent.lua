-- Record one consent change on a card's profile (receiptflow.processors.profiles.store).
-- Named positions: the same names as profile_scripts.ConsentKey / ConsentArg in Python.
-- KEYS: profile hash, the card's erased marker (both in the card's slot).
-- ARGV: event ms, product data "1"/"0", written ms (the record's broker append time), its offset.
local PROFILE, ERASED = 1, 2
local EVENT_MS, PRODUCT_DATA, WRITTEN_MS, OFFSET = 1, 2, 3, 4
if redis.call('EXISTS', KEYS[ERASED]) == 1 then return 3 end
local old = redis.call('HMGET', KEYS[PROFILE], 'c', 'ct', 'cw', 'cg', 'ca', 'co')
if old[2] then
  -- Newest written wins, whatever the event times say (a profile of before 'ca': its event ms);
  -- in one millisecond the later offset; at one position (no offsets known) the stricter.
  local at, off = tonumber(old[5] or old[2]), tonumber(old[6] or '0')
  local ms, o = tonumber(ARGV[WRITTEN_MS]), tonumber(ARGV[OFFSET])
  if at > ms or (at == ms and (off > o or (off == o and old[1] == '0'))) then return 0 end
end
redis.call('HSET', KEYS[PROFILE], 'c', ARGV[PRODUCT_DATA], 'ct', ARGV[EVENT_MS], 'ca', ARGV[WRITTEN_MS],
  'co', ARGV[OFFSET])
-- The newest withdrawal and the first grant after it (ConsentMark.withdrawn_ms / regranted_ms).
if ARGV[PRODUCT_DATA] == '0' then
  redis.call('HSET', KEYS[PROFILE], 'cw', ARGV[EVENT_MS])
  redis.call('HDEL', KEYS[PROFILE], 'cg')
elseif old[3] and not old[4] then
  redis.call('HSET', KEYS[PROFILE], 'cg', ARGV[EVENT_MS])
end
if ARGV[PRODUCT_DATA] == '0' then
  for _, k in ipairs(redis.call('HKEYS', KEYS[PROFILE])) do
    if string.byte(k, 1) == 80 then redis.call('HDEL', KEYS[PROFILE], k) end
  end
end
return 1
