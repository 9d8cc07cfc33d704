"""The Redis profile store: one class, one apply path for the live agent and the profile rebuild.

:meth:`RedisProfileStore.apply_events` queues purchases (``profile_apply.lua``) and consent changes
(``profile_consent.lua``) in the order given into one pipelined round trip; the agent's batch calls
(:meth:`~RedisProfileStore.apply_all`, :meth:`~RedisProfileStore.apply_consents`) and the rebuild
(:func:`receiptflow.jobs.profile_rebuild.apply_events`) all go through it, so a profile rebuilt from
the warehouse is written exactly as the live path writes it. Each script checks and records the
receipt id and updates the profile atomically, so a receipt delivered many times counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from ..card_hash import erased_hash
from ..config import Settings
from ..errors import ProfileStoreError
from ..models import ConsentChange, Purchase
from ..redis_auth import RedisRole, connection_url
from ..secrets import erasure_salt
from .profile_keys import ERASED_KEY, SEGMENT_FIELDS, decode_profile, profile_key, seen_key
from .profile_rules import Rules, default_rules, delta, load_rules
from .profile_scripts import APPLY_LUA, CONSENT_LUA, consent_args, delta_args
from .profiles import Outcome, Profile


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

    def record_erased(self, hashes: Iterable[str]) -> int:
        """Add salted hashes to the erased-cards record (only ever added: the stricter direction)."""
        found = sorted(hashes)
        if not found:
            return 0
        try:
            return int(self._r.sadd(ERASED_KEY, *found))
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot record the erased cards in the profile store: {exc}") from exc

    def apply_events(
        self,
        events: Sequence[Purchase | ConsentChange],
        reset: Sequence[str] = (),
        *,
        what: str = "profile batch",
    ) -> tuple[ApplyResult, int]:
        """Apply purchases and consent changes in the order given, in one pipelined round trip.

        The one write path: the live agent's batches and the profile rebuild both come here. ``reset``
        cards' keys are deleted first, in the same pipeline. Purchases without a card are left out.
        Returns the purchases' outcomes and how many consent changes changed a profile; a Redis
        failure is a :class:`~receiptflow.errors.ProfileStoreError` "``what`` failed: ...".
        """
        pipe = self._r.pipeline(transaction=False)
        for card in reset:
            pipe.delete(profile_key(card), seen_key(card))
        is_purchase: list[bool] = []
        for e in events:
            if e.card_id is None:
                continue
            erased = self.erased_hash(e.card_id)
            if isinstance(e, ConsentChange):
                self._consent(keys=[profile_key(e.card_id), ERASED_KEY], args=consent_args(e, erased), client=pipe)
                is_purchase.append(False)
            else:
                args = delta_args(delta(e, self.rules), self.rules, erased)
                self._apply(keys=[profile_key(e.card_id), seen_key(e.card_id), ERASED_KEY], args=args, client=pipe)
                is_purchase.append(True)
        if not is_purchase and not reset:
            return ApplyResult(), 0
        try:
            results = [int(x) for x in pipe.execute()[len(reset) :]]
        except redis.RedisError as exc:
            raise ProfileStoreError(f"{what} failed: {exc}") from exc
        bought = [r for r, p in zip(results, is_purchase, strict=True) if p]
        consents = sum(1 for r, p in zip(results, is_purchase, strict=True) if not p and r == 1)
        outcome = ApplyResult(
            applied=bought.count(Outcome.APPLIED),
            duplicates=bought.count(Outcome.DUPLICATE),
            late=bought.count(Outcome.LATE),
            erased=bought.count(Outcome.ERASED),
        )
        return outcome, consents

    def apply_all(self, purchases: Sequence[Purchase]) -> ApplyResult:
        """Apply a batch in one pipelined round trip; counts what each purchase did."""
        return self.apply_events(purchases)[0]

    def apply(self, purchases: Sequence[Purchase]) -> int:
        """Apply a batch; returns how many were new (the rest were duplicates, late or erased)."""
        return self.apply_all(purchases).applied

    def apply_consents(self, changes: Sequence[ConsentChange]) -> int:
        """Record consent changes (one round trip); returns how many changed a profile."""
        return self.apply_events(changes, what="consent batch")[1]

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
