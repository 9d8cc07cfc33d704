"""The Redis roles of ``deploy/redis`` on a real redis-server started with that ACL file.

``deploy/redis/set-passwords.sh`` renders the committed ``users.acl`` with passwords made up here, the
embedded Redis (``RECEIPTFLOW_REDIS_ACL_FILE``) loads it, and each role is used through the project's
own code: the profile writer applies purchases and consent changes (the Lua scripts) and erases a
card; the marketing reader reads a profile, also through ``receiptflow profile --view marketing``,
and is refused everything else; a client that does not authenticate (a register) can run nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from receiptflow.config import Settings
from receiptflow.errors import ProfileStoreError
from receiptflow.models import ConsentChange, ConsentState, Purchase
from receiptflow.processors.core import process
from receiptflow.processors.policy import load_policy
from receiptflow.processors.profile_views import render
from receiptflow.processors.profiles import ERASED_KEY, RedisProfileStore, fold, profile_key, seen_key
from receiptflow.processors.subject import AUDIT_STREAM, audit_log, erase_card, is_erased
from receiptflow.producers.simulator import Simulator
from receiptflow.stack import EmbeddedRedis
from receiptflow.stack.process import free_port
from receiptflow.topics import create_topics

from .conftest import MakeSettings
from .support import env_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "redis"


@dataclass
class AclRedis:
    host: str
    port: int
    acl_file: Path
    writer_password: str
    reader_password: str

    def url(self, user: str | None = None) -> str:
        return f"redis://{user + '@' if user else ''}{self.host}:{self.port}/0"

    def client(self, user: str | None = None, password: str | None = None) -> redis.Redis:
        return redis.Redis(
            host=self.host, port=self.port, username=user, password=password, decode_responses=True, socket_timeout=5
        )


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    tmp = tmp_path_factory.mktemp("redis-acl")
    writer, reader = secrets.token_hex(16), secrets.token_hex(16)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PROFILE_WRITER_PASSWORD": writer}
    env["MARKETING_READER_PASSWORD"] = reader
    rendered = subprocess.run(
        ["sh", str(DEPLOY / "set-passwords.sh")], env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert writer not in rendered and reader not in rendered  # hashes only
    acl_file = tmp / "users.acl"
    acl_file.write_text(rendered)
    port = free_port()
    server = EmbeddedRedis(
        Settings(
            redis_url=f"redis://profile-writer@127.0.0.1:{port}/0",
            redis_password=SecretStr(writer),
            redis_acl_file=acl_file,
            data_dir=tmp / "data",
            metrics_port=0,
        )
    )
    assert server.up().state == "running"
    try:
        yield AclRedis("127.0.0.1", port, acl_file, writer, reader)
    finally:
        server.down()


def test_the_committed_acl_file_holds_no_password_and_switches_the_default_user_off() -> None:
    lines = (DEPLOY / "users.acl").read_text(encoding="utf-8").splitlines()
    users = {line.split()[1]: line.split()[2:] for line in lines if line.strip()}
    assert set(users) == {"default", "profile-writer", "marketing-reader"}
    for rules in users.values():
        assert "off" in rules and "on" not in rules and "nopass" not in rules
        assert not [r for r in rules if r.startswith((">", "#"))], "a password or hash is committed"
    assert "-@all" in users["default"] and not [r for r in users["default"] if r.startswith(("+", "~", "%"))]


def _purchases(n: int) -> list[Purchase]:
    sim = Simulator(3303, stores=10, customers=20)
    policy, now = load_policy(), datetime.now(UTC)
    out = []
    for c in sim.stream(n, now - timedelta(days=20), n / (20 * 86_400)):
        p = process(c, policy, None, now).customer
        if p.card_id is not None:
            out.append(replace(p, consent=ConsentState(True, True, True)))
    return out


def test_the_roles(acl_redis: AclRedis, make_settings: MakeSettings, tmp_path: Path) -> None:
    writer_settings = make_settings(
        redis_url=acl_redis.url("profile-writer"),
        redis_password=acl_redis.writer_password,
        warehouse_url=f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
    )
    reader_settings = make_settings(
        redis_url=acl_redis.url("marketing-reader"), redis_password=acl_redis.reader_password
    )

    # The writer: purchases and consent changes through the store's scripts, exactly as the agents do.
    purchases = _purchases(300)
    card = max({p.card_id for p in purchases}, key=lambda c: sum(p.card_id == c for p in purchases))
    assert card is not None
    writer = RedisProfileStore.from_settings(writer_settings)
    assert writer.apply_all(purchases).applied == len(purchases)
    assert writer.apply_all(purchases[:50]).duplicates == 50
    withdrawn = ConsentChange(card, datetime.now(UTC), False, True, "app")
    assert writer.apply_consents([withdrawn]) == 1
    expected = fold(purchases, writer.rules)
    got = writer.get(card)
    assert got is not None and got.visits == expected[card].visits and not got.has_product_data()
    others = sorted(c for c in expected if c != card)
    assert writer.get_many(others) == {c: expected[c] for c in others}
    assert writer.totals()[1] == len(purchases)

    # The reader: the profile hash, and the marketing view of the CLI with its own credentials.
    reader = RedisProfileStore.from_settings(reader_settings)
    other = others[0]
    assert reader.get(other, with_seen=False) == replace(expected[other], seen={})
    assert reader.segments(other) == {}
    shown = subprocess.run(
        [sys.executable, "-m", "receiptflow", "profile", other, "--view", "marketing", "--json"],
        env={**env_for(reader_settings), "RECEIPTFLOW_REDIS_PASSWORD": acl_redis.reader_password},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["card_id"] == other
    assert doc == json.loads(json.dumps(render(expected[other], "marketing", datetime.now(UTC))))

    # The customer view with a household reads the members' profile hashes, not their dedup sets,
    # so the reader's login serves it too.
    households = tmp_path / "households.csv"
    households.write_text(f"card_id,household_id\n{other},h1\n{others[1]},h1\n")
    own = subprocess.run(
        [sys.executable, "-m", "receiptflow", "profile", other, "--view", "customer", "--json"],
        env={
            **env_for(reader_settings),
            "RECEIPTFLOW_REDIS_PASSWORD": acl_redis.reader_password,
            "RECEIPTFLOW_HOUSEHOLDS_FILE": str(households),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["household"]["points"] == expected[other].points + expected[others[1]].points

    # ... and nothing else: no write, not the dedup set, the erased-cards record or the audit stream.
    r = acl_redis.client("marketing-reader", acl_redis.reader_password)
    w = acl_redis.client("profile-writer", acl_redis.writer_password)
    w.hset("rf:other:p", "v", "1")  # a hash outside the profile keys
    w.xadd(AUDIT_STREAM, {"probe": "1"})
    w.sadd(ERASED_KEY, "probe")
    refused: list[tuple[object, ...]] = [
        ("HSET", profile_key(other), "v", "0"),
        ("DEL", profile_key(other)),
        ("ZRANGE", seen_key(other), 0, -1),
        ("SMEMBERS", ERASED_KEY),
        ("SISMEMBER", ERASED_KEY, "probe"),
        ("XRANGE", AUDIT_STREAM, "-", "+"),
        ("HGETALL", "rf:other:p"),
        ("KEYS", "*"),
        ("SCAN", 0),
        ("FLUSHDB",),
        ("ACL", "LIST"),
    ]
    for command in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command(*command)  # type: ignore[no-untyped-call]
    with pytest.raises(ProfileStoreError, match="permission"):
        reader.apply(purchases[:1])
    with pytest.raises(ProfileStoreError, match="permission"):
        reader.get(other)  # with the dedup set
    assert w.hget(profile_key(other), "v") == str(expected[other].visits)

    # The writer has no administration either, and no keys outside the profile store's.
    for command in [("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("SET", "x", "1")]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            w.execute_command(*command)  # type: ignore[no-untyped-call]

    # Erasure runs with the writer's credentials (Redis part: MULTI/EXEC, the record, the audit stream).
    w.srem(ERASED_KEY, "probe")
    create_topics(writer_settings)
    erasure = erase_card(writer_settings, other)
    assert erasure.redis_keys == 2 and is_erased(writer_settings, other)
    assert writer.get(other) is None and writer.apply(purchases) == 0
    audit = [e for e in audit_log(writer_settings) if "subject" in e]
    assert {e["subject"] for e in audit} == {erasure.subject}  # one entry per step, all of this card
    assert [e["step"] for e in audit] == ["record", "profile", "warehouse", "consents"]


def test_a_client_that_does_not_authenticate_is_refused(acl_redis: AclRedis) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        acl_redis.client().ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        acl_redis.client().get("rf:erased")
    # The default user is off: no password opens it; a wrong password does not open a role.
    with pytest.raises(redis.exceptions.AuthenticationError):
        acl_redis.client("default", acl_redis.writer_password).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        acl_redis.client("profile-writer", acl_redis.reader_password).ping()
    with pytest.raises(ProfileStoreError):
        RedisProfileStore.from_url(acl_redis.url(), erasure_salt=b"test-erasure-salt-0123456789").apply(_purchases(5))
    assert acl_redis.client("profile-writer", acl_redis.writer_password).ping()
