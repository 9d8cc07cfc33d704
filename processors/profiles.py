"""Customer profiles: the pure fold ``update(profile, purchase) -> profile`` and its Redis form.

The fold is the definition of what a profile is; :class:`RedisProfileStore` applies exactly the same
increments (``profile_rules.delta``) in Redis. Each purchase is applied by one Lua script that checks
and records the receipt id and updates the profile atomically, so a receipt delivered many times
(at-least-once upstream, a crash between write and commit, a replay) counts once. A batch is one
pipelined round trip.

What a profile holds per card:

* lifetime visits, spend, first and last purchase; day buckets (the receipt's local date) of visits
  and spend for the last 365 days behind the card's newest day, so the 30/90/365-day windows are
  exact for any reading day and out-of-order receipts land in their own day;
* loyalty points (per chain rate, partners included);
* product-derived fields, built only from purchases processed under product-data consent and
  deleted when that consent is withdrawn: product-group amounts (the mix), affinities (newest
  purchase of pet food / baby products / alcohol), nutrition and climate counters from item lines;
* the newest consent state seen on the ``consents`` topic, and the bounded dedup set.

Order: receipts are folded in any order with the same result, except a receipt whose event time
is more than ``Rules.dedup_ms`` behind the card's newest receipt: its id can no longer be checked,
so it is refused (counted as late) rather than risk counting it twice.

Keys (the ``{card}`` hash tag keeps one card's keys on one Redis Cluster slot):
``rf:{card}:p``    hash, short field names (see ``_FIELD_DOC`` below)
``rf:{card}:seen`` sorted set: 12-character receipt key scored by event time in ms
``rf:erased``      set of salted hashes of erased cards (no card id is kept)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import redis

from ..card_hash import erased_hash
from ..config import Settings
from ..errors import ProfileStoreError
from ..models import ConsentChange, Purchase
from ..redis_auth import RedisRole, connection_url
from ..secrets import erasure_salt
from .profile_rules import NUTRIENTS, Delta, Rules, default_rules, delta, epoch_day, load_rules

_EMPTY: Mapping[str, int] = MappingProxyType({})
_NO_DAYS: Mapping[int, tuple[int, int]] = MappingProxyType({})
WINDOWS = (30, 90, 365)
# Day buckets are stored seven to a hash field (one field per week since 1970-01-01, the day's slot
# inside it), so a year of daily visits stays far below the 128 fields of Redis's compact listpack
# encoding; a week's text (``week_text``, base 36) stays under the 64-byte limit of a listpack value
# (seven days of up to 35 visits and 600,000 euros each).
WEEK_DAYS = 7


@dataclass(frozen=True, slots=True)
class ConsentMark:
    """The newest consent change recorded for a card, with what purchases made before it are held to.

    ``withdrawn_ms`` is the event time of the newest withdrawal of product-data consent recorded,
    ``regranted_ms`` that of the first grant recorded after it (None when none). A purchase at ``t``
    may add product data only when no withdrawal at or after ``t`` is known and, after the newest
    one, a grant strictly before ``t`` is: a change counts at its own instant only when it is
    stricter, so a grant at exactly the purchase time does not grant for that purchase, and a
    withdrawal at that time does apply (see :meth:`Profile.product_allowed_at`).
    """

    product_data: bool
    event_ms: int
    withdrawn_ms: int | None = None
    regranted_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    card_id: str
    visits: int = 0
    spend_cents: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    days: Mapping[int, tuple[int, int]] = field(default_factory=lambda: _NO_DAYS)  # day -> (visits, cents)
    points: int = 0
    groups: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    affinity: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # pet/baby/alcohol -> newest ms
    nutrition: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # profile_rules.NUTRIENTS
    salt_by_group: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # mg
    sugar_by_group: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # mg
    consent: ConsentMark | None = None
    seen: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # receipt key -> event ms

    def has_product_data(self) -> bool:
        return bool(self.groups or self.affinity or self.nutrition or self.salt_by_group or self.sugar_by_group)

    def product_allowed(self) -> bool:
        """False once the newest consent seen withdrew product data."""
        return self.consent is None or self.consent.product_data

    def product_allowed_at(self, event_ms: int) -> bool:
        """Whether a purchase made at ``event_ms`` (routed under product-data consent) may add product data.

        Not when the newest consent seen withdrew it, nor when a withdrawal at or after the purchase
        instant is known (it deletes that data in any case), nor when the grant that followed the
        newest withdrawal is not strictly before the purchase: ties go to the stricter side, so the
        result is the same whichever of the purchase and the changes is processed first.
        """
        c = self.consent
        if c is None:
            return True
        if not c.product_data:
            return False
        if c.withdrawn_ms is None:
            return True
        return c.withdrawn_ms < event_ms and c.regranted_ms is not None and c.regranted_ms < event_ms


class Outcome(IntEnum):
    """What applying one purchase did (the Redis script returns the same codes)."""

    DUPLICATE = 0
    APPLIED = 1
    LATE = 2  # older than the dedup horizon behind the card's newest receipt: refused
    ERASED = 3  # the card was erased: nothing is stored about it again


def _added(a: Mapping[str, int], b: Mapping[str, int]) -> Mapping[str, int]:
    if not b:
        return a
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return MappingProxyType(out)


def apply_delta(profile: Profile, d: Delta, rules: Rules) -> tuple[Profile, Outcome]:
    """Fold one purchase's increments into a profile (pure); the outcome says whether it counted."""
    if profile.last_ms is not None and d.event_ms < profile.last_ms - rules.dedup_ms:
        return profile, Outcome.LATE
    if d.receipt_key in profile.seen:
        return profile, Outcome.DUPLICATE
    last = d.event_ms if profile.last_ms is None else max(profile.last_ms, d.event_ms)
    days = profile.days
    if d.day in days:
        v, c = days[d.day]
        days = MappingProxyType({**days, d.day: (v + 1, c + d.cents)})
    else:
        newest = max([d.day, *days])
        if d.day > newest - rules.keep_days:
            kept = {k: x for k, x in days.items() if k > newest - rules.keep_days}
            kept[d.day] = (1, d.cents)
            days = MappingProxyType(kept)
    seen = {k: ms for k, ms in profile.seen.items() if ms >= last - rules.dedup_ms}
    seen[d.receipt_key] = d.event_ms
    out = replace(
        profile,
        visits=profile.visits + 1,
        spend_cents=profile.spend_cents + d.cents,
        first_ms=d.event_ms if profile.first_ms is None else min(profile.first_ms, d.event_ms),
        last_ms=last,
        days=days,
        points=profile.points + d.points,
        seen=MappingProxyType(seen),
    )
    if d.consented and profile.product_allowed_at(d.event_ms):
        affinity = dict(out.affinity)
        for kind, ms in d.affinity.items():
            affinity[kind] = max(ms, affinity.get(kind, ms))
        out = replace(
            out,
            groups=_added(out.groups, d.groups),
            affinity=MappingProxyType(affinity),
            nutrition=_added(out.nutrition, d.nutrition),
            salt_by_group=_added(out.salt_by_group, d.salt_by_group),
            sugar_by_group=_added(out.sugar_by_group, d.sugar_by_group),
        )
    return out, Outcome.APPLIED


