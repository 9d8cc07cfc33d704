"""Profiles on a real Redis Cluster: three masters from the one ``redis-server``, with the ACL users.

The cluster (:class:`receiptflow.stack.redis_cluster.LocalRedisCluster`) is started once for these
tests. The live profile agent (``receiptflow process --role profiles``, its own process, as in
production) applies shuffled, duplicated purchases and consent withdrawals from the session's Kafka
broker into it, the warehouse sink stores the same topics, and ``profiles rebuild`` rebuilds them
from the warehouse into the cluster: both must equal, field for field, the profiles that the same
input gives on one Redis (the session's server). Erasure works on the cluster from the topic's hash
alone (the agent sets the card's marker, which then keeps the card's later purchases out), and
through ``erase`` (support login, a transaction in the card's slot); a household whose members sit
on different masters shows its points added up; the roles keep their rights on every node; and the
web page's sessions of a card, spread over the masters, end together.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from redis.cluster import RedisCluster
from redis.crc import key_slot

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.erasures import record_erasure
from receiptflow.jobs.profile_rebuild import rebuild
from receiptflow.jobs.segments import store_segments
from receiptflow.jobs.subject import erase_card, erased_in_profiles
from receiptflow.models import ConsentChange, ConsentState, Purchase
from receiptflow.processors.profiles.fold import Profile, fold
from receiptflow.processors.profiles.keys import ERASED_KEY
from receiptflow.processors.profiles.marketing import projection_key
from receiptflow.processors.profiles.projections import MarketingReader
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.profiles.views import render
from receiptflow.producers.client import RegisterClient
from receiptflow.redis_auth import RedisRole, connection_url
from receiptflow.sinks import open_sink, run_sink
from receiptflow.stack.redis_cluster import LocalRedisCluster
from receiptflow.topics import TopicNames, create_topics
from receiptflow.web.sessions import SessionStore, session_key

from .conftest import KafkaServer, RedisServer
from .support import env_for, send_purchases, simulated_purchases, start_profiles, stop, visits_by_card

CODEC = Codec()
SALT = b"test-erasure-salt-0123456789"  # the single-Redis reference store's (its key names only)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """Three masters on free ports with this install's ACL users, for the whole session."""
    data = tmp_path_factory.mktemp("redis-cluster") / "data"
    cluster = LocalRedisCluster(
        Settings(local={"data_dir": data}, kafka={"bootstrap_servers": "127.0.0.1:9092"}, metrics={"port": 0})
    )
    try:
        cluster.up()
    except Exception as exc:
        cluster.down()
        pytest.fail(f"no local Redis Cluster for the tests: {exc}")
    try:
        yield cluster
    finally:
        cluster.down()


