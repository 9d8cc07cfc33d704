"""The Redis roles on a real redis-server, as the embedded stack starts it by default.

``EmbeddedRedis`` with nothing configured renders ``deploy/redis/users.acl`` with passwords generated
for the install (kept in the data dir, owner-only) and switches the ``default`` user off. Each role
is then used through the project's own code, with nothing but the data dir to find its password:
the profile writer applies purchases and consent changes (the Lua scripts) and may mark a card
erased, but cannot take a card off the erased-cards record nor delete its erased marker; the
support role erases a card (marker, keys, record, audit stream); the customer reader reads a
profile hash, also through ``receiptflow profile --view customer``, and is refused everything else;
the marketing reader reads the card's marketing projection only (``test_marketing_projection.py``);
a client that does not authenticate can run nothing. The production path
(``deploy/redis/set-passwords.sh`` and per-role password settings) renders the same file: see
``tests/unit/test_deploy.py``.
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from receiptflow.config import Settings
from receiptflow.errors import ProfileStoreError
from receiptflow.jobs.subject import AUDIT_STREAM, audit_log, erase_card, erased_in_profiles
from receiptflow.models import ConsentChange, ConsentState, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.fold import fold
from receiptflow.processors.profiles.keys import ERASED_KEY, card_keys
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.profiles.views import render
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.redis_auth import TEMPLATE_USERS, RedisRole, connection_url, role_password
from receiptflow.stack import EmbeddedRedis
from receiptflow.stack.process import free_port
from receiptflow.topics import create_topics

from .conftest import MakeSettings
from .support import env_for


@dataclass
class Embedded:
    settings: Settings  # the install: its URL (no credentials) and data dir, nothing else

    def client(self, role: RedisRole | None = None) -> redis.Redis:
        url = self.settings.redis.url if role is None else connection_url(self.settings, role)
        return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)

    def password(self, role: RedisRole) -> str:
        password = role_password(self.settings, role)
        assert password is not None
        return password


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    tmp = tmp_path_factory.mktemp("redis-acl")
    settings = Settings(
        redis={"url": f"redis://127.0.0.1:{free_port()}/0"},
        kafka={"bootstrap_servers": "127.0.0.1:9092"},  # an embedded install
        local={"data_dir": tmp / "data"},
        metrics={"port": 0},
    )
    server = EmbeddedRedis(settings)
    assert server.up().state == "running"
    try:
        yield Embedded(settings)
    finally:
        server.down()


def test_an_unauthenticated_client_is_refused_and_passwords_are_the_owners_only(embedded: Embedded) -> None:
    # A bare PING on the wire, as any local process could send it.
    host, port = embedded.settings.redis.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(200).startswith(b"-NOAUTH")
        raw.sendall(b"SREM rf:erased x\r\n")
        assert raw.recv(200).startswith(b"-NOAUTH")
    anonymous = embedded.client()
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    # The default user is off: no password opens it; a role's password opens no other role.
    for user, password in [
        ("default", embedded.password(RedisRole.ADMIN)),
        ("profile-writer", embedded.password(RedisRole.MARKETING)),
        ("admin", ""),
    ]:
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host=host, port=int(port), username=user, password=password, socket_timeout=5).ping()
    with pytest.raises(ProfileStoreError):
        RedisProfileStore.from_url(embedded.settings.redis.url, erasure_salt=b"test-erasure-salt-0123456789").apply(
            _purchases(5)
        )

    data = embedded.settings.local.data_dir
    assert stat.S_IMODE((data / "secrets").stat().st_mode) == 0o700
    for role, user in TEMPLATE_USERS.items():
        file = data / "secrets" / f"redis-{user}"
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert embedded.client(role).ping(), role
    # The server's ACL and config hold hashes only, readable by the owner only, next to the AOF.
    acl = (data / "redis" / "users.acl").read_text()
    assert not [r for r in RedisRole if embedded.password(r) in acl]
    assert "user default off" in acl
    for path in (data / "redis" / "users.acl", data / "redis" / "redis.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((data / "redis").stat().st_mode) == 0o700


def _purchases(n: int) -> list[Purchase]:
    sim = Simulator(3303, stores=10, customers=20)
    policy, now = load_policy(), datetime.now(UTC)
    out = []
    for c in sim.stream(n, now - timedelta(days=20), n / (20 * 86_400)):
        p = process(c, policy, None, now).customer
        if p.card_id is not None:
            out.append(replace(p, consent=ConsentState(True, True, True)))
    return out


def test_the_roles(embedded: Embedded, make_settings: MakeSettings, tmp_path: Path) -> None:
    # Every process of the install finds its role's password in the data dir, nothing else given.
    settings = make_settings(
        redis={
            "url": embedded.settings.redis.url,
            "writer_password": None,
            "marketing_password": None,
            "support_password": None,
            "web_sessions_password": None,
            "dlq_vault_password": None,
            "customer_password": None,
            "auditor_password": None,
        },
        local={"data_dir": embedded.settings.local.data_dir},
        warehouse={"url": f"duckdb:///{tmp_path / 'warehouse.duckdb'}"},
    )

    # The writer: purchases and consent changes through the store's scripts, exactly as the agents do.
    purchases = _purchases(300)
    card = max({p.card_id for p in purchases}, key=lambda c: sum(p.card_id == c for p in purchases))
    assert card is not None
    writer = RedisProfileStore.from_settings(settings)
    assert writer.apply_all(purchases).applied == len(purchases)
    assert writer.apply_all(purchases[:50]).duplicates == 50
    withdrawn = ConsentChange(card, datetime.now(UTC), False, True, "app")
    assert writer.apply_consents([withdrawn]) == 1
    expected = fold(purchases, writer.rules)
    got = writer.get(card)
    assert got is not None and got.visits == expected[card].visits and not got.has_product_data()
    others = sorted(c for c in expected if c != card)
    assert writer.get_many(others) == {c: expected[c] for c in others}
    assert writer.totals()[1] == sum(p.visits for p in expected.values())  # refunds are no visits

    # The customer reader: the profile hash; the marketing view of the CLI from the card's projection.
    reader = RedisProfileStore.from_settings(settings, RedisRole.CUSTOMER)
    other = others[0]
    assert reader.get(other, with_seen=False) == replace(expected[other], seen={})
    assert reader.segments(other) == {}
    env = env_for(settings)
    assert not [k for k in env if k.startswith("RECEIPTFLOW_REDIS_") and k.endswith("_PASSWORD")]
    shown = subprocess.run(
        [sys.executable, "-m", "receiptflow", "profile", other, "--view", "marketing", "--json"],
        env=env,
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
    # so the customer reader's login serves it too.
    households = tmp_path / "households.csv"
    households.write_text(f"card_id,household_id\n{other},h1\n{others[1]},h1\n")
    own = subprocess.run(
        [sys.executable, "-m", "receiptflow", "profile", other, "--view", "customer", "--json"],
        env={**env, "RECEIPTFLOW_HOUSEHOLDS_FILE": str(households)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["household"]["points"] == expected[other].points + expected[others[1]].points

    # ... and nothing else: no write, not the dedup set, the erased markers and record or the audit stream.
    keys = writer.keys_for(other)
    r = embedded.client(RedisRole.CUSTOMER)
    support = embedded.client(RedisRole.SUPPORT)
    embedded.client(RedisRole.ADMIN).hset("rf:other:p", "v", "1")  # a hash outside the profile keys
    support.xadd(AUDIT_STREAM, {"probe": "1"})
    support.sadd(ERASED_KEY, "probe")
    refused: list[tuple[object, ...]] = [
        ("HSET", keys.profile, "v", "0"),
        ("DEL", keys.profile),
        ("ZRANGE", keys.seen, 0, -1),
        ("ZADD", keys.seen, 1, "x"),
        ("EXISTS", keys.erased),
        ("SETNX", keys.erased, "1"),
        ("SMEMBERS", ERASED_KEY),
        ("SISMEMBER", ERASED_KEY, "probe"),
        ("SREM", ERASED_KEY, "probe"),
        ("XRANGE", AUDIT_STREAM, "-", "+"),
        ("XADD", AUDIT_STREAM, "*", "k", "v"),
        ("HGETALL", "rf:other:p"),
        ("SET", "x", "1"),
        ("EVAL", "return 1", 0),
        ("KEYS", "*"),
        ("SCAN", 0),
        ("FLUSHDB",),
        ("ACL", "LIST"),
        ("CONFIG", "GET", "*"),
    ]
    for command in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command(*command)  # type: ignore[no-untyped-call]
    with pytest.raises(ProfileStoreError, match="permission"):
        reader.apply(purchases[:1])
    with pytest.raises(ProfileStoreError, match="permission"):
        reader.apply_consents([withdrawn])
    with pytest.raises(ProfileStoreError, match="permission"):
        reader.get(other)  # with the dedup set
    assert r.hget(keys.profile, "v") == str(expected[other].visits)
    assert other not in " ".join(embedded.client(RedisRole.ADMIN).keys("rf:*")), "a key name carries a card id"

    # The writer reads erased markers (the scripts check them) and may create one and add to the
    # erased-cards list (the stricter direction: `profiles rebuild` copies the erased-cards topic into
    # a new store), but never delete or expire a marker, take a card off the list or read it, nor touch
    # the audit stream, keys outside the card keys, or administration.
    w = embedded.client(RedisRole.WRITER)
    probe = card_keys("0" * 32)
    assert w.setnx(probe.erased, 1) == 1 and w.exists(probe.erased) == 1 and w.get(probe.erased) == "1"
    assert w.setnx(probe.erased, 2) == 0
    assert w.sadd(ERASED_KEY, "added-by-the-writer") == 1
    support.srem(ERASED_KEY, "added-by-the-writer")
    for command in [
        ("DEL", probe.erased),
        ("UNLINK", probe.erased),
        ("GETDEL", probe.erased),
        ("SET", probe.erased, "1", "PX", "1"),
        ("PEXPIRE", probe.erased, "1"),
        ("RENAME", probe.erased, probe.profile),
        ("RENAME", probe.profile, probe.erased),
        ("SISMEMBER", ERASED_KEY, "probe"),
        ("SREM", ERASED_KEY, "probe"),
        ("DEL", ERASED_KEY),
        ("XADD", AUDIT_STREAM, "*", "k", "v"),
        ("XRANGE", AUDIT_STREAM, "-", "+"),
        ("HGETALL", "rf:other:p"),
        ("EVAL", f"return redis.call('SREM', '{ERASED_KEY}', 'probe')", 0),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "*"),
        ("SET", "x", "1"),
    ]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            w.execute_command(*command)  # type: ignore[no-untyped-call]
    # Not even through a script of its own: the script's commands are checked against its rights.
    sha = w.script_load("return redis.call('SREM', KEYS[3], 'probe')")
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)permission|access"):
        w.evalsha(sha, 3, keys.profile, keys.seen, ERASED_KEY)
    sha = w.script_load("return redis.call('DEL', KEYS[3])")
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)permission|access"):
        w.evalsha(sha, 3, probe.profile, probe.seen, probe.erased)
    assert support.sismember(ERASED_KEY, "probe") == 1 and support.exists(probe.erased) == 1
    support.srem(ERASED_KEY, "probe")
    support.delete(probe.erased)

    # Erasure runs with the support login (Redis part: MULTI/EXEC, the record, the audit stream), and
    # the writer's replay of the card's purchases does not bring it back.
    create_topics(settings)
    erasure = erase_card(settings, other)
    assert erasure.redis_keys == 2 and erased_in_profiles(settings, other)
    assert support.exists(keys.erased) == 1 and support.sismember(ERASED_KEY, erasure.subject) == 1
    assert writer.get(other) is None and writer.apply(purchases) == 0
    assert writer.apply_consents([ConsentChange(other, datetime.now(UTC), True, True, "app")]) == 0
    audit = [e for e in audit_log(settings) if "subject" in e]
    assert {e["subject"] for e in audit} == {erasure.subject}  # one entry per step, all of this card
    assert [e["step"] for e in audit] == ["record", "retraction", "profile", "warehouse", "consents"]
