"""The marketing projections in Redis: the writer keeps them with the profiles, the marketing reader reads them.

**Writing** (:class:`ProjectionWriter`, used by :meth:`.store.RedisProfileStore.apply_events`, so the
faust agent, ``profiles rebuild``, ``profiles project`` and ``segments run`` all write them). A card's
projection ``rf:m:{mhash}`` is named by its marketing hash, so on a Redis Cluster it sits in another
slot than the card's profile: the profile scripts cannot write it in the same atomic step. Each batch
therefore runs three pipelined round trips, guarded by a token in ``rf:mg:{mhash}`` (the projection's
slot, outside the marketing reader's keys):

1. with the profile scripts: each card's token is taken (``projection_guard.lua`` "keep"); a card
   with a consent change (or reset by a rebuild) gets a new token instead, and its projection loses
   its product data at once ("strip": stricter first, before the change is even recorded);
2. after the scripts: the consent-changed cards are stripped again with another new token (so a
   projection another writer made from a profile read before the change cannot outlive it), and
   every card's profile hash is read;
3. each card's projection is replaced (``projection_write.lua``) from that read, only while its guard
   still holds the token: a consent change, reset or erasure in between changed or deleted the guard,
   and the older projection is not written. A card without a profile (erased, never seen) has its
   projection and guard deleted.

So a withdrawal leaves no product data in the projection once it is processed, whatever another
writer does at the same time; activity figures lag by at most one concurrent batch and are made
current by the next change or by ``profiles project`` (which the daily schedule runs: the windows
and affinities are computed for a day, ``at``).

**Reading** (:class:`MarketingReader`): the marketing reader's login and the marketing key, nothing else.
It never computes the erasure hash, so a marketing process runs without the erasure salt.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import IntEnum
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from receiptflow.card_hash import marketing_hash
from receiptflow.config import Settings
from receiptflow.errors import ProfileStoreError
from receiptflow.redis_auth import RedisRole, connection_url
from receiptflow.secrets import marketing_key

from .fold import Outcome
from .keys import decode_profile
from .marketing import guard_key, marketing_doc, project, projection_key, segments_of

if TYPE_CHECKING:
    from .store import RedisProfileStore


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text(encoding="utf-8")


GUARD_LUA = _script("projection_guard.lua")
WRITE_LUA = _script("projection_write.lua")
READ_LUA = _script("projection_read.lua")


class GuardKey(IntEnum):
    """KEYS positions of ``projection_guard.lua`` and ``projection_write.lua``."""

    PROJECTION = 1
    GUARD = 2


class GuardArg(IntEnum):
    """ARGV positions of ``projection_guard.lua``."""

    MODE = 1
    TOKEN = 2


class WriteArg(IntEnum):
    """ARGV positions of ``projection_write.lua``."""

    TOKEN = 1
    FIELDS = 2  # a JSON array [field, value, ...]; empty: delete


class ReadKey(IntEnum):
    """KEYS positions of ``projection_read.lua``."""

    PROFILE = 1


def _hash(reply: Any) -> dict[str, str]:
    """The profile hash from ``projection_read.lua``'s reply (cjson writes an empty array as ``{}``)."""
    flat = json.loads(reply) if reply else []
    return dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else {}


# Outcomes of a purchase script that leave the profile as it was.
_UNCHANGED = frozenset({Outcome.DUPLICATE, Outcome.LATE})


def _token() -> str:
    return secrets.token_hex(8)


