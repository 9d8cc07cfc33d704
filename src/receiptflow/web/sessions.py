"""The page's sessions, kept server side in Redis: the cookie holds only a random session id.

A session is one Redis string ``rf:web:s:<sha256 of the id>`` holding its record (when it began and
what the routes keep: role, subject, CSRF token, the few values a page shows once), with a TTL: the
idle limit, cut to what is left of the absolute limit counted from sign-in
(:func:`seconds_left`). Redis drops a session nobody uses; deleting the key ends it at once. The
key is the id's hash, so whoever lists keys finds no id to present as a cookie.

A customer's session is also listed in its card's set ``rf:web:c:<keyed hash of the card>``, so
erasure ends every session of the card at once (:meth:`SessionStore.revoke_card`), on every
browser. The hash is keyed with the install's web key (HMAC-SHA-256): neither key names the card,
and without the key the list cannot be walked back to a card id. The list expires with the newest
session it can hold.

The ``web-sessions`` Redis user reaches these two kinds of key only (``deploy/redis/users.acl``).

Written here rather than taken from a library: Starlette's own session middleware is the signed
cookie this replaces, and the server-side session packages for Starlette (``starsessions``,
``starlette-session``) offer one lifetime, fixed or rolling, not an idle and an absolute limit
together, no list of a user's sessions to end together, and none guards against an in-flight
request writing back a session that was just ended; each would still need all of that around it.
What is needed fits in two small modules (this and :mod:`.session_middleware`).

A session that was ended is never written back: an existing session is only ever updated while its
key exists (``SET ... XX``, ``EXPIRE``), a new one only created under a new id (``SET ... NX``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from ..config import Settings
from ..errors import ProfileStoreError
from ..processors.profiles.store import RedisClient, redis_client
from ..redis_auth import RedisRole, connection_url

SESSION_PREFIX = "rf:web:s:"
CARD_PREFIX = "rf:web:c:"
_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_INDEX_CONTEXT = b"receiptflow-web-session-index"


# --- pure ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Limits:
    """How long a session lives: unused (``idle``), and at most after sign-in (``absolute``), in seconds."""

    idle: int
    absolute: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.web.session_idle_minutes * 60, settings.web.session_hours * 3600)


@dataclass(frozen=True, slots=True)
class Record:
    """One session: when it began (epoch seconds) and what the routes keep in it."""

    created: float
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def card(self) -> str | None:
        """The card of a customer's session (the one its card's list names), else None."""
        subject = self.data.get("subject")
        return subject if self.data.get("role") == "customer" and isinstance(subject, str) else None


def new_session_id() -> str:
    """A new random session id (256 bits), as the cookie carries it."""
    return secrets.token_urlsafe(32)


def well_formed(session_id: str | None) -> bool:
    """Whether ``session_id`` looks like an id this page makes (anything else is not looked up)."""
    return session_id is not None and _ID.fullmatch(session_id) is not None


def session_key(session_id: str) -> str:
    """The Redis key of a session: named by the id's SHA-256, never the id itself."""
    return SESSION_PREFIX + hashlib.sha256(session_id.encode("ascii")).hexdigest()