@dataclass
class ClusterRun:
    settings: Settings  # the cluster as the install's settings name it (RECEIPTFLOW_REDIS_CLUSTER=true)
    proc: subprocess.Popen[bytes]
    log: Path
    store: RedisProfileStore  # the profile writer's login, a cluster client

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"profile worker exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; worker log tail:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "receiptflow", *args],
            env={**env_for(self.settings), **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def run(kafka_server: KafkaServer, redis_cluster: LocalRedisCluster) -> Iterator[ClusterRun]:
    """The profile agent of a fresh topic set, writing into the cluster."""
    name = uuid.uuid4().hex[:8]
    settings = Settings(
        **kafka_server.auth_settings(),
        kafka={"bootstrap_servers": kafka_server.bootstrap, "topic_prefix": f"cluster-{name}.", "topic_partitions": 3},
        redis={"url": redis_cluster.url, "cluster": True},
        local={"data_dir": redis_cluster.settings.local.data_dir},  # the install whose role passwords the nodes know
        warehouse={"url": f"duckdb:///{redis_cluster.settings.local.data_dir / f'warehouse-{name}.duckdb'}"},
        router={"id": f"cluster-{name}"},
        metrics={"port": 0},
    )
    create_topics(settings)
    log = settings.local.data_dir / f"profiles-{name}.log"
    proc = start_profiles(settings, log)
    store = RedisProfileStore.from_settings(settings)
    assert store.is_cluster
    try:
        yield ClusterRun(settings, proc, log, store)
    finally:
        stop(proc)


def _single_redis(server: RedisServer, db: int) -> RedisProfileStore:
    """An empty database ``db`` of the session's single Redis, written as the profile writer."""
    admin = redis.Redis.from_url(server.role_url(RedisRole.ADMIN, db))
    try:
        admin.flushdb()
    finally:
        admin.close()
    return RedisProfileStore.from_url(server.role_url(RedisRole.WRITER, db), erasure_salt=SALT)


def _traffic(seed: int) -> tuple[list[Purchase], list[ConsentChange], list[Purchase]]:
    """Four weeks of purchases (a third with product-data consent), withdrawals of product-data
    consent for some cards half way through, and the deliveries: shuffled, a tenth of them twice."""
    _, purchases = simulated_purchases(seed=seed, count=1200, span=timedelta(days=28))
    rnd = random.Random(seed)
    cards = sorted({p.card_id for p in purchases if p.card_id is not None})
    middle = datetime.now(UTC) - timedelta(days=14)
    # Withdrawals only (no re-grant), so the profiles do not depend on the delivery order.
    withdrawals = [
        ConsentChange(c, middle + timedelta(minutes=i), False, True, "app") for i, c in enumerate(cards[::4])
    ]
    deliveries = purchases + [p for p in purchases if rnd.random() < 0.10]
    rnd.shuffle(deliveries)
    return purchases, withdrawals, deliveries


def _unplaced(profile: Profile) -> Profile:
    """``profile`` without the write position of its consent (what only a record read from the topic has)."""
    mark = profile.consent
    return profile if mark is None else replace(profile, consent=replace(mark, written_ms=None, written_offset=0))


def _spread(client: RedisCluster, keys: list[str]) -> set[str]:
    """The masters that hold ``keys``."""
    return {client.get_node_from_key(k).name for k in keys}


def test_the_live_agent_and_a_rebuild_on_the_cluster_equal_the_single_redis_run(
    run: ClusterRun, redis_server: RedisServer
) -> None:
    purchases, withdrawals, deliveries = _traffic(9901)
    cards = sorted({p.card_id for p in purchases if p.card_id is not None})
    client = RegisterClient(run.settings)
    for change in withdrawals:
        client.send_consent(change)
    assert client.flush().failed == 0
    send_purchases(run.settings, deliveries)
    carded = sum(visits_by_card(purchases).values())  # refunds and cancels move money but are no visits
    run.wait(lambda: sum(p.visits for p in run.store.get_many(cards).values()) >= carded, 180, "every visit")
    withdrawn = {c.card_id for c in withdrawals}

    def withdrawals_recorded() -> bool:
        got = run.store.get_many(sorted(withdrawn), with_seen=False)
        return all(p.consent is not None and not p.consent.product_data for p in got.values())

    run.wait(withdrawals_recorded, 60, "every withdrawal")
    time.sleep(1.0)  # anything still in flight (a duplicate counted twice) would show now
    live = run.store.get_many(cards)
    # The cards' keys are spread over every master: the scripts ran on each of them.
    assert _spread(run.store.client, [run.store.keys_for(c).profile for c in cards]) == {  # type: ignore[arg-type]
        n.name
        for n in run.store.client.get_primaries()  # type: ignore[union-attr]
    }

    # The same input on one Redis, through the same store, in another order.
    single = _single_redis(redis_server, 13)
    single.apply_consents(withdrawals)
    for i in range(0, len(purchases), 300):
        single.apply(purchases[i : i + 300])
    reference = single.get_many(cards)
    assert sorted(live) == sorted(reference) == cards
    # Live recorded each withdrawal's broker position (append time, offset); the reference had none.
    live_unplaced = {c: _unplaced(p) for c, p in live.items()}
    assert [c for c in cards if live_unplaced[c] != _unplaced(reference[c])] == []
    assert live_unplaced == {c: _unplaced(p) for c, p in fold([*withdrawals, *purchases], run.store.rules).items()}
    assert any(p.has_product_data() for p in live.values()) and any(p.nutrition for p in live.values())
    assert all(not live[c].has_product_data() for c in withdrawn if c in live)
    visits, spend = sum(p.visits for p in live.values()), sum(p.spend_cents for p in live.values())
    assert run.store.totals() == (len(live), visits, spend)  # SCAN over every master

    # The marketing projections sit in the slots of the cards' marketing hashes, apart from their profiles
    # (so written in a step of their own), and read back as the marketing view; withdrawn, without product data.
    marketing = MarketingReader.from_settings(run.settings)
    now = datetime.now(UTC)
    assert {c: marketing.view(c) for c in cards} == {c: render(p, "marketing", now) for c, p in live.items()}
    projections = [projection_key(marketing.marketing_hash(c)) for c in cards]
    assert _spread(run.store.client, projections) == _spread(  # type: ignore[arg-type]
        run.store.client,  # type: ignore[arg-type]
        [run.store.keys_for(c).profile for c in cards],
    )
    assert [
        c
        for c, k in zip(cards, projections, strict=True)
        if key_slot(k.encode()) != key_slot(run.store.keys_for(c).profile.encode())
    ]
    assert not [c for c in withdrawn if c in live and [k for k in marketing.fields(c) if k.startswith("P")]]

    # The warehouse sink stores the same topics; `profiles rebuild` puts them back into the cluster.
    sink = open_sink(run.settings)
    try:
        run_sink(run.settings, sink, idle_exit_after=4.0)
        stale = run.store.keys_for(cards[0])
        run.store.client.hset(stale.profile, "v", 999)  # a rebuild replaces what it rebuilds
        stats = rebuild(sink.warehouse, run.store, cards_per_batch=40, events_per_round_trip=300)
        into_single = _single_redis(redis_server, 14)
        rebuild(sink.warehouse, into_single)
    finally:
        sink.close()
    assert stats.cards == len(cards) and stats.purchases == len([p for p in purchases if p.card_id is not None])
    rebuilt = run.store.get_many(cards)
    assert [c for c in cards if rebuilt[c] != live[c]] == []
    assert into_single.get_many(cards) == rebuilt

    # The CLI's rebuild reads the cluster setting like every other command.
    done = run.cli("profiles", "rebuild", "--cards-per-batch", "50")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"rebuilt {len(cards)} profiles" in done.stdout
    assert run.store.get_many(cards) == live

    # Segments go through a script of their own: one card's keys too.
    rows = [(c, {"model": "m1", "month": "2026-11", "visits_class": "regular"}) for c in cards[:30]]
    assert store_segments(run.store, rows)["stored_without_segment"] == 30
    assert run.store.segments(cards[0]) == rows[0][1]


def test_erasure_on_the_cluster(run: ClusterRun) -> None:
    _, purchases = simulated_purchases(seed=9902, count=300, span=timedelta(days=3))
    by_card: dict[str, list[Purchase]] = {}
    for p in purchases:
        if p.card_id is not None:
            by_card.setdefault(p.card_id, []).append(p)
    erased_on_topic, erased_by_job, witness = sorted(by_card, key=lambda c: (-len(by_card[c]), c))[:3]
    store = run.store

    # The topic's hash alone: the agent sets the card's marker, in the card's slot ...
    subject = store.erased_hash(erased_on_topic)
    record_erasure(run.settings, subject, datetime.now(UTC))
    run.wait(lambda: bool(store.client.exists(store.keys_for(erased_on_topic).erased)), 15, "the card's marker")
    # ... and keeps its purchases out. Another card's purchase sent behind them under the same key
    # (so on the same partition): once that one shows, the agent has read the erased card's.
    topic = TopicNames(run.settings.kafka.topic_prefix).purchases_customer
    producer = Producer(run.settings.kafka_config(**{"enable.idempotence": True}))
    behind = by_card[witness][0]
    for p in [*by_card[erased_on_topic], behind]:
        producer.produce(topic, key=erased_on_topic.encode(), value=CODEC.encode("purchase", p.to_avro()))
    assert producer.flush(30) == 0
    run.wait(lambda: store.get(witness) is not None, 60, "a purchase sent behind the card's")
    assert store.get(erased_on_topic) is None
    assert store.apply(by_card[erased_on_topic]) == 0  # the script says "erased" on the card's master

    # `erase` with the support login: marker and deletion in one transaction on the card's master.
    send_purchases(run.settings, by_card[erased_by_job])
    run.wait(lambda: store.get(erased_by_job) is not None, 60, "the card to be erased")
    erasure = erase_card(run.settings, erased_by_job)
    assert erasure.redis_keys == 2 and erased_in_profiles(run.settings, erased_by_job)
    assert store.get(erased_by_job) is None
    assert store.apply(by_card[erased_by_job]) == 0
    assert store.apply_consents([ConsentChange(erased_by_job, datetime.now(UTC), True, True, "app")]) == 0
    marketing = MarketingReader.from_settings(run.settings)
    assert marketing.view(erased_by_job) is None  # its projection went with it, from another master
    assert marketing.fields(witness)
    support = RedisCluster.from_url(connection_url(run.settings, RedisRole.SUPPORT), decode_responses=True)
    try:
        assert support.sismember(ERASED_KEY, erasure.subject) == 1
        assert support.sismember(ERASED_KEY, subject) == 1  # the agent's copy of the topic
    finally:
        support.close()


def test_the_roles_keep_their_rights_on_every_master(run: ClusterRun) -> None:
    writer = RedisCluster.from_url(connection_url(run.settings, RedisRole.WRITER), decode_responses=True)
    reader = RedisCluster.from_url(connection_url(run.settings, RedisRole.MARKETING), decode_responses=True)
    try:
        # One probe card per master.
        probes: dict[str, str] = {}
        i = 0
        while len(probes) < len(writer.get_primaries()):
            keys = run.store.keys_for(f"probe-{i}")
            probes.setdefault(writer.get_node_from_key(keys.erased).name, f"probe-{i}")
            i += 1
        for card in probes.values():
            keys = run.store.keys_for(card)
            assert writer.setnx(keys.erased, 1) == 1 and writer.exists(keys.erased) == 1
            for command in [("DEL", keys.erased), ("SET", keys.erased, "1", "PX", "1"), ("SREM", ERASED_KEY, "x")]:
                with pytest.raises(redis.exceptions.NoPermissionError):
                    writer.execute_command(*command)  # type: ignore[no-untyped-call]
            for command in [
                ("EXISTS", keys.erased),
                ("ZRANGE", keys.seen, 0, -1),
                ("HSET", keys.profile, "v", 1),
                ("HGETALL", keys.profile),  # the marketing reader reads projections only
                ("HGET", keys.profile, "v"),
            ]:
                with pytest.raises(redis.exceptions.NoPermissionError):
                    reader.execute_command(*command)  # type: ignore[no-untyped-call]
        # The marketing reader reads its projections on every master.
        masters: dict[str, str] = {}
        i = 0
        while len(masters) < len(writer.get_primaries()):
            key = projection_key(f"{i:032x}")
            masters.setdefault(writer.get_node_from_key(key).name, key)
            i += 1
        for key in masters.values():
            assert reader.hgetall(key) == {}
    finally:
        writer.close()
        reader.close()


def test_household_points_add_up_across_masters(run: ClusterRun, tmp_path: Path) -> None:
    _, purchases = simulated_purchases(seed=9903, count=400, span=timedelta(days=5))
    purchases = [replace(p, consent=ConsentState(True, True, True)) for p in purchases if p.card_id is not None]
    run.store.apply(purchases)
    points = {c: p.points for c, p in run.store.get_many(sorted({str(p.card_id) for p in purchases})).items()}
    client: RedisCluster = run.store.client  # type: ignore[assignment]
    # Three members, each on another master: the household is read from three of them.
    members: dict[str, str] = {}
    for card in sorted(c for c, n in points.items() if n):
        members.setdefault(client.get_node_from_key(run.store.keys_for(card).profile).name, card)
    assert len(members) == len(client.get_primaries())
    cards = sorted(members.values())
    households = tmp_path / "households.csv"
    households.write_text("card_id,household_id\n" + "".join(f"{c},h1\n" for c in cards))
    for view in ("customer", "full"):
        looker = ["--as", "anna", "--reason", "test"] if view == "full" else []  # the full view is audited
        shown = run.cli(
            "profile", cards[0], "--view", view, "--json", *looker, env={"RECEIPTFLOW_HOUSEHOLDS_FILE": str(households)}
        )
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["household"]["points"] == sum(points[c] for c in cards)


def test_a_master_that_lost_the_scripts_gets_them_again_and_nothing_counts_twice(
    run: ClusterRun, redis_cluster: LocalRedisCluster
) -> None:
    # Redis 7 does not replicate scripts: a replica promoted by a failover answers NOSCRIPT. Here one
    # master forgets them (SCRIPT FLUSH) between two batches that touch every master.
    _, purchases = simulated_purchases(seed=9904, count=300, span=timedelta(days=2))
    carded = [p for p in purchases if p.card_id is not None]
    first, second = carded[: len(carded) // 2], carded[len(carded) // 2 :]
    assert run.store.apply_all(first).applied == len(first)
    admin = redis.Redis.from_url(redis_cluster.admin_url(redis_cluster.nodes[1]))
    try:
        assert admin.script_flush()
    finally:
        admin.close()
    client: RedisCluster = run.store.client  # type: ignore[assignment]
    nodes = {client.get_node_from_key(run.store.keys_for(str(p.card_id)).profile).name for p in second}
    assert redis_cluster.nodes[1].endpoint in nodes  # the batch has calls for the master that forgot
    result = run.store.apply_all(second)
    assert (result.applied, result.duplicates) == (len(second), 0)
    assert run.store.apply_all(carded).duplicates == len(carded)


def test_the_web_page_s_sessions_of_a_card_end_together_across_masters(run: ClusterRun) -> None:
    # The page's sessions and their card's list live on different slots: erasure still ends them all.
    store = SessionStore.from_settings(run.settings, b"cluster-web-key-0123456789abcdef")
    card = "4006009009"
    ids = [store.create({"role": "customer", "subject": card, "csrf": "x"}) for _ in range(12)]
    client: RedisCluster = store.client  # type: ignore[assignment]
    assert len({client.get_node_from_key(session_key(i)).name for i in ids}) > 1  # spread over the masters
    assert all(store.load(i) is not None for i in ids)
    assert store.revoke_card(card) == len(ids)
    assert all(store.load(i) is None for i in ids)