def update(profile: Profile, purchase: Purchase, rules: Rules | None = None) -> Profile:
    """Fold one purchase into a profile; a receipt already folded in changes nothing."""
    if purchase.card_id != profile.card_id:
        raise ValueError(f"purchase of card {purchase.card_id!r} folded into profile {profile.card_id!r}")
    rules = rules or default_rules()
    return apply_delta(profile, delta(purchase, rules), rules)[0]


def without_product_data(profile: Profile) -> Profile:
    return replace(
        profile, groups=_EMPTY, affinity=_EMPTY, nutrition=_EMPTY, salt_by_group=_EMPTY, sugar_by_group=_EMPTY
    )


def apply_consent(profile: Profile, change: ConsentChange) -> Profile:
    """Record the newest consent; withdrawing product-data consent deletes every product-derived field.

    An older change than the one recorded changes nothing (the compacted topic is replayed on
    restarts); two changes at the same time count as the stricter one. The newest withdrawal and
    the first grant after it are kept with the mark, for purchases made before the change.
    """
    ms = int(change.event_time.timestamp() * 1000)
    old = profile.consent
    if old is not None and (old.event_ms > ms or (old.event_ms == ms and not old.product_data)):
        return profile
    if not change.product_data_marketing:
        mark = ConsentMark(False, ms, withdrawn_ms=ms)
    else:
        withdrawn = None if old is None else old.withdrawn_ms
        regranted = None if old is None else old.regranted_ms
        if withdrawn is not None and regranted is None:
            regranted = ms  # the first grant after the newest withdrawal
        mark = ConsentMark(True, ms, withdrawn, regranted)
    out = replace(profile, consent=mark)
    return out if change.product_data_marketing else without_product_data(out)


