"""The marketing reader on a real redis-server with the committed ACL: it reads the marketing projection
only, never a full profile hash, and needs nothing but its own login and the install's marketing key.

``EmbeddedRedis`` with nothing configured renders ``deploy/redis/users.acl`` with passwords generated
for the install, as in ``test_redis_acl.py``. The profile writer applies purchases and consent
changes through the store (the path of the faust agent and of ``profiles rebuild``), which writes
each card's projection ``rf:m:{<marketing hash>}``; these tests read it back as the marketing reader,
follow it through a withdrawal and an erasure, and run the marketing reading path (``receiptflow
profile --view marketing`` and the page's ``Backend.marketing``) as a production install given the
marketing key and the marketing reader's password only: no erasure salt anywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from receiptflow.config import Settings
from receiptflow.errors import ConfigError
from receiptflow.jobs.subject import erase_card
from receiptflow.models import ConsentChange, ConsentState, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.keys import decode_profile
from receiptflow.processors.profiles.marketing import (
    PROJECTION_FIELDS,
    guard_key,
    project,
    projection_key,
    segments_of,
)
from receiptflow.processors.profiles.projections import MarketingReader
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.profiles.views import render
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.redis_auth import RedisRole, connection_url, role_password
from receiptflow.secrets import erasure_salt, marketing_key
from receiptflow.stack import EmbeddedRedis
from receiptflow.stack.process import free_port
from receiptflow.topics import create_topics
from receiptflow.web.data import Backend

from .conftest import MakeSettings
from .support import env_for


@dataclass
class Install:
    settings: Settings  # the embedded install: its URL (no credentials) and data dir

    def client(self, role: RedisRole) -> redis.Redis:
        return redis.Redis.from_url(connection_url(self.settings, role), decode_responses=True, socket_timeout=5)


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    tmp = tmp_path_factory.mktemp("marketing-projection")
    settings = Settings(
        redis={"url": f"redis://127.0.0.1:{free_port()}/0"},
        kafka={"bootstrap_servers": "127.0.0.1:9092"},  # an embedded install
        local={"data_dir": tmp / "data"},
        metrics={"port": 0},
    )
    server = EmbeddedRedis(settings)
    assert server.up().state == "running"
    try:
        yield Install(settings)
    finally:
        server.down()


def _purchases(n: int, seed: int) -> list[Purchase]:
    sim = Simulator(seed, stores=10, customers=20)
    policy, now = load_policy(), datetime.now(UTC)
    out = []
    for c in sim.stream(n, now - timedelta(days=20), n / (20 * 86_400)):
        p = process(c, policy, None, now).customer
        if p.card_id is not None:
            out.append(replace(p, consent=ConsentState(True, True, True)))
    return out


def _writer_settings(install: Install, make_settings: MakeSettings, tmp_path: Path) -> Settings:
    """The install's settings for its writer-side processes: every secret from the data dir."""
    return make_settings(
        redis={
            "url": install.settings.redis.url,
            "writer_password": None,
            "marketing_password": None,
            "support_password": None,
            "customer_password": None,
        },
        local={"data_dir": install.settings.local.data_dir},
        warehouse={"url": f"duckdb:///{tmp_path / 'warehouse.duckdb'}"},
    )


def _busiest(purchases: list[Purchase]) -> str:
    cards = [p.card_id for p in purchases if p.card_id is not None and p.groups]
    return max(set(cards), key=cards.count)