def card_key(index_key: bytes, card: str) -> str:
    """The Redis key of ``card``'s list of sessions: a keyed hash, never the card id."""
    return CARD_PREFIX + hmac.new(index_key, card.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def index_key_of(web_key: bytes) -> bytes:
    """The key of the card lists' hashes, derived from the install's web key (its own purpose, its own key)."""
    return hmac.new(web_key, _INDEX_CONTEXT, hashlib.sha256).digest()


def seconds_left(limits: Limits, created: float, now: float) -> int:
    """The TTL a session gets now: the idle limit, cut to what is left of the absolute one (<= 0: over)."""
    return min(limits.idle, math.floor(created + limits.absolute - now))


def encode(record: Record) -> str:
    return json.dumps({"created": record.created, "data": dict(record.data)}, separators=(",", ":"))


def decode(text: str | None) -> Record | None:
    """The record stored as ``text``; None for nothing or anything that is not a record."""
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        return None
    created = doc.get("created")
    if isinstance(created, bool) or not isinstance(created, int | float):
        return None
    return Record(float(created), doc["data"])


# --- Redis -----------------------------------------------------------------------------------------
class SessionStore:
    """The sessions of one install in Redis (as the ``web-sessions`` user)."""

    def __init__(
        self, client: RedisClient, index_key: bytes, limits: Limits, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.index_key = index_key
        self.limits = limits
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, web_key: bytes) -> SessionStore:
        url = connection_url(settings, RedisRole.WEB_SESSIONS)
        return cls(
            redis_client(url, cluster=settings.redis.cluster), index_key_of(web_key), Limits.from_settings(settings)
        )

    def check(self) -> None:
        """Whether the store answers as its user (``web serve`` asks before it serves)."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ProfileStoreError(f"the page's session store does not answer as its Redis user: {exc}") from exc

    def _fail(self, what: str, exc: redis.RedisError) -> ProfileStoreError:
        return ProfileStoreError(f"cannot {what} the session: {exc}; try again in a moment")

    def load(self, session_id: str) -> Record | None:
        """The live session ``session_id``; None when there is none (ended, expired, never made)."""
        try:
            record = decode(self.client.get(session_key(session_id)))  # type: ignore[arg-type]
        except redis.RedisError as exc:
            raise self._fail("read", exc) from exc
        if record is not None and seconds_left(self.limits, record.created, self.clock()) <= 0:
            self.delete(session_id, record)  # past the absolute limit: Redis's TTL keeps it no longer either
            return None
        return record

    def create(self, data: Mapping[str, Any]) -> str:
        """A new session holding ``data`` (listed under its card when it is a customer's); its id."""
        session_id = new_session_id()
        record = Record(self.clock(), dict(data))
        key = session_key(session_id)
        try:
            if record.card is not None:
                # Listed before it exists: a session is never alive without its card's list naming it.
                lst = card_key(self.index_key, record.card)
                pipe = self.client.pipeline(transaction=False)
                pipe.sadd(lst, key.removeprefix(SESSION_PREFIX))
                pipe.expire(lst, self.limits.absolute + 60)
                pipe.execute()
            self.client.set(key, encode(record), ex=self.limits.idle, nx=True)
        except redis.RedisError as exc:
            raise self._fail("start", exc) from exc
        return session_id

    def keep(self, session_id: str, record: Record, changed: bool) -> bool:
        """Extend a used session by the idle limit (and store ``record`` if ``changed``); False when it
        has ended meanwhile (it is not brought back)."""
        ttl = seconds_left(self.limits, record.created, self.clock())
        if ttl <= 0:
            self.delete(session_id, record)
            return False
        key = session_key(session_id)
        try:
            if changed:
                return bool(self.client.set(key, encode(record), ex=ttl, xx=True))
            return bool(self.client.expire(key, ttl))
        except redis.RedisError as exc:
            raise self._fail("keep", exc) from exc

    def delete(self, session_id: str, record: Record | None) -> None:
        """End one session now."""
        key = session_key(session_id)
        try:
            self.client.delete(key)
            if record is not None and record.card is not None:
                self.client.srem(card_key(self.index_key, record.card), key.removeprefix(SESSION_PREFIX))
        except redis.RedisError as exc:
            raise self._fail("end", exc) from exc

    def revoke_card(self, card: str) -> int:
        """End every session of ``card`` now; how many were alive."""
        lst = card_key(self.index_key, card)
        try:
            members = [str(m) for m in self.client.smembers(lst)]
            ended = sum(int(self.client.delete(SESSION_PREFIX + m)) for m in members)
            self.client.delete(lst)
        except redis.RedisError as exc:
            raise self._fail("end", exc) from exc
        return ended