def fold(events: Iterable[Purchase | ConsentChange], rules: Rules | None = None) -> dict[str, Profile]:
    """All profiles from purchases (and consent changes), applied in the order given.

    Anonymous purchases are skipped.
    """
    rules = rules or default_rules()
    out: dict[str, Profile] = {}
    for e in events:
        if e.card_id is None:
            continue
        prof = out.get(e.card_id) or Profile(e.card_id)
        if isinstance(e, ConsentChange):
            out[e.card_id] = apply_consent(prof, e)
        else:
            out[e.card_id] = apply_delta(prof, delta(e, rules), rules)[0]
    return out


def windows(profile: Profile, today: date) -> dict[int, tuple[int, int]]:
    """(visits, cents) in the last 30, 90 and 365 days up to and including ``today``."""
    t = epoch_day(today)
    out = {}
    for n in WINDOWS:
        inside = [vc for d, vc in profile.days.items() if t - n < d <= t]
        out[n] = (sum(v for v, _ in inside), sum(c for _, c in inside))
    return out


# --- the Redis representation -----------------------------------------------------------------
_FIELD_DOC = """
v, s, f, l   lifetime visits, spend cents, first and last event ms
pt           points
w<base36 week> seven day buckets (week = epoch day // 7): slots joined by ",", trailing empty
             ones left out; a slot is <cents> for one visit or <visits>:<cents>, base 36
c, ct        newest consent seen: product data "1"/"0" and its event ms
cw, cg       event ms of the newest withdrawal seen and of the first grant after it
sv, sd, sn, sm  segment model version, month, visits class, money class (``segments run``)
P...         product-derived (deleted on withdrawal): Pg:<group> cents, Pa:<kind> newest ms,
             Pn<code> nutrition counter, Ps:<group> salt mg, Pu:<group> sugar mg, Psg grocery segment
"""
_NUTRIENT_FIELD = {
    "item_cents": "Pnc",
    "co2e_g": "Pno",
    "domestic_cents": "Pnd",
    "food_g": "Pnw",
    "salt_mg": "Pns",
    "sugar_mg": "Pnu",
    "energy_kcal": "Pne",
    "vegfruit_g": "Pnv",
}
_FIELD_NUTRIENT = {v: k for k, v in _NUTRIENT_FIELD.items()}
assert set(_NUTRIENT_FIELD) == set(NUTRIENTS)

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    if n <= 0:
        return "0" if n == 0 else "-" + _base36(-n)
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out


