-- Apply one purchase to a card's profile (receiptflow.processors.profiles.store).
-- Named positions: the same names as profile_scripts.ApplyKey / ApplyArg in Python.
-- KEYS: profile hash, seen zset, the card's erased marker (all three in the card's slot).
-- ARGV: receipt key, event ms, week field, day, day's slot in the week, cents, points, dedup ms,
--       keep days, consented 0/1, visits (0 for a refund), number of add pairs, then from PAIRS_FROM the add pairs
--       (field, increment), then max pairs (field, ms).
local PROFILE, SEEN, ERASED = 1, 2, 3
local RECEIPT_KEY, EVENT_MS, WEEK_FIELD, DAY, WEEK_SLOT, CENTS, POINTS, DEDUP_MS, KEEP_DAYS, CONSENTED, VISITS, ADD_PAIRS, PAIRS_FROM = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
-- Day buckets, seven to a field (see _FIELD_DOC): slots joined by ',', trailing empty ones left out;
-- a slot is '<cents>' for one visit or '<visits>:<cents>', both in base 36 ('-' before a negative
-- number: a refund's day may pay back more than was bought).
local function b36(n)
  if n == 0 then return '0' end
  if n < 0 then return '-' .. b36(-n) end
  local out = ''
  while n > 0 do
    local r = n % 36
    out = string.sub('0123456789abcdefghijklmnopqrstuvwxyz', r + 1, r + 1) .. out
    n = (n - r) / 36
  end
  return out
end
local function week_slots(text)
  local out = {'', '', '', '', '', '', ''}
  if text then
    local i = 1
    for part in string.gmatch(text .. ',', '([^,]*),') do
      out[i] = part
      i = i + 1
    end
  end
  return out
end
local function num36(s)
  -- tonumber(s, 36) does not take a sign
  if string.byte(s, 1) == 45 then return -tonumber(string.sub(s, 2), 36) end
  return tonumber(s, 36)
end
local function slot_parse(s)
  local colon = string.find(s, ':', 1, true)
  if colon then return num36(string.sub(s, 1, colon - 1)), num36(string.sub(s, colon + 1)) end
  return 1, num36(s)
end
local function slot_text(v, c)
  if v == 1 then return b36(c) end
  return b36(v) .. ':' .. b36(c)
end
local function week_text(slots)
  local last = 0
  for i = 1, 7 do
    if slots[i] ~= '' then last = i end
  end
  return table.concat(slots, ',', 1, last)
end
local h, seen = KEYS[PROFILE], KEYS[SEEN]
if redis.call('EXISTS', KEYS[ERASED]) == 1 then return 3 end
local ms = tonumber(ARGV[EVENT_MS])
local horizon = tonumber(ARGV[DEDUP_MS])
local lastv = redis.call('HGET', h, 'l')
local last = lastv and tonumber(lastv)
if last and ms < last - horizon then return 2 end
if redis.call('ZADD', seen, 'NX', ARGV[EVENT_MS], ARGV[RECEIPT_KEY]) == 0 then return 0 end
local visits = tonumber(ARGV[VISITS])
if visits ~= 0 then redis.call('HINCRBY', h, 'v', visits) end
redis.call('HINCRBY', h, 's', ARGV[CENTS])
if ARGV[POINTS] ~= '0' then redis.call('HINCRBY', h, 'pt', ARGV[POINTS]) end
local first = redis.call('HGET', h, 'f')
if (not first) or tonumber(first) > ms then redis.call('HSET', h, 'f', ARGV[EVENT_MS]) end
if (not last) or last < ms then
  redis.call('HSET', h, 'l', ARGV[EVENT_MS])
  last = ms
end
local wf, day, keep = ARGV[WEEK_FIELD], tonumber(ARGV[DAY]), tonumber(ARGV[KEEP_DAYS])
local slot = tonumber(ARGV[WEEK_SLOT]) + 1
local cur = redis.call('HGET', h, wf)
local mine = week_slots(cur)
if mine[slot] ~= '' then
  local v, c = slot_parse(mine[slot])
  mine[slot] = slot_text(v + visits, c + tonumber(ARGV[CENTS]))
  redis.call('HSET', h, wf, week_text(mine))
else
  -- A new day bucket: find the newest day, drop buckets that fell out of the longest window.
  local weeks, top = {}, nil
  for _, k in ipairs(redis.call('HKEYS', h)) do
    if string.byte(k, 1) == 119 and k ~= wf then
      local w = tonumber(string.sub(k, 2), 36)
      weeks[#weeks + 1] = {k, w}
      if (not top) or w > top[2] then top = {k, w} end
    end
  end
  local newest = day
  for i = 7, 1, -1 do
    if mine[i] ~= '' then
      newest = math.max(newest, day - slot + i)
      break
    end
  end
  if top and top[2] * 7 + 6 > newest then
    local ts = week_slots(redis.call('HGET', h, top[1]))
    for i = 7, 1, -1 do
      if ts[i] ~= '' then
        newest = math.max(newest, top[2] * 7 + i - 1)
        break
      end
    end
  end
  local cutoff = newest - keep
  if day > cutoff then
    mine[slot] = slot_text(visits, tonumber(ARGV[CENTS]))
    local base = day - slot + 1
    for i = 1, 7 do
      if base + i - 1 <= cutoff then mine[i] = '' end
    end
    redis.call('HSET', h, wf, week_text(mine))
    for _, kw in ipairs(weeks) do
      if kw[2] * 7 + 6 <= cutoff then
        redis.call('HDEL', h, kw[1])
      elseif kw[2] * 7 <= cutoff then
        local ws = week_slots(redis.call('HGET', h, kw[1]))
        for i = 1, 7 do
          if kw[2] * 7 + i - 1 <= cutoff then ws[i] = '' end
        end
        local text = week_text(ws)
        if text == '' then redis.call('HDEL', h, kw[1]) else redis.call('HSET', h, kw[1], text) end
      end
    end
  end
end
redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. string.format('%d', last - horizon))
-- Product data only under consent (Profile.product_allowed_at): not after a withdrawal, not when one
-- at or after this purchase's instant is known, and not unless the grant that followed the newest
-- withdrawal is strictly before it (a tie goes to the stricter side).
local allowed = ARGV[CONSENTED] == '1'
if allowed then
  local c = redis.call('HMGET', h, 'c', 'cw', 'cg')
  if c[1] == '0' then
    allowed = false
  elseif c[2] and (tonumber(c[2]) >= ms or (not c[3]) or tonumber(c[3]) >= ms) then
    allowed = false
  end
end
if allowed then
  local i = PAIRS_FROM
  for _ = 1, tonumber(ARGV[ADD_PAIRS]) do
    redis.call('HINCRBY', h, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  while i <= #ARGV do
    local cur = redis.call('HGET', h, ARGV[i])
    if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end
    i = i + 2
  end
end
return 1
