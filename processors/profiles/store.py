"""The Redis profile store: one class, one apply path for the live agent and the profile rebuild.

:meth:`RedisProfileStore.apply_events` queues purchases (``profile_apply.lua``) and consent changes
(``profile_consent.lua``) in the order given into one pipelined round trip; the agent's batch calls
(:meth:`~RedisProfileStore.apply_all`, :meth:`~RedisProfileStore.apply_consents`) and the rebuild
(:func:`receiptflow.jobs.profile_rebuild.apply_events`) all go through it, so a profile rebuilt from
the warehouse is written exactly as the live path writes it. Each script checks the card's erased
marker, checks and records the receipt id and updates the profile atomically, so a receipt delivered
many times counts once.

A card's keys are named by its salted hash (:meth:`RedisProfileStore.keys_for`, see
:mod:`.profile_keys`), so each script touches one slot and the same code runs on one Redis or on a
Redis Cluster (``RECEIPTFLOW_REDIS_CLUSTER``: the client is then a :class:`redis.cluster.RedisCluster`
and a batch is one pipelined round trip per primary). Scripts are sent as ``EVALSHA``; a server
that does not know one yet (first use, a new or failed-over primary) answers ``NOSCRIPT``, and
only those calls are sent again after the scripts are loaded on every primary
(:meth:`RedisProfileStore._run`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisClusterException

from receiptflow.card_hash import CardHasher
from receiptflow.config import Settings
from receiptflow.consent_codec import WrittenConsent, as_written
from receiptflow.errors import ProfileStoreError
from receiptflow.models import ConsentChange, Purchase
from receiptflow.redis_auth import RedisRole, connection_url
from receiptflow.secrets import erasure_salt, marketing_key

from .fold import Outcome, Profile
from .keys import ERASED_KEY, PROFILE_PATTERN, SEGMENT_FIELDS, CardKeys, card_keys, decode_profile
from .projections import ProjectionWriter
from .rules import Rules, default_rules, delta, load_rules
from .scripts import APPLY_LUA, CONSENT_LUA, consent_args, delta_args

# One Redis, or a Redis Cluster: both take the same commands here (every multi-key command names
# keys of one card, so of one slot).
RedisClient = redis.Redis | RedisCluster

# What a failing Redis raises: a cluster client's own errors (no node answers, no slot map) are
# not RedisErrors.
_REDIS_ERRORS = (redis.RedisError, RedisClusterException)

# Keys per pipelined round trip when walking every profile (totals), and erased cards per round trip
# when recording them: bounded memory on a large store.
_SCAN_BATCH = 1000
_ERASED_BATCH = 5000


def redis_client(url: str, *, cluster: bool = False) -> RedisClient:
    """A client for ``url``: a :class:`RedisCluster` (which finds every primary from this one) when
    ``cluster``, else a single-server client."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    erased: int = 0


