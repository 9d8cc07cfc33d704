"""The dead-letter vault on a real redis-server, as the ``dlq-vault`` role of deploy/redis/users.acl.

The role creates a card's data key once (a second writer gets the first key), never for an erased
card, and can do nothing else: no profile read, no overwrite, no delete, no erased marker written.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from receiptflow.dlq_vault import INSTALL_SUBJECT, KeyState, RedisVault, data_key_name, install_key
from receiptflow.redis_auth import RedisRole

from .conftest import RedisServer


def _subject() -> str:
    return uuid.uuid4().hex  # a card hash of this test's own (32 hex characters)


def test_the_vault_creates_a_cards_key_once_and_never_for_an_erased_card(redis_server: RedisServer) -> None:
    vault = RedisVault(redis_server.role_url(RedisRole.DLQ_VAULT))
    admin = redis.Redis.from_url(redis_server.role_url(RedisRole.ADMIN))
    card, erased = _subject(), _subject()
    try:
        key = vault.key_for_writing(card)
        assert key is not None and len(key) == 32
        assert vault.key_for_writing(card) == key  # SETNX: a second writer gets the first key
        assert vault.key_for_reading(card) == KeyState(erased=False, key=key)
        assert vault.key_for_reading(_subject()) == KeyState(erased=False, key=None)

        admin.set(f"rf:{{{erased}}}:x", 1)  # the erased marker, as `erase` sets it
        assert vault.key_for_writing(erased) is None
        assert admin.exists(data_key_name(erased)) == 0
        assert vault.key_for_reading(erased) == KeyState(erased=True, key=None)

        assert install_key(vault) == install_key(vault) == vault.key_for_reading(INSTALL_SUBJECT).key
    finally:
        vault.close()
        admin.delete(data_key_name(card), f"rf:{{{erased}}}:x")


@pytest.mark.parametrize(
    "command",
    [
        ("HGETALL", "rf:{S}:p"),  # a profile
        ("GET", "rf:{S}:p"),
        ("ZRANGE", "rf:{S}:seen", "0", "-1"),
        ("DEL", "rf:{S}:k"),  # take a card's key away (only erasure may)
        ("SET", "rf:{S}:k", "00"),  # overwrite a key: letters sealed under it would be lost
        ("SET", "rf:{S}:x", "1"),  # mark a card erased
        ("DEL", "rf:{S}:x"),  # bring an erased card back
        ("SCAN", "0"),
        ("XRANGE", "rf:audit:erasures", "-", "+"),
        ("EVAL", "return redis.call('GET', KEYS[1])", "1", "rf:{S}:p"),
    ],
)
def test_the_vault_role_is_refused_everything_else(redis_server: RedisServer, command: tuple[str, ...]) -> None:
    subject = _subject()
    client = redis.Redis.from_url(redis_server.role_url(RedisRole.DLQ_VAULT))
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*(part.replace("{S}", f"{{{subject}}}") for part in command))
    finally:
        client.close()
