"""Profiles on real servers: the Redis script equals the pure fold; the faust agents on the real broker
apply duplicated, shuffled traffic exactly once and withdraw product data within a second.

The property test drives the session's Redis directly with hypothesis-drawn purchases and consent
changes and compares every profile read back with the pure fold of the same sequence. The other
tests run the profile worker as its own process (``python -m receiptflow process --role profiles``)
against the session's Kafka broker, as in production.
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
from typing import Any

import pytest
import redis
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import DeadLetter
from receiptflow.erasures import record_erasure
from receiptflow.errors import ValidationError
from receiptflow.jobs.subject import audit_log
from receiptflow.metrics import Metrics
from receiptflow.models import ConsentChange, ConsentState, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.fold import fold
from receiptflow.processors.profiles.keys import ERASED_KEY
from receiptflow.processors.profiles.rules import Rules, load_rules
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.producers.client import RegisterClient
from receiptflow.redis_auth import RedisRole
from receiptflow.sinks import open_sink, run_sink
from receiptflow.topics import TopicNames, create_topics

from ..unit.profile_strategies import CARDS, purchase_lists
from .conftest import KafkaServer, RedisServer
from .support import env_for, opened_letters, read_all, send_purchases, simulated_purchases, start_profiles, stop

CODEC = Codec()
POLICY = load_policy()
SHIPPED = load_rules()
WIDE = replace(SHIPPED, dedup_ms=30 * 365 * 86_400_000)


# --- the Redis script equals the pure fold ---------------------------------------------------------
@st.composite
def event_sequences(draw: st.DrawFn, span_days: int) -> list[Purchase | ConsentChange]:
    purchases = draw(purchase_lists(span_days=span_days))
    events: list[Purchase | ConsentChange] = (
        list(purchases + draw(st.lists(st.sampled_from(purchases)))) if purchases else []
    )
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    for _ in range(draw(st.integers(0, 4))):
        if purchases and draw(st.booleans()):
            # At exactly a purchase's instant, of its card: the tie goes to the stricter side. Often
            # with a withdrawal just before it, where a grant at the instant must not count.
            tied = draw(st.sampled_from(purchases))
            card = tied.card_id or CARDS[0]
            events.append(ConsentChange(card, tied.event_time, draw(st.booleans()), True))
            if draw(st.booleans()):
                events.append(ConsentChange(card, tied.event_time - timedelta(seconds=1), False, True))
            continue
        back = timedelta(seconds=draw(st.integers(0, span_days * 86_400)))
        events.append(ConsentChange(draw(st.sampled_from(CARDS)), now - back, draw(st.booleans()), True))
    # Both sides apply the same order, any order.
    return draw(st.permutations(events))


@pytest.mark.parametrize(
    ("rules", "span_days"),
    # The short window puts many buckets at its edge: days dropped inside a week field and whole fields.
    [(WIDE, 20 * 365), (SHIPPED, 2 * 365), (replace(WIDE, keep_days=5), 30)],
    ids=["wide", "shipped", "short-window"],
)
def test_redis_profiles_equal_the_pure_fold(redis_server: RedisServer, rules: Rules, span_days: int) -> None:
    # As the profile agent runs: the profile writer's login.
    client = redis.Redis.from_url(redis_server.role_url(RedisRole.WRITER), decode_responses=True)
    store = RedisProfileStore(client, rules, erasure_salt=b"test-erasure-salt-0123456789")

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(event_sequences(span_days), st.randoms())
    def check(events: list[Purchase | ConsentChange], rnd: random.Random) -> None:
        client.delete(*[k for c in CARDS for k in store.keys_for(c).data])
        # Same order on both sides, cut into pipelined batches of random size.
        i = 0
        while i < len(events):
            if isinstance(events[i], ConsentChange):
                store.apply_consents([events[i]])  # type: ignore[list-item]
                i += 1
                continue
            j = i
            while j < len(events) and j - i < rnd.randint(1, 8) and isinstance(events[j], Purchase):
                j += 1
            store.apply([e for e in events[i:j] if isinstance(e, Purchase)])
            i = j
        expected = fold(events, rules)
        assert store.get_many(CARDS) == expected

    check()


@pytest.mark.parametrize("keep_days", [5, 12])
def test_day_buckets_at_the_edge_of_a_short_window_equal_the_fold(redis_server: RedisServer, keep_days: int) -> None:
    # Two months of a fleet's traffic folded with a window of a few days, so that buckets fall out of
    # it all the time: single days inside a week field, whole week fields, in shuffled order.
    rules = replace(WIDE, keep_days=keep_days)
    client = redis.Redis.from_url(redis_server.role_url(RedisRole.WRITER), decode_responses=True)
    store = RedisProfileStore(client, rules, erasure_salt=b"test-erasure-salt-0123456789")
    _, purchases = simulated_purchases(seed=4404, count=3000, span=timedelta(days=60))
    cards = sorted({p.card_id for p in purchases if p.card_id is not None})
    rnd = random.Random(keep_days)
    for _ in range(3):
        client.delete(*[k for c in cards for k in store.keys_for(c).data])
        rnd.shuffle(purchases)
        for i in range(0, len(purchases), 500):
            store.apply(purchases[i : i + 500])
        assert store.get_many(cards) == fold(purchases, rules)
        assert any(len(p.days) > 1 for p in store.get_many(cards).values())
    client.delete(*[k for c in cards for k in store.keys_for(c).data])


# --- the profile worker on the real broker -----------------------------------------------------------
@dataclass
class ProfileWorker:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log: Path
    store: RedisProfileStore
    admin_url: str

    def unerase(self, card: str) -> None:
        """Take ``card`` off the erased-cards record (test setup: no role may do that)."""
        admin = redis.Redis.from_url(self.admin_url)
        try:
            admin.srem(ERASED_KEY, self.store.erased_hash(card))
            admin.delete(self.store.keys_for(card).erased)
        finally:
            admin.close()

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"profile worker exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; worker log tail:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "receiptflow", *args],
            env=env_for(self.settings),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def worker(
    kafka_server: KafkaServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProfileWorker]:
    run = uuid.uuid4().hex[:8]
    data = tmp_path_factory.mktemp("profiles")
    s = Settings(
        **redis_server.role_settings(),
        **kafka_server.auth_settings(),
        kafka={"bootstrap_servers": kafka_server.bootstrap, "topic_prefix": f"prof-{run}.", "topic_partitions": 3},
        redis={"url": redis_server.url},
        local={"data_dir": data / "data"},
        warehouse={"url": f"duckdb:///{data / 'warehouse.duckdb'}"},
        router={"id": f"prof-{run}"},
        metrics={"port": 0},
    )
    create_topics(s)
    s.local.data_dir.mkdir(parents=True, exist_ok=True)
    log = s.local.data_dir / "profiles.log"
    proc = start_profiles(s, log)
    yield ProfileWorker(s, proc, log, RedisProfileStore.from_settings(s), redis_server.admin_url)
    stop(proc)


def test_duplicated_and_shuffled_traffic_equals_the_ground_truth(worker: ProfileWorker) -> None:
    # Four weeks of traffic: within the dedup horizon, so any delivery order must give the same profiles.
    sim, purchases = simulated_purchases(seed=7707, count=1500, span=timedelta(days=28))
    rnd = random.Random(7707)
    deliveries = purchases + [p for p in purchases if rnd.random() < 0.10]
    rnd.shuffle(deliveries)
    assert len(deliveries) > len(purchases) * 1.05
    cards = sorted(sim.truth.per_card)
    worker.store.client.delete(*[k for c in cards for k in worker.store.keys_for(c).data])

    send_purchases(worker.settings, deliveries)
    carded = sum(v[0] for v in sim.truth.per_card.values())
    worker.wait(
        lambda: sum(p.visits for p in worker.store.get_many(cards).values()) >= carded, 120, "every visit in Redis"
    )
    time.sleep(1.0)  # anything still in flight (a duplicate counted twice) would show now

    profiles = worker.store.get_many(cards)
    assert {c: (p.visits, p.spend_cents) for c, p in profiles.items()} == {
        c: (v[0], v[1]) for c, v in sim.truth.per_card.items()
    }
    # The live path is the pure fold, field for field (mix, nutrition, buckets, points, dedup set).
    assert profiles == fold(purchases, worker.store.rules)
    assert any(p.nutrition for p in profiles.values()) and any(p.groups for p in profiles.values())


def _view(worker: ProfileWorker, card: str, view: str) -> dict[str, Any]:
    result = worker.cli("profile", card, "--view", view, "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_consent_withdrawal_removes_product_data_within_a_second(worker: ProfileWorker) -> None:
    sim, purchases = simulated_purchases(seed=8808, count=200, span=timedelta(days=3))
    card = next(c for c in sim.truth.per_card if any(p.card_id == c and p.items for p in purchases))
    mine = [replace(p, consent=ConsentState(True, True, True)) for p in purchases if p.card_id == card]
    worker.store.client.delete(*worker.store.keys_for(card).data)
    worker.unerase(card)
    send_purchases(worker.settings, mine)
    worker.wait(lambda: (p := worker.store.get(card)) is not None and p.visits == len(mine), 60, "the card's purchases")
    before = worker.store.get(card)
    assert before is not None and before.nutrition and before.groups
    marketing = _view(worker, card, "marketing")
    assert marketing["product_data_consent"] is True and marketing["product_group_mix"]

    client = RegisterClient(worker.settings)
    client.send_consent(ConsentChange(card, datetime.now(UTC), False, True, "app"))
    client.flush()
    acked = time.monotonic()
    worker.wait(lambda: not worker.store.get(card).has_product_data(), 5, "product data to be deleted")  # type: ignore[union-attr]
    elapsed = time.monotonic() - acked
    assert elapsed < 1.0, f"product-derived fields were still there {elapsed:.2f}s after the consent event"

    after = worker.store.get(card)
    assert after is not None
    assert (after.visits, after.spend_cents, after.points) == (before.visits, before.spend_cents, before.points)
    raw = worker.store.client.hgetall(worker.store.keys_for(card).profile)
    assert not [k for k in raw if str(k).startswith("P")]
    marketing = _view(worker, card, "marketing")
    assert marketing["product_data_consent"] is False
    assert not {"product_group_mix", "affinities"} & set(marketing)
    assert "grocery_segment" not in marketing["classes"]
    customer = _view(worker, card, "customer")
    assert customer["nutrition_and_climate"] == {} and customer["product_group_mix"] == {}


def test_a_malformed_consent_record_is_dead_lettered_and_the_withdrawal_behind_it_applied(
    worker: ProfileWorker,
) -> None:
    sim, purchases = simulated_purchases(seed=6606, count=200, span=timedelta(days=3))
    card = next(c for c in sim.truth.per_card if any(p.card_id == c and p.items for p in purchases))
    mine = [replace(p, consent=ConsentState(True, True, True)) for p in purchases if p.card_id == card]
    store = worker.store
    store.client.delete(*store.keys_for(card).data)
    send_purchases(worker.settings, mine)
    worker.wait(lambda: (p := store.get(card)) is not None and p.visits == len(mine), 60, "the card's purchases")
    assert store.get(card).has_product_data()  # type: ignore[union-attr]

    # On one partition of `consents`: a consent change in JSON instead of Avro, then a withdrawal.
    names = TopicNames(worker.settings.kafka.topic_prefix)
    bad = json.dumps({"card_id": card, "product_data_marketing": True}).encode()
    withdrawal = ConsentChange(card, datetime.now(UTC), False, True, "app")
    offsets: list[int] = []
    producer = Producer(worker.settings.kafka_config(**{"enable.idempotence": True}))
    for value in (bad, CODEC.encode("consent_change", withdrawal.to_avro())):
        producer.produce(
            names.consents, value, card.encode(), 1, on_delivery=lambda err, msg: offsets.append(msg.offset())
        )
    assert producer.flush(30) == 0 and len(offsets) == 2
    acked = time.monotonic()
    worker.wait(lambda: not store.get(card).has_product_data(), 5, "the withdrawal behind the bad record")  # type: ignore[union-attr]
    elapsed = time.monotonic() - acked
    assert elapsed < 1.0, f"product-derived fields were still there {elapsed:.2f}s after the withdrawal"
    assert worker.proc.poll() is None

    def dead_letters() -> list[DeadLetter]:
        return [d for d in opened_letters(worker.settings, idle=1.0) if d.original_value == bad]

    deadline = time.monotonic() + 30
    while not (letters := dead_letters()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [(d.processor, d.reason, d.source_topic, d.source_partition, d.source_offset) for d in letters] == [
        (f"{worker.settings.router.id}-profiles", "undecodable", names.consents, 1, offsets[0])
    ]
    assert letters[0].original_key == card.encode() and letters[0].message

    # The warehouse sink reads the same partition: it dead-letters the bad record too, stores the
    # withdrawal in its consent audit, and keeps running; started again, it does not re-read it.
    metrics = Metrics()
    with open_sink(worker.settings) as sink:
        stats = run_sink(worker.settings, sink, topic=names.consents, idle_exit_after=3, metrics=metrics)
        assert stats.inserted.consent_changes >= 1
        audit = sink.warehouse.query(
            "SELECT product_data_marketing, source_offset FROM consent_changes WHERE card_id = ?", (card,)
        )
        assert (False, offsets[1]) in [(bool(a), int(b)) for a, b in audit]
        assert sink.committed_offsets(names.consents)[1] > offsets[1]
    assert metrics.registry.get_sample_value("receiptflow_dead_letters_total", {"reason": "undecodable"}) == 1.0
    with open_sink(worker.settings) as sink:
        again = run_sink(worker.settings, sink, topic=names.consents, idle_exit_after=2)
    assert again.records == 0
    by_sink = [d for d in dead_letters() if d.processor.startswith("receiptflow-sink-")]
    assert [(d.reason, d.source_partition, d.source_offset) for d in by_sink] == [("undecodable", 1, offsets[0])]


def _drained(worker: ProfileWorker, tag: str) -> Callable[[], bool]:
    """Send a marker behind everything already on each partition of both topics; the predicate is
    true once every marker is in Redis, i.e. the worker has consumed all that was sent before it."""
    names = TopicNames(worker.settings.kafka.topic_prefix)
    producer = Producer(worker.settings.kafka_config())
    markers = []
    purchase = simulated_purchases(seed=1, count=40, span=timedelta(hours=1))[1]
    template = next(p for p in purchase if p.card_id is not None)
    parts = producer.list_topics(timeout=10).topics
    for partition in parts[names.purchases_customer].partitions:
        card = f"marker-{tag}-p{partition}"
        p = replace(template, card_id=card, receipt_id=f"marker-{tag}-{partition}")
        producer.produce(names.purchases_customer, CODEC.encode("purchase", p.to_avro()), card.encode(), partition)
        markers.append((card, "visits"))
    for partition in parts[names.consents].partitions:
        card = f"marker-{tag}-c{partition}"
        change = ConsentChange(card, datetime.now(UTC), True, True, "app")
        producer.produce(names.consents, CODEC.encode("consent_change", change.to_avro()), card.encode(), partition)
        markers.append((card, "consent"))
    assert producer.flush(30) == 0

    def done() -> bool:
        got = worker.store.get_many([c for c, _ in markers])
        return all(c in got and (got[c].visits if kind == "visits" else got[c].consent) for c, kind in markers)

    return done


def test_export_erase_export_and_a_replay_does_not_bring_the_card_back(worker: ProfileWorker) -> None:
    sim, purchases = simulated_purchases(seed=9909, count=300, span=timedelta(days=5))
    card = max(sim.truth.per_card, key=lambda c: sim.truth.per_card[c][0])
    mine = [replace(p, consent=ConsentState(True, True, True)) for p in purchases if p.card_id == card]
    change = ConsentChange(card, datetime.now(UTC), True, True, "app")
    store = worker.store
    store.client.delete(*store.keys_for(card).data)
    worker.unerase(card)
    send_purchases(worker.settings, mine)
    client = RegisterClient(worker.settings)
    client.send_consent(change)
    client.flush()
    worker.wait(lambda: (p := store.get(card)) is not None and p.visits == len(mine), 60, "the card's profile")
    # The warehouse sink loads the topics (and stops when idle), so the card has rows there too.
    sink = open_sink(worker.settings)
    try:
        run_sink(worker.settings, sink, idle_exit_after=3.0)
    finally:
        sink.close()

    first = json.loads(worker.cli("export", card, "--as", "dpo", "--reason", "test").stdout)
    assert first["held"] is True
    assert first["profile"]["visits"] == len(mine)
    assert sorted(r["receipt_id"] for r in first["warehouse"]["receipts"]) == sorted(p.receipt_id for p in mine)
    assert len(first["warehouse"]["receipt_items"]) == sum(len(p.items) for p in mine)
    assert [c["product_data_marketing"] for c in first["consent_history"]] == [True]

    erased = worker.cli("erase", card, "--yes")
    assert erased.returncode == 0, erased.stderr
    second = json.loads(worker.cli("export", card, "--as", "dpo", "--reason", "test").stdout)
    assert second["profile"] is None and second["consent_history"] == []
    assert all(rows == [] for rows in second["warehouse"].values())
    # No store holds it, but the topics do until their retention: "held" says so, with until when.
    names = TopicNames(worker.settings.kafka.topic_prefix)
    assert second["held"] is True
    assert {t["topic"] for t in second["topics"]} >= {names.checkouts, names.purchases_customer, names.consents}
    assert all(h.startswith("topic:") for h in second["held_in"])
    assert second["erasure"]["complete"] is True and second["erasure"]["subject"] == store.erased_hash(card)

    audit = [e for e in audit_log(worker.settings) if e["subject"] == store.erased_hash(card)]
    assert [e["step"] for e in audit] == ["record", "retraction", "profile", "warehouse", "consents"]
    assert "receipts=" + str(len(mine)) in audit[3]["detail"]
    assert not any(card in value for entry in audit_log(worker.settings) for value in entry.values())
    tombstones = [
        m
        for m in read_all(worker.settings, TopicNames(worker.settings.kafka.topic_prefix).consents)
        if m.key() == card.encode()
    ]
    assert tombstones and tombstones[-1].value() is None

    # Replay the old events: the live path must not bring the card back. The registers' client refuses
    # the consent change now, so it is sent past it, as an old register would.
    send_purchases(worker.settings, mine)
    with pytest.raises(ValidationError, match="erased_card"):
        client.send_consent(change)
    raw = Producer(worker.settings.kafka_config(**{"enable.idempotence": True}))
    consents = TopicNames(worker.settings.kafka.topic_prefix).consents
    raw.produce(consents, key=card.encode(), value=CODEC.encode("consent_change", change.to_avro()))
    assert raw.flush(30) == 0
    worker.wait(_drained(worker, uuid.uuid4().hex[:6]), 60, "the replay to be consumed")
    assert store.get(card) is None
    assert store.client.exists(*store.keys_for(card).data) == 0
    assert json.loads(worker.cli("export", card, "--as", "dpo", "--reason", "test").stdout)["profile"] is None

    # Nor the warehouse: the live sink reads the re-sent records, and a replay of the retained topics
    # from the beginning reads the card's original ones again; neither stores a row of the card.
    sink = open_sink(worker.settings)
    try:
        stats = run_sink(worker.settings, sink, idle_exit_after=3.0)
        assert stats.records >= len(mine) + 1
        # New rows: only the drain markers, one purchase and one consent change per partition.
        markers = worker.settings.kafka.topic_partitions
        assert (stats.inserted.receipts, stats.inserted.consent_changes) == (markers, markers)
        assert sink.warehouse.query("SELECT card_hash FROM erased_cards") == [(store.erased_hash(card),)]
    finally:
        sink.close()
    replayed = worker.cli("sink", "replay", "--from-beginning")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed" in replayed.stdout and " 0 receipts" in replayed.stdout
    third = json.loads(worker.cli("export", card, "--as", "dpo", "--reason", "test").stdout)
    assert third["profile"] is None
    assert all(rows == [] for rows in third["warehouse"].values()) and third["consent_history"] == []
    sink = open_sink(worker.settings)
    try:
        # Other cards' rows (the drain markers at least) are stored: only the erased card is left out.
        stored = {str(r) for (r,) in sink.warehouse.query("SELECT receipt_id FROM receipts")}
        assert any(r.startswith("marker-") for r in stored)
        assert card not in {c for (c,) in sink.warehouse.query("SELECT card_id FROM receipts")}
        assert stored.isdisjoint(p.receipt_id for p in mine)
    finally:
        sink.close()
    assert len([e for e in audit_log(worker.settings) if e["subject"] == store.erased_hash(card)]) == len(audit)


def test_a_record_on_the_purchases_topic_that_is_not_a_purchase_is_dead_lettered_and_the_agent_goes_on(
    worker: ProfileWorker,
) -> None:
    """Issue 15: the agent crashed on such a record, and faust's restart read it again, for ever."""
    sim, purchases = simulated_purchases(seed=6607, count=200, span=timedelta(days=3))
    card = next(iter(sim.truth.per_card))
    mine = [p for p in purchases if p.card_id == card]
    store = worker.store
    store.client.delete(*store.keys_for(card).data)
    names = TopicNames(worker.settings.kafka.topic_prefix)
    junk = b"\x00\x00\x00\x00\x03" + b"\xff" * 12  # framed as a purchase, but no purchase body
    offsets: list[int] = []
    producer = Producer(worker.settings.kafka_config(**{"enable.idempotence": True}))
    producer.produce(
        names.purchases_customer, junk, card.encode(), 2, on_delivery=lambda e, m: offsets.append(m.offset())
    )
    assert producer.flush(30) == 0
    send_purchases(worker.settings, mine)  # behind it, on every partition
    worker.wait(lambda: (p := store.get(card)) is not None and p.visits == len(mine), 60, "the purchases behind it")
    assert worker.proc.poll() is None

    deadline = time.monotonic() + 30
    while not (letters := [d for d in opened_letters(worker.settings, idle=1.0) if d.original_value == junk]):
        assert time.monotonic() < deadline, "no dead letter for the record"
        time.sleep(0.2)
    assert [(d.processor, d.reason, d.source_topic, d.source_partition, d.source_offset) for d in letters] == [
        (f"{worker.settings.router.id}-profiles", "undecodable", names.purchases_customer, 2, offsets[0])
    ]