class RedisProfileStore:
    """Applies purchases and consent changes to profiles in Redis: once per receipt, one round trip per batch."""

    def __init__(
        self,
        client: RedisClient,
        rules: Rules | None = None,
        *,
        erasure_salt: bytes,
        marketing_key: bytes | None = None,
    ) -> None:
        if not erasure_salt:
            raise ValueError("RedisProfileStore needs the install's erasure salt")
        self._r = client
        self.rules = rules or default_rules()
        self.salt = erasure_salt  # the install's (receiptflow.secrets): never one written in the source
        self._hasher = CardHasher(erasure_salt)
        # Only the SHA is used (Script computes it with the client's encoding): calls are queued as
        # plain EVALSHA, since a cluster pipeline refuses redis-py's script objects and a plain one
        # would ask SCRIPT EXISTS first on every batch; _run loads the scripts when a server lacks one.
        self._apply = Script(client, APPLY_LUA)
        self._consent = Script(client, CONSENT_LUA)
        self._scripts: dict[str, Script] = {}
        # The marketing projections (.projections), kept by every write when the install's marketing
        # key is given (from_settings gives it to the writer and support roles).
        self.projections = None if marketing_key is None else ProjectionWriter(self, marketing_key)

    @classmethod
    def from_url(
        cls,
        url: str,
        rules: Rules | None = None,
        *,
        erasure_salt: bytes,
        cluster: bool = False,
        marketing_key: bytes | None = None,
    ) -> RedisProfileStore:
        return cls(redis_client(url, cluster=cluster), rules, erasure_salt=erasure_salt, marketing_key=marketing_key)

    @classmethod
    def from_settings(cls, settings: Settings, role: RedisRole = RedisRole.WRITER) -> RedisProfileStore:
        """The store as ``role`` sees it (its Redis user: see :mod:`receiptflow.redis_auth`); the writer
        and support keep (and erase) the marketing projections, so they hold the marketing key."""
        rules = load_rules(settings.profiles.points_file, settings.profiles.dedup_days)
        keeps_projections = role in (RedisRole.WRITER, RedisRole.SUPPORT)
        try:
            return cls.from_url(
                connection_url(settings, role),
                rules,
                erasure_salt=erasure_salt(settings),
                cluster=settings.redis.cluster,
                marketing_key=marketing_key(settings) if keeps_projections else None,
            )
        except _REDIS_ERRORS as exc:  # a cluster client asks for the slot map when it is built
            raise ProfileStoreError(f"cannot connect to the Redis Cluster: {exc}") from exc

    @property
    def client(self) -> RedisClient:
        return self._r

    @property
    def is_cluster(self) -> bool:
        return isinstance(self._r, RedisCluster)

    def erased_hash(self, card_id: str) -> str:
        """The card's salted hash: the name of its keys and what the erased-cards records keep."""
        return self._hasher(card_id)

    def keys_for(self, card_id: str) -> CardKeys:
        """The card's Redis keys (named by its salted hash, all in one slot)."""
        return card_keys(self._hasher(card_id))

    # --- pipelines and scripts -----------------------------------------------------------------
    def run_script(self, text: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]], what: str) -> list[Any]:
        """Run the script ``text`` once per (keys, args) of ``calls`` in one pipelined round trip (a
        script of another job: ``segments run``); its keys must be one card's (:meth:`keys_for`)."""
        return self._run([self.script_call(text, keys, args) for keys, args in calls], what)

    def script_call(self, text: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command of the script ``text`` (loaded by :meth:`run` when a server lacks it);
        its keys must share one slot."""
        script = self._scripts.get(text)
        if script is None:
            script = self._scripts[text] = Script(self._r, text)
        return _evalsha(script, keys, args)

    def run(self, commands: Sequence[tuple[Any, ...]], what: str) -> list[Any]:
        """Send ``commands`` in one pipelined round trip (see :meth:`_run`)."""
        return self._run(commands, what)

    def _load_scripts(self) -> None:
        # SCRIPT LOAD goes to every primary on a cluster client. Redis 7 does not replicate scripts,
        # so a replica promoted by a failover starts without them: NOSCRIPT brings us back here.
        for script in (self._apply, self._consent, *self._scripts.values()):
            self._r.script_load(script.script)

    def _run(self, commands: Sequence[tuple[Any, ...]], what: str) -> list[Any]:
        """Send ``commands`` (each the arguments of one Redis command) in one pipelined round trip
        (one per primary on a cluster) and return their replies in order.

        Calls a server answered ``NOSCRIPT`` are sent once more after the scripts are loaded, alone:
        the others were applied already, and sending them again would count them as duplicates.
        Any other error is a :class:`ProfileStoreError` "``what`` failed: ...".
        """
        if not commands:
            return []
        try:
            results = self._pipeline(commands)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:
                self._load_scripts()
                for i, r in zip(missing, self._pipeline([commands[i] for i in missing]), strict=True):
                    results[i] = r
        except _REDIS_ERRORS as exc:
            raise ProfileStoreError(f"{what} failed: {exc}") from exc
        error = next((r for r in results if isinstance(r, Exception)), None)
        if error is not None:
            raise ProfileStoreError(f"{what} failed: {error}") from error
        return results

    def _pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        pipe = self._r.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        return list(pipe.execute(raise_on_error=False))

    # --- writes ----------------------------------------------------------------------------------
    def record_erased(self, erased: Mapping[str, datetime] | Iterable[str]) -> int:
        """Record salted hashes as erased (only ever added: the stricter direction).

        Each hash gets its marker ``rf:{hash}:x`` (the erasure time in ms, now when not given; an
        existing marker keeps its time), which the scripts check in the card's slot, and joins the
        audit list ``rf:erased``. Needs the hash alone, never the card id. Returns how many markers
        were new to this store.
        """
        times = erased if isinstance(erased, Mapping) else dict.fromkeys(erased)
        now = int(time.time() * 1000)
        found = sorted(times)
        added = 0
        for start in range(0, len(found), _ERASED_BATCH):  # the whole topic, on a new store
            commands: list[tuple[Any, ...]] = []
            for subject in found[start : start + _ERASED_BATCH]:
                at = times[subject]
                ms = now if at is None else int(at.timestamp() * 1000)
                commands += [("SETNX", card_keys(subject).erased, ms), ("SADD", ERASED_KEY, subject)]
            results = self._run(commands, "recording the erased cards in the profile store")
            added += sum(int(r) for r in results[::2])
        return added

    def apply_events(
        self,
        events: Sequence[Purchase | ConsentChange | WrittenConsent],
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
        commands: list[tuple[Any, ...]] = [("DEL", *self.keys_for(card).data) for card in reset]
        applied: list[tuple[Any, ...]] = []
        is_purchase: list[bool] = []
        for e in events:
            if e.card_id is None:
                continue
            keys = self.keys_for(e.card_id)
            if isinstance(e, ConsentChange | WrittenConsent):
                # A bare change (no append time known) is ordered by its event time.
                applied.append(_evalsha(self._consent, (keys.profile, keys.erased), consent_args(as_written(e))))
                is_purchase.append(False)
            else:
                args = delta_args(delta(e, self.rules), self.rules)
                applied.append(_evalsha(self._apply, (keys.profile, keys.seen, keys.erased), args))
                is_purchase.append(True)
        if not is_purchase and not reset:
            return ApplyResult(), 0
        # The marketing projections' tokens go before the scripts (a consent change's strip: stricter first).
        cards = list(dict.fromkeys([*reset, *(e.card_id for e in events if e.card_id is not None)]))
        strip = frozenset([*reset, *(e.card_id for e in events if isinstance(e, ConsentChange | WrittenConsent))])
        guards = [] if self.projections is None else self.projections.guards(cards, strip)
        replies = self._run([*commands, *guards, *applied], what)
        results = [int(x) for x in replies[len(commands) + len(guards) :]]
        if self.projections is not None:
            tokens = [str(t) for t in replies[len(commands) : len(commands) + len(guards)]]
            self.projections.after_batch(cards, tokens, strip, _event_cards(events), results, what)
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

    def apply_consents(self, changes: Sequence[ConsentChange | WrittenConsent]) -> int:
        """Record consent changes (one round trip); returns how many changed a profile."""
        return self.apply_events(changes, what="consent batch")[1]

    # --- reads -----------------------------------------------------------------------------------
    def get(self, card_id: str, with_seen: bool = True) -> Profile | None:
        """The card's profile; ``with_seen=False`` reads only the profile hash (its ``seen`` is then
        empty), which is all a read-only role such as the marketing reader may read."""
        return self.get_many([card_id], with_seen=with_seen, what="cannot read profile").get(card_id)

    def get_many(
        self, card_ids: Sequence[str], *, with_seen: bool = True, what: str = "cannot read profiles"
    ) -> dict[str, Profile]:
        """Profiles of many cards in one round trip (cards without one are left out).

        ``with_seen=False`` leaves the dedup sets out (empty ``seen``): all a view needs, and all the
        marketing reader's Redis user may read. On a cluster the cards' keys sit on several primaries:
        the read is one pipelined round trip per primary, not one atomic snapshot (each card's own
        keys are read together).
        """
        commands: list[tuple[Any, ...]] = []
        for c in card_ids:
            keys = self.keys_for(c)
            commands.append(("HGETALL", keys.profile))
            if with_seen:
                commands.append(("ZRANGE", keys.seen, 0, -1, "WITHSCORES"))
        rows = self._read(commands, what)
        out = {}
        step = 2 if with_seen else 1
        for i, c in enumerate(card_ids):
            h = rows[step * i]
            if h:
                out[c] = decode_profile(c, h, _pairs(rows[step * i + 1]) if with_seen else ())
        return out

    def segments(self, card_id: str) -> dict[str, str]:
        """The card's segments as ``segments run`` stored them (empty when never run)."""
        try:
            values = self._r.hmget(self.keys_for(card_id).profile, list(SEGMENT_FIELDS.values()))
        except _REDIS_ERRORS as exc:
            raise ProfileStoreError(f"cannot read segments: {exc}") from exc
        return {name: str(v) for name, v in zip(SEGMENT_FIELDS, values, strict=True) if v is not None}

    def profile_keys(self) -> Iterator[str]:
        """Every profile hash's key (SCAN over every primary, never KEYS). Keys are named by salted
        hashes, so this gives no card id: what needs card ids takes them from the warehouse."""
        try:
            for key in self._r.scan_iter(match=PROFILE_PATTERN, count=1000):
                yield str(key)
        except _REDIS_ERRORS as exc:
            raise ProfileStoreError(f"cannot list profiles: {exc}") from exc

    def totals(self) -> tuple[int, int, int]:
        """(profiles with a purchase, visits, spend cents) over every profile — for the demo summary and checks."""
        profiles = visits = spend = 0
        batch: list[str] = []

        def add(keys: Sequence[str]) -> None:
            nonlocal profiles, visits, spend
            for v, s in self._read([("HMGET", k, "v", "s") for k in keys], "cannot read profiles"):
                # A card known only from a consent change has a hash but no purchase yet.
                profiles += 1 if int(v or 0) else 0
                visits += int(v or 0)
                spend += int(s or 0)

        for key in self.profile_keys():
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                add(batch)
                batch = []
        add(batch)
        return profiles, visits, spend

    def memory_bytes(self, card_id: str) -> int:
        """Bytes Redis uses for the card's keys (MEMORY USAGE, all samples; the erased marker too when set)."""
        keys = self.keys_for(card_id)
        try:
            return sum(int(self._r.memory_usage(k, samples=0) or 0) for k in (*keys.data, keys.erased))
        except _REDIS_ERRORS as exc:
            raise ProfileStoreError(f"cannot measure profile memory: {exc}") from exc

    def _read(self, commands: Sequence[tuple[Any, ...]], what: str) -> list[Any]:
        try:
            rows = self._pipeline(commands) if commands else []
        except _REDIS_ERRORS as exc:
            raise ProfileStoreError(f"{what}: {exc}") from exc
        error = next((r for r in rows if isinstance(r, Exception)), None)
        if error is not None:
            raise ProfileStoreError(f"{what}: {error}") from error
        return rows


def _event_cards(events: Sequence[Purchase | ConsentChange | WrittenConsent]) -> list[str]:
    """The card of each event with one, in order (the events the batch sent a script for)."""
    return [e.card_id for e in events if e.card_id is not None]


def _evalsha(script: Script, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def _pairs(reply: Any) -> list[tuple[str, float]]:
    """``ZRANGE ... WITHSCORES`` as (member, score) pairs, whether the client paired it or not."""
    if reply and not isinstance(reply[0], (list, tuple)):
        return [(str(reply[i]), float(reply[i + 1])) for i in range(0, len(reply), 2)]
    return [(str(m), float(score)) for m, score in reply]