def test_the_marketing_reader_reads_the_projection_and_never_a_full_profile(
    install: Install, make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = _writer_settings(install, make_settings, tmp_path)
    writer = RedisProfileStore.from_settings(settings)
    purchases = _purchases(300, 4404)
    assert writer.apply_all(purchases).applied == len(purchases)
    card = _busiest(purchases)
    profile = writer.get(card)
    assert profile is not None and profile.has_product_data()

    # A full profile hash is refused to the marketing reader, whichever read it tries.
    keys = writer.keys_for(card)
    m = install.client(RedisRole.MARKETING)
    for command in [
        ("HGETALL", keys.profile),
        ("HGET", keys.profile, "v"),
        ("HMGET", keys.profile, "v", "s"),
        ("HLEN", keys.profile),
        ("ZRANGE", keys.seen, 0, -1),
    ]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            m.execute_command(*command)  # type: ignore[no-untyped-call]

    # The projection holds what the marketing view shows, and nothing else; the view read from it is
    # the marketing view of the full profile.
    now = datetime.now(UTC)
    projection = m.hgetall(projection_key(MarketingReader.from_settings(settings).marketing_hash(card)))
    assert projection, "no marketing projection was written"
    assert set(projection) <= PROJECTION_FIELDS | {k for k in projection if k.startswith(("Pg:", "Pa:"))}
    assert not [k for k in projection if k.startswith(("w", "Pn", "Ps:", "Pu:"))], projection
    assert not set(projection.values()) & {str(ms) for ms in profile.affinity.values()}, "exact purchase times"
    segments = segments_of(writer.client.hgetall(keys.profile))  # type: ignore[arg-type]
    expected = render(profile, "marketing", now, segments=segments)
    assert expected["product_data_consent"] and expected["product_group_mix"]
    reader = MarketingReader.from_settings(settings)
    assert reader.view(card) == expected
    assert reader.view("9" * 16) is None

    # The marketing reader may not write its projection, nor read or write the projection's guard.
    mhash = reader.marketing_hash(card)
    for command in [
        ("HSET", projection_key(mhash), "v", "0"),
        ("DEL", projection_key(mhash)),
        ("GET", guard_key(mhash)),
        ("SET", guard_key(mhash), "x"),
        ("SET", "x", 1),
    ]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            m.execute_command(*command)  # type: ignore[no-untyped-call]

    # A withdrawal leaves no product data in the projection; a re-grant does not bring back the data
    # the withdrawal deleted.
    assert writer.apply_consents([ConsentChange(card, datetime.now(UTC), False, True, "app")]) == 1
    projection = m.hgetall(projection_key(reader.marketing_hash(card)))
    assert projection and not [k for k in projection if k.startswith("P")], projection
    withdrawn = reader.view(card)
    assert withdrawn is not None and withdrawn["product_data_consent"] is False
    assert "product_group_mix" not in withdrawn and "affinities" not in withdrawn
    assert withdrawn["visits"] == profile.visits

    # The customer's own view reads the full hash with a role of its own, not as the marketing reader.
    page = Backend(settings).customer(card, now)
    assert page is not None and page.view["visits"] == profile.visits
    customer = install.client(RedisRole.CUSTOMER)
    assert customer.hget(keys.profile, "v") == str(profile.visits)
    for command in [
        ("HGETALL", projection_key(reader.marketing_hash(card))),
        ("ZRANGE", keys.seen, 0, -1),
        ("HSET", keys.profile, "v", "0"),
        ("EXISTS", keys.erased),
    ]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            customer.execute_command(*command)  # type: ignore[no-untyped-call]

    # Erasure removes the projection.
    create_topics(settings)
    erase_card(settings, card)
    admin = install.client(RedisRole.ADMIN)
    assert admin.exists(projection_key(reader.marketing_hash(card))) == 0
    assert not [k for k in admin.keys("rf:m*") if reader.marketing_hash(card) in k]
    assert reader.view(card) is None
    # ... and a replayed purchase or consent change of the erased card writes none again.
    writer.apply_all([p for p in purchases if p.card_id == card])
    writer.apply_consents([ConsentChange(card, datetime.now(UTC), True, True, "app")])
    assert not [k for k in admin.keys("rf:m*") if reader.marketing_hash(card) in k]


def test_the_marketing_reader_works_without_the_erasure_salt(
    install: Install, make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = _writer_settings(install, make_settings, tmp_path)
    writer = RedisProfileStore.from_settings(settings)
    purchases = _purchases(200, 5505)
    writer.apply_all(purchases)
    card = _busiest(purchases)
    now = datetime.now(UTC)
    profile = writer.get(card)
    assert profile is not None
    stored = writer.client.hgetall(writer.keys_for(card).profile)
    expected = render(profile, "marketing", now, segments=segments_of(stored))  # type: ignore[arg-type]

    # The marketing process as production runs it: its Redis login and the marketing key, given in
    # its environment; no erasure salt, no data dir with the install's generated secrets.
    password = role_password(install.settings, RedisRole.MARKETING)
    assert password is not None
    key = marketing_key(settings).decode()
    empty = tmp_path / "marketing-data"
    empty.mkdir()
    marketing = Settings(
        redis={"url": install.settings.redis.url, "marketing_password": password},
        kafka={"bootstrap_servers": "127.0.0.1:9092"},
        local={"data_dir": empty},
        privacy={"deployment": "production", "marketing_key": key},
        metrics={"port": 0},
    )
    with pytest.raises(ConfigError):
        erasure_salt(marketing)  # the process has no way to the card hash
    assert Backend(marketing).marketing(card) == expected

    env = {k: v for k, v in env_for(settings).items() if not k.startswith("RECEIPTFLOW_")}
    env.update(
        RECEIPTFLOW_DEPLOYMENT="production",
        RECEIPTFLOW_REDIS_URL=install.settings.redis.url,
        RECEIPTFLOW_REDIS_MARKETING_PASSWORD=password,
        RECEIPTFLOW_MARKETING_KEY=key,
        RECEIPTFLOW_DATA_DIR=str(empty),
        RECEIPTFLOW_METRICS_PORT="0",
    )
    shown = subprocess.run(
        [sys.executable, "-m", "receiptflow", "profile", card, "--view", "marketing", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == json.loads(json.dumps(expected))
    assert not list(empty.rglob("*")), "the marketing process created secrets of its own"


def test_a_projection_of_a_profile_read_before_a_withdrawal_or_an_erasure_is_not_written(
    install: Install, make_settings: MakeSettings, tmp_path: Path
) -> None:
    # Two writers at once (the live agent and a rebuild, or two agents): the slow one took the card's
    # token and read the profile with product data; meanwhile the other applied a withdrawal.
    settings = _writer_settings(install, make_settings, tmp_path)
    slow, fast = RedisProfileStore.from_settings(settings), RedisProfileStore.from_settings(settings)
    purchases = _purchases(200, 6606)
    slow.apply_all(purchases)
    card, witness = _busiest(purchases), sorted({p.card_id for p in purchases if p.card_id} - {_busiest(purchases)})[0]
    writer = slow.projections
    assert writer is not None
    reader = MarketingReader.from_settings(settings)
    now = datetime.now(UTC)

    def stale_write(of: str) -> Callable[[], int]:
        """Take the token and read the profile now; return a function writing that projection later."""
        assert writer is not None
        (token,) = slow.run(writer.guards([of], frozenset()), "token")
        h = slow.client.hgetall(slow.keys_for(of).profile)
        fields = project(decode_profile(of, h, ()), segments_of(h), now)  # type: ignore[arg-type]
        if of == card and not withdrawn:
            assert [k for k in fields if k.startswith("P")]  # the stale read holds product data

        def later() -> int:
            assert writer is not None
            return int(slow.run([writer.write_call(of, str(token), fields)], "write")[0])

        return later

    withdrawn = False
    write_later = stale_write(card)
    assert fast.apply_consents([ConsentChange(card, datetime.now(UTC), False, True, "app")]) == 1
    withdrawn = True
    assert write_later() == 0
    assert not [k for k in reader.fields(card) if k.startswith("P")] and reader.fields(card)["c"] == "0"

    # The same for an erasure: the guard is gone, the projection stays gone.
    write_later = stale_write(witness)
    create_topics(settings)
    erase_card(settings, witness)
    assert write_later() == 0
    assert reader.view(witness) is None
    admin = install.client(RedisRole.ADMIN)
    assert admin.exists(guard_key(reader.marketing_hash(witness))) == 0

    # Without either in between, the token still holds and the write goes through.
    write_later = stale_write(card)
    assert write_later() == 1