def week_field(day: int) -> str:
    """The hash field holding ``day``'s bucket (with the other days of its week)."""
    return "w" + _base36(day // WEEK_DAYS)


def week_text(slots: Mapping[int, tuple[int, int]]) -> str:
    """A week field's value from slot (0-6) → (visits, cents): what the Lua script writes."""
    parts = [""] * WEEK_DAYS
    for i, (v, c) in slots.items():
        parts[i] = _base36(c) if v == 1 else f"{_base36(v)}:{_base36(c)}"
    return ",".join(parts).rstrip(",")


def week_days(field_name: str, text: str) -> dict[int, tuple[int, int]]:
    """Day → (visits, cents) of one week field (the inverse of ``week_text``)."""
    base = int(field_name[1:], 36) * WEEK_DAYS
    out = {}
    for i, part in enumerate(text.split(",")):
        if not part:
            continue
        v, _, c = part.rpartition(":")
        out[base + i] = (int(v, 36) if v else 1, int(c, 36))
    return out


# KEYS: profile hash, seen zset, erased set.
# ARGV: 1 receipt key, 2 event ms, 3 week field, 4 day, 5 day's slot in the week, 6 cents, 7 points,
#       8 dedup ms, 9 keep days, 10 consented 0/1, 11 erased-card hash, 12 number of add pairs,
#       then add pairs (field, increment), then max pairs (field, ms).
APPLY_LUA = """
-- Day buckets, seven to a field (see _FIELD_DOC): slots joined by ',', trailing empty ones left out;
-- a slot is '<cents>' for one visit or '<visits>:<cents>', both in base 36.
local function b36(n)
  if n == 0 then return '0' end
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
local function slot_parse(s)
  local colon = string.find(s, ':', 1, true)
  if colon then return tonumber(string.sub(s, 1, colon - 1), 36), tonumber(string.sub(s, colon + 1), 36) end
  return 1, tonumber(s, 36)
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
local h, seen = KEYS[1], KEYS[2]
if redis.call('SISMEMBER', KEYS[3], ARGV[11]) == 1 then return 3 end
local ms = tonumber(ARGV[2])
local horizon = tonumber(ARGV[8])
local lastv = redis.call('HGET', h, 'l')
local last = lastv and tonumber(lastv)
if last and ms < last - horizon then return 2 end
if redis.call('ZADD', seen, 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', h, 'v', 1)
redis.call('HINCRBY', h, 's', ARGV[6])
if ARGV[7] ~= '0' then redis.call('HINCRBY', h, 'pt', ARGV[7]) end
local first = redis.call('HGET', h, 'f')
if (not first) or tonumber(first) > ms then redis.call('HSET', h, 'f', ARGV[2]) end
if (not last) or last < ms then
  redis.call('HSET', h, 'l', ARGV[2])
  last = ms
end
local wf, day, keep = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[9])
local slot = tonumber(ARGV[5]) + 1
local cur = redis.call('HGET', h, wf)
local mine = week_slots(cur)
if mine[slot] ~= '' then
  local v, c = slot_parse(mine[slot])
  mine[slot] = slot_text(v + 1, c + tonumber(ARGV[6]))
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
    mine[slot] = slot_text(1, tonumber(ARGV[6]))
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
local allowed = ARGV[10] == '1'
if allowed then
  local c = redis.call('HMGET', h, 'c', 'cw', 'cg')
  if c[1] == '0' then
    allowed = false
  elseif c[2] and (tonumber(c[2]) >= ms or (not c[3]) or tonumber(c[3]) >= ms) then
    allowed = false
  end
end
if allowed then
  local i = 13
  for _ = 1, tonumber(ARGV[12]) do
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
"""

# KEYS: profile hash, erased set. ARGV: event ms, product data "1"/"0", erased-card hash.
CONSENT_LUA = """
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return 3 end
local old = redis.call('HMGET', KEYS[1], 'c', 'ct', 'cw', 'cg')
if old[2] then
  local at = tonumber(old[2])
  local ms = tonumber(ARGV[1])
  if at > ms or (at == ms and old[1] == '0') then return 0 end
end
redis.call('HSET', KEYS[1], 'c', ARGV[2], 'ct', ARGV[1])
-- The newest withdrawal and the first grant after it (ConsentMark.withdrawn_ms / regranted_ms).
if ARGV[2] == '0' then
  redis.call('HSET', KEYS[1], 'cw', ARGV[1])
  redis.call('HDEL', KEYS[1], 'cg')
elseif old[3] and not old[4] then
  redis.call('HSET', KEYS[1], 'cg', ARGV[1])
end
if ARGV[2] == '0' then
  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.byte(k, 1) == 80 then redis.call('HDEL', KEYS[1], k) end
  end
end
return 1
"""

# Segment fields written by ``segments run``; the grocery segment is product-derived ("P...").
SEGMENT_FIELDS = {"model": "sv", "month": "sd", "visits_class": "sn", "money_class": "sm", "grocery_segment": "Psg"}

ERASED_KEY = "rf:erased"


def profile_key(card_id: str) -> str:
    return f"rf:{{{card_id}}}:p"


def seen_key(card_id: str) -> str:
    return f"rf:{{{card_id}}}:seen"


def delta_args(d: Delta, rules: Rules, erased: str) -> list[Any]:
    """The Lua script's ARGV for one delta (see ``APPLY_LUA``)."""
    adds: list[Any] = []
    for g, cents in d.groups.items():
        adds += ["Pg:" + g, cents]
    for n, value in d.nutrition.items():
        adds += [_NUTRIENT_FIELD[n], value]
    for g, mg in d.salt_by_group.items():
        adds += ["Ps:" + g, mg]
    for g, mg in d.sugar_by_group.items():
        adds += ["Pu:" + g, mg]
    args: list[Any] = [
        d.receipt_key,
        d.event_ms,
        week_field(d.day),
        d.day,
        d.day % WEEK_DAYS,
        d.cents,
        d.points,
        rules.dedup_ms,
        rules.keep_days,
        1 if d.consented else 0,
        erased,
        len(adds) // 2,
        *adds,
    ]
    for kind, ms in d.affinity.items():
        args += ["Pa:" + kind, ms]
    return args


def decode_profile(card_id: str, h: Mapping[str, str], seen: Iterable[tuple[str, float]]) -> Profile:
    """A :class:`Profile` from its Redis hash and dedup set."""
    days: dict[int, tuple[int, int]] = {}
    groups: dict[str, int] = {}
    affinity: dict[str, int] = {}
    nutrition: dict[str, int] = {}
    salt: dict[str, int] = {}
    sugar: dict[str, int] = {}
    for k, v in h.items():
        if k.startswith("w"):
            days.update(week_days(k, v))
        elif k.startswith("Pg:"):
            groups[k[3:]] = int(v)
        elif k.startswith("Pa:"):
            affinity[k[3:]] = int(v)
        elif k.startswith("Ps:"):
            salt[k[3:]] = int(v)
        elif k.startswith("Pu:"):
            sugar[k[3:]] = int(v)
        elif k in _FIELD_NUTRIENT:
            nutrition[_FIELD_NUTRIENT[k]] = int(v)
    consent = None
    if "c" in h and "ct" in h:
        withdrawn, regranted = h.get("cw"), h.get("cg")
        consent = ConsentMark(
            h["c"] == "1",
            int(h["ct"]),
            None if withdrawn is None else int(withdrawn),
            None if regranted is None else int(regranted),
        )
    return Profile(
        card_id=card_id,
        visits=int(h.get("v", 0)),
        spend_cents=int(h.get("s", 0)),
        first_ms=int(h["f"]) if "f" in h else None,
        last_ms=int(h["l"]) if "l" in h else None,
        days=MappingProxyType(days),
        points=int(h.get("pt", 0)),
        groups=MappingProxyType(groups),
        affinity=MappingProxyType(affinity),
        nutrition=MappingProxyType(nutrition),
        salt_by_group=MappingProxyType(salt),
        sugar_by_group=MappingProxyType(sugar),
        consent=consent,
        seen=MappingProxyType({m: int(score) for m, score in seen}),
    )


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    erased: int = 0


class RedisProfileStore:
    """Applies purchases and consent changes to profiles in Redis: once per receipt, one round trip per batch."""

    def __init__(self, client: redis.Redis, rules: Rules | None = None, *, erasure_salt: bytes) -> None:
        if not erasure_salt:
            raise ValueError("RedisProfileStore needs the install's erasure salt")
        self._r = client
        self.rules = rules or default_rules()
        self.salt = erasure_salt  # the install's (receiptflow.secrets): never one written in the source
        try:
            self._apply = client.register_script(APPLY_LUA)
            self._consent = client.register_script(CONSENT_LUA)
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot register profile script: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, rules: Rules | None = None, *, erasure_salt: bytes) -> RedisProfileStore:
        return cls(redis.Redis.from_url(url, decode_responses=True), rules, erasure_salt=erasure_salt)

    @classmethod
    def from_settings(cls, settings: Settings, role: RedisRole = RedisRole.WRITER) -> RedisProfileStore:
        """The store as ``role`` sees it (its Redis user: see :mod:`receiptflow.redis_auth`)."""
        rules = load_rules(settings.points_file, settings.profile_dedup_days)
        return cls.from_url(connection_url(settings, role), rules, erasure_salt=erasure_salt(settings))

    @property
    def client(self) -> redis.Redis:
        return self._r

    def erased_hash(self, card_id: str) -> str:
        return erased_hash(card_id, self.salt)

    def apply_all(self, purchases: Sequence[Purchase]) -> ApplyResult:
        """Apply a batch in one pipelined round trip; counts what each purchase did."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for p in purchases:
            if p.card_id is None:
                continue
            args = delta_args(delta(p, self.rules), self.rules, self.erased_hash(p.card_id))
            self._apply(keys=[profile_key(p.card_id), seen_key(p.card_id), ERASED_KEY], args=args, client=pipe)
            n += 1
        if not n:
            return ApplyResult()
        try:
            results = [int(x) for x in pipe.execute()]
        except redis.RedisError as exc:
            raise ProfileStoreError(f"profile batch failed: {exc}") from exc
        return ApplyResult(
            applied=results.count(Outcome.APPLIED),
            duplicates=results.count(Outcome.DUPLICATE),
            late=results.count(Outcome.LATE),
            erased=results.count(Outcome.ERASED),
        )

    def apply(self, purchases: Sequence[Purchase]) -> int:
        """Apply a batch; returns how many were new (the rest were duplicates, late or erased)."""
        return self.apply_all(purchases).applied

    def apply_consents(self, changes: Sequence[ConsentChange]) -> int:
        """Record consent changes (one round trip); returns how many changed a profile."""
        if not changes:
            return 0
        pipe = self._r.pipeline(transaction=False)
        for c in changes:
            ms = int(c.event_time.timestamp() * 1000)
            args = [ms, "1" if c.product_data_marketing else "0", self.erased_hash(c.card_id)]
            self._consent(keys=[profile_key(c.card_id), ERASED_KEY], args=args, client=pipe)
        try:
            return sum(1 for x in pipe.execute() if int(x) == 1)
        except redis.RedisError as exc:
            raise ProfileStoreError(f"consent batch failed: {exc}") from exc

    def get(self, card_id: str, with_seen: bool = True) -> Profile | None:
        """The card's profile; ``with_seen=False`` reads only the profile hash (its ``seen`` is then
        empty), which is all a read-only role such as the marketing reader may read."""
        try:
            pipe = self._r.pipeline(transaction=False)
            pipe.hgetall(profile_key(card_id))
            if with_seen:
                pipe.zrange(seen_key(card_id), 0, -1, withscores=True)
            h, *rest = pipe.execute()
            seen = rest[0] if rest else []
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read profile: {exc}") from exc
        if not h:
            return None
        return decode_profile(card_id, h, seen)

    def get_many(self, card_ids: Sequence[str], *, with_seen: bool = True) -> dict[str, Profile]:
        """Profiles of many cards in one round trip (cards without one are left out).

        ``with_seen=False`` leaves the dedup sets out (empty ``seen``): all a view needs, and all the
        marketing reader's Redis user may read.
        """
        pipe = self._r.pipeline(transaction=False)
        for c in card_ids:
            pipe.hgetall(profile_key(c))
            if with_seen:
                pipe.zrange(seen_key(c), 0, -1, withscores=True)
        try:
            rows = pipe.execute() if card_ids else []
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read profiles: {exc}") from exc
        out = {}
        step = 2 if with_seen else 1
        for i, c in enumerate(card_ids):
            h = rows[step * i]
            if h:
                out[c] = decode_profile(c, h, rows[step * i + 1] if with_seen else ())
        return out

    def segments(self, card_id: str) -> dict[str, str]:
        """The card's segments as ``segments run`` stored them (empty when never run)."""
        try:
            values = self._r.hmget(profile_key(card_id), list(SEGMENT_FIELDS.values()))
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read segments: {exc}") from exc
        return {name: str(v) for name, v in zip(SEGMENT_FIELDS, values, strict=True) if v is not None}

    def card_ids(self) -> list[str]:
        """Every card with a profile hash (SCAN, never KEYS)."""
        out = []
        try:
            for key in self._r.scan_iter(match="rf:{*}:p", count=1000):
                out.append(str(key)[4:-3])
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot list profiles: {exc}") from exc
        return sorted(out)

    def totals(self) -> tuple[int, int, int]:
        """(profiles with a purchase, visits, spend cents) over every profile — for the demo summary and checks."""
        cards = self.card_ids()
        pipe = self._r.pipeline(transaction=False)
        for c in cards:
            pipe.hmget(profile_key(c), "v", "s")
        try:
            rows = pipe.execute() if cards else []
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read profiles: {exc}") from exc
        # A card known only from a consent change has a hash but no purchase yet.
        visits = [int(v or 0) for v, _ in rows]
        spend = sum(int(s or 0) for _, s in rows)
        return sum(1 for v in visits if v), sum(visits), spend

    def memory_bytes(self, card_id: str) -> int:
        """Bytes Redis uses for the card's keys (MEMORY USAGE, all samples)."""
        try:
            total = 0
            for key in (profile_key(card_id), seen_key(card_id)):
                used = self._r.memory_usage(key, samples=0)
                total += int(used or 0)
            return total
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot measure profile memory: {exc}") from exc
