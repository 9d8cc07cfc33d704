"""The dead-letter vault: each card's data key in Redis, beside the card's profile keys.

``rf:{<card hash>}:k`` holds a card's dead-letter data key (32 random bytes, hex), in the slot of the
card's other keys (:mod:`receiptflow.processors.profiles.keys`: the card hash is its salted
:func:`~receiptflow.card_hash.erased_hash`). A dead-letter writer creates it on first need, through
:data:`WRITE_LUA`, which refuses when the card's erased marker ``rf:{<card hash>}:x`` exists: once a
card is erased no new key is made for it. The erasure deletes the key in the transaction that sets the
marker (``jobs.subject``), and with it every letter sealed under it becomes unreadable.

``rf:{dlq-install}:k`` is the install's dead-letter key: the letters of a card-bearing topic that name
no card (keyless bytes that do not decode) are sealed under it. No erasure deletes it.

Every dead-letter writer and ``dlq`` connect as the Redis role ``dlq-vault`` (deploy/redis/users.acl):
it reads and creates (``SETNX``) these keys and reads the erased markers, nothing else; it can neither
overwrite nor delete a key, nor read a profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException

from .config import Settings
from .dlq_seal import hex_key, new_data_key
from .errors import DeadLetterVaultError, SealError
from .redis_auth import RedisRole, connection_url

# Not hex, so never the hash of a card (32 hex characters).
INSTALL_SUBJECT = "dlq-install"

# KEYS: the data key, the card's erased marker; ARGV: a fresh key (hex), kept only if none exists.
WRITE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
redis.call('SETNX', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
"""
# KEYS as above: "erased" when the card is, else the key (nil when there is none).
READ_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 'erased' end
return redis.call('GET', KEYS[1])
"""
_ERASED = "erased"

_REDIS_ERRORS = (redis.RedisError, RedisClusterException)


def data_key_name(subject: str) -> str:
    """The Redis key holding the dead-letter data key of the card whose salted hash is ``subject``."""
    return f"rf:{{{subject}}}:k"


def _erased_marker(subject: str) -> str:
    # The same name as processors.profiles.keys.erased_marker_key (the core cannot import a wing).
    return f"rf:{{{subject}}}:x"


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the vault holds for a card: its key, or that the card is erased (key None)."""

    erased: bool
    key: bytes | None


class Vault(Protocol):
    """Where the data keys are (Redis; an in-memory one in unit tests of the pure parts around it)."""

    def key_for_writing(self, subject: str) -> bytes | None:
        """The card's data key, created if missing; None when the card is erased."""
        ...

    def key_for_reading(self, subject: str) -> KeyState:
        """The card's data key, or why there is none."""
        ...


class RedisVault:
    """The data keys in Redis, as the ``dlq-vault`` role. Connects on first use."""

    def __init__(self, url: str, *, cluster: bool = False) -> None:
        self._url = url
        self._cluster = cluster
        self._client: redis.Redis | RedisCluster | None = None
        self._write: Script | None = None
        self._read: Script | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisVault:
        return cls(connection_url(settings, RedisRole.DLQ_VAULT), cluster=settings.redis.cluster)

    def _scripts(self) -> tuple[Script, Script]:
        if self._write is None or self._read is None:
            try:
                if self._cluster:
                    client: redis.Redis | RedisCluster = RedisCluster.from_url(self._url, decode_responses=True)
                else:
                    client = redis.Redis.from_url(self._url, decode_responses=True)
            except _REDIS_ERRORS as exc:  # a cluster client asks for the slot map when it is built
                raise DeadLetterVaultError(f"cannot reach the dead-letter vault in Redis: {exc}") from exc
            self._client = client
            self._write, self._read = Script(client, WRITE_LUA), Script(client, READ_LUA)
        return self._write, self._read

    def _call(self, which: int, subject: str, *args: Any) -> str | None:
        script = self._scripts()[which]
        try:
            text = script(keys=[data_key_name(subject), _erased_marker(subject)], args=list(args))
        except _REDIS_ERRORS as exc:
            raise DeadLetterVaultError(f"the dead-letter vault in Redis did not answer: {exc}") from exc
        return None if text is None else str(text)

    def key_for_writing(self, subject: str) -> bytes | None:
        return hex_key(self._call(0, subject, new_data_key().hex()))

    def key_for_reading(self, subject: str) -> KeyState:
        text = self._call(1, subject)
        if text == _ERASED:
            return KeyState(erased=True, key=None)
        return KeyState(erased=False, key=hex_key(text))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._write = self._read = None


def install_key(vault: Vault) -> bytes:
    """The install's dead-letter key, created if missing."""
    key = vault.key_for_writing(INSTALL_SUBJECT)
    if key is None:
        raise SealError("the install's dead-letter key is marked erased")
    return key