def test_the_agent_follows_the_erased_cards_topic_into_its_store(worker: ProfileWorker) -> None:
    """A card erased on the topic is kept out of a profile store that never saw the erasure."""
    sim, purchases = simulated_purchases(seed=6608, count=120, span=timedelta(days=2))
    card = next(iter(sim.truth.per_card))
    mine = [p for p in purchases if p.card_id == card]
    store = worker.store
    subject = store.erased_hash(card)
    worker.unerase(card)
    store.client.delete(*store.keys_for(card).data)
    record_erasure(worker.settings, subject, datetime.now(UTC))  # as `erase` records it, first of all
    # The agent knows the topic's hash alone: it sets the card's marker (what the scripts check).
    worker.wait(lambda: bool(store.client.exists(store.keys_for(card).erased)), 10, "the erasure in the profile store")
    marker = next(p for p in purchases if p.card_id not in (None, card))
    worker.unerase(str(marker.card_id))
    store.client.delete(*store.keys_for(str(marker.card_id)).data)
    # The card's purchases, then another card's under the same key (so on the same partition, behind
    # them): once that one shows in its profile, the agent has read the erased card's purchases.
    topic = TopicNames(worker.settings.kafka.topic_prefix).purchases_customer
    producer = Producer(worker.settings.kafka_config(**{"enable.idempotence": True}))
    for p in [*mine, marker]:
        producer.produce(topic, key=card.encode(), value=CODEC.encode("purchase", p.to_avro()))
    assert producer.flush(30) == 0
    worker.wait(lambda: store.get(str(marker.card_id)) is not None, 60, "a purchase sent behind the card's")
    assert store.get(card) is None


def test_the_agent_does_not_ask_for_a_topic_that_is_not_there(worker: ProfileWorker) -> None:
    """faust's leader election wants a topic of its own (``<app>-__assignor-__leader``), which neither
    ``topics create`` nor the agent (topics come from the catalogue) makes; nothing here runs on the
    leader alone, so the agent goes without it, and logs no "not found" on each metadata refresh."""
    sim, purchases = simulated_purchases(seed=6609, count=20, span=timedelta(days=1))
    card = next(iter(sim.truth.per_card))
    worker.unerase(card)
    worker.store.client.delete(*worker.store.keys_for(card).data)
    send_purchases(worker.settings, [p for p in purchases if p.card_id == card])
    worker.wait(lambda: worker.store.get(card) is not None, 60, "the card's purchases in its profile")
    log = worker.log.read_text(errors="replace")
    assert "__assignor-__leader" not in log and "missing topic" not in log, log[-3000:]