class ProjectionWriter:
    """Keeps the marketing projections of the cards a batch touched (see the module docstring)."""

    def __init__(self, store: RedisProfileStore, key: bytes) -> None:
        if not key:
            raise ValueError("ProjectionWriter needs the install's marketing key")
        self._store = store
        self._key = key
        self._cache: dict[str, str] = {}

    def marketing_hash(self, card_id: str) -> str:
        found = self._cache.get(card_id)
        if found is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            found = self._cache[card_id] = marketing_hash(card_id, self._key)
        return found

    def keys(self, card_id: str) -> tuple[str, str]:
        """The card's projection and its guard."""
        h = self.marketing_hash(card_id)
        return projection_key(h), guard_key(h)

    def guards(self, cards: Sequence[str], strip: frozenset[str]) -> list[tuple[Any, ...]]:
        """Step 1's commands, one per card of ``cards`` (their replies are the tokens)."""
        return [
            self._store.script_call(GUARD_LUA, self.keys(c), ["strip" if c in strip else "keep", _token()])
            for c in cards
        ]

    def after_batch(
        self,
        cards: Sequence[str],
        tokens: Sequence[str],
        strip: frozenset[str],
        scripted: Sequence[str],
        outcomes: Sequence[int],
        what: str,
    ) -> int:
        """Steps 2 and 3 after a batch whose scripts ran for the cards ``scripted`` with ``outcomes``.

        A card whose purchases were all duplicates or late changed nothing (its projection stands); every
        other card of ``cards`` (tokens from step 1) is followed."""
        changed = {c for c, r in zip(scripted, outcomes, strict=True) if r not in _UNCHANGED}
        unchanged = set(scripted) - changed - strip
        follow = [(c, t) for c, t in zip(cards, tokens, strict=True) if c not in unchanged]
        return self.follow([c for c, _ in follow], [t for _, t in follow], strip, what)

    def follow(self, cards: Sequence[str], tokens: Sequence[str], strip: frozenset[str], what: str) -> int:
        """Steps 2 and 3 for ``cards`` (tokens from step 1); returns how many projections were written."""
        if not cards:
            return 0
        now = datetime.now(UTC)
        tokens = list(tokens)
        again = [i for i, c in enumerate(cards) if c in strip]
        commands = [self._store.script_call(GUARD_LUA, self.keys(cards[i]), ["strip", _token()]) for i in again]
        commands += [self._store.script_call(READ_LUA, (self._store.keys_for(c).profile,), ()) for c in cards]
        replies = self._store.run(commands, f"{what} (marketing projections)")
        for i, token in zip(again, replies[: len(again)], strict=True):
            tokens[i] = str(token)
        writes = []
        for card, token, reply in zip(cards, tokens, replies[len(again) :], strict=True):
            h = _hash(reply)
            fields = project(decode_profile(card, h, ()), segments_of(h), now) if h else None
            writes.append(self.write_call(card, token, fields))
        return sum(int(r) for r in self._store.run(writes, f"{what} (marketing projections)"))

    def write_call(self, card_id: str, token: str, fields: Mapping[str, str] | None) -> tuple[Any, ...]:
        """The command that replaces the card's projection with ``fields`` (None: deletes it) under ``token``."""
        packed = "" if fields is None else json.dumps([x for kv in fields.items() for x in kv])
        return self._store.script_call(WRITE_LUA, self.keys(card_id), [token, packed])

    def refresh(self, cards: Sequence[str], what: str = "refreshing marketing projections") -> int:
        """Rewrite the projections of ``cards`` from their profiles as of now (no consent change)."""
        unique = list(dict.fromkeys(cards))
        tokens = [str(t) for t in self._store.run(self.guards(unique, frozenset()), what)]
        return self.follow(unique, tokens, frozenset(), what)


class MarketingReader:
    """The marketing view of a card, read from its projection with the marketing reader's login."""

    def __init__(self, client: Any, key: bytes) -> None:
        if not key:
            raise ValueError("MarketingReader needs the install's marketing key")
        self._r = client
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> MarketingReader:
        """The reader of ``settings``' install: the marketing role's login and the marketing key only."""
        key = marketing_key(settings)  # ConfigError on a production install not given it
        url = connection_url(settings, RedisRole.MARKETING)
        try:
            if settings.redis.cluster:
                return cls(RedisCluster.from_url(url, decode_responses=True), key)
            return cls(redis.Redis.from_url(url, decode_responses=True), key)
        except (redis.RedisError, RedisClusterException) as exc:  # a cluster client asks for the slot map
            raise ProfileStoreError(f"cannot connect to the Redis Cluster: {exc}") from exc

    def marketing_hash(self, card_id: str) -> str:
        return marketing_hash(card_id, self._key)

    def fields(self, card_id: str) -> Mapping[str, str]:
        """The card's projection as stored (empty when it has none)."""
        try:
            return dict(self._r.hgetall(projection_key(self.marketing_hash(card_id))))
        except (redis.RedisError, RedisClusterException) as exc:
            raise ProfileStoreError(f"cannot read the marketing projection: {exc}") from exc

    def view(self, card_id: str) -> dict[str, Any] | None:
        """The marketing view (``render(profile, "marketing")`` on the projection's day ``at``); None without one."""
        fields = self.fields(card_id)
        return marketing_doc(card_id, fields) if fields else None

    def as_of(self, card_id: str) -> str | None:
        """The day the card's projection was computed for (ISO), None without one."""
        return self.fields(card_id).get("at")
