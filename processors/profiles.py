"""Customer profiles: the pure fold ``update(profile, purchase) -> profile`` and its Redis form.

The fold is the definition of what a profile is; :class:`RedisProfileStore` applies exactly the same
increments in Redis. Each purchase is applied atomically by a Lua script that first records the
receipt id in the card's ``seen`` set and does nothing when it was already there, so a receipt
delivered many times (at-least-once upstream, a crash between write and commit, a replay) counts
once. A batch of purchases is one pipelined round trip.

Keys (the ``{card}`` hash tag keeps one card's keys on one Redis Cluster slot):
``rf:{card}:p``    hash: visits, spend_cents, first_ms, last_ms, g:<product group> amount cents
``rf:{card}:seen`` sorted set: receipt id scored by event time in ms
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import redis

from ..errors import ProfileStoreError
from ..models import Purchase

_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Profile:
    card_id: str
    visits: int = 0
    spend_cents: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    groups: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    receipts: frozenset[str] = frozenset()


def event_ms(p: Purchase) -> int:
    return int(p.event_time.timestamp() * 1000)


def update(profile: Profile, purchase: Purchase) -> Profile:
    """Fold one purchase into a profile; a receipt already folded in changes nothing."""
    if purchase.card_id != profile.card_id:
        raise ValueError(f"purchase of card {purchase.card_id!r} folded into profile {profile.card_id!r}")
    if purchase.receipt_id in profile.receipts:
        return profile
    ms = event_ms(purchase)
    groups = dict(profile.groups)
    for g in purchase.groups:
        groups[g.product_group] = groups.get(g.product_group, 0) + g.amount_cents
    return Profile(
        card_id=profile.card_id,
        visits=profile.visits + 1,
        spend_cents=profile.spend_cents + purchase.total_cents,
        first_ms=ms if profile.first_ms is None else min(profile.first_ms, ms),
        last_ms=ms if profile.last_ms is None else max(profile.last_ms, ms),
        groups=MappingProxyType(groups),
        receipts=profile.receipts | {purchase.receipt_id},
    )


def fold(purchases: Iterable[Purchase]) -> dict[str, Profile]:
    """All profiles from a sequence of purchases (anonymous ones are skipped)."""
    out: dict[str, Profile] = {}
    for p in purchases:
        if p.card_id is None:
            continue
        out[p.card_id] = update(out.get(p.card_id) or Profile(p.card_id), p)
    return out


# KEYS: profile hash, seen zset. ARGV: receipt id, event ms, spend cents, then group/amount pairs.
_APPLY_LUA = """
if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 0 then
  return 0
end
local ms = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'visits', 1)
redis.call('HINCRBY', KEYS[1], 'spend_cents', ARGV[3])
local first = redis.call('HGET', KEYS[1], 'first_ms')
if (not first) or tonumber(first) > ms then redis.call('HSET', KEYS[1], 'first_ms', ARGV[2]) end
local last = redis.call('HGET', KEYS[1], 'last_ms')
if (not last) or tonumber(last) < ms then redis.call('HSET', KEYS[1], 'last_ms', ARGV[2]) end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], 'g:' .. ARGV[i], ARGV[i + 1])
end
return 1
"""


def profile_key(card_id: str) -> str:
    return f"rf:{{{card_id}}}:p"


def seen_key(card_id: str) -> str:
    return f"rf:{{{card_id}}}:seen"


class RedisProfileStore:
    """Applies purchases to profiles in Redis, once per receipt id, one round trip per batch."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        try:
            self._apply = client.register_script(_APPLY_LUA)
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot register profile script: {exc}") from exc

    @classmethod
    def from_url(cls, url: str) -> RedisProfileStore:
        return cls(redis.Redis.from_url(url, decode_responses=True))

    def apply(self, purchases: Sequence[Purchase]) -> int:
        """Apply a batch; returns how many were new (the rest were already applied)."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for p in purchases:
            if p.card_id is None:
                continue
            args: list[Any] = [p.receipt_id, event_ms(p), p.total_cents]
            for g in p.groups:
                args += [g.product_group, g.amount_cents]
            self._apply(keys=[profile_key(p.card_id), seen_key(p.card_id)], args=args, client=pipe)
            n += 1
        if not n:
            return 0
        try:
            results = pipe.execute()
        except redis.RedisError as exc:
            raise ProfileStoreError(f"profile batch failed: {exc}") from exc
        return sum(int(x) for x in results)

    def get(self, card_id: str) -> Profile | None:
        try:
            h: dict[str, str] = self._r.hgetall(profile_key(card_id))  # type: ignore[assignment]
            receipts: list[str] = self._r.zrange(seen_key(card_id), 0, -1)  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read profile: {exc}") from exc
        if not h:
            return None
        return Profile(
            card_id=card_id,
            visits=int(h.get("visits", 0)),
            spend_cents=int(h.get("spend_cents", 0)),
            first_ms=int(h["first_ms"]) if "first_ms" in h else None,
            last_ms=int(h["last_ms"]) if "last_ms" in h else None,
            groups=MappingProxyType({k[2:]: int(v) for k, v in h.items() if k.startswith("g:")}),
            receipts=frozenset(receipts),
        )

    def card_ids(self) -> list[str]:
        """Every card with a profile (SCAN, never KEYS)."""
        out = []
        try:
            for key in self._r.scan_iter(match="rf:{*}:p", count=1000):
                out.append(str(key)[4:-3])
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot list profiles: {exc}") from exc
        return sorted(out)

    def totals(self) -> tuple[int, int, int]:
        """(profiles, visits, spend cents) over every profile — for the demo summary and checks."""
        cards = self.card_ids()
        pipe = self._r.pipeline(transaction=False)
        for c in cards:
            pipe.hmget(profile_key(c), "visits", "spend_cents")
        try:
            rows = pipe.execute() if cards else []
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read profiles: {exc}") from exc
        visits = sum(int(v or 0) for v, _ in rows)
        spend = sum(int(s or 0) for _, s in rows)
        return len(cards), visits, spend
