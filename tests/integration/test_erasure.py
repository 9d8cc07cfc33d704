"""Erasure that follows the data, on a real broker, Redis and PostgreSQL, and a real DuckDB sink process.

* An erased card stays erased after ``sink replay --from-beginning`` into a fresh PostgreSQL, and a
  warehouse that held the card before the erasure loses its rows when its sink next runs.
* ``erase`` while ``receiptflow sink run`` holds the DuckDB file refuses before changing anything,
  and completes once the sink is stopped.
* A warehouse that becomes unreachable after the topic record leaves the card erased for every
  reader; running ``erase`` again completes it, with an audit entry per step.
* ``export`` of an erased card lists the topics that may still hold it, with their retention.
* ``erase --record-existing`` puts cards erased before the topic existed on it.
* ``erase`` refuses before any change when Redis or Kafka do not answer or the topics are missing.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import receiptflow.jobs.subject as subject_module
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.erasures import erased_at, erased_cards
from receiptflow.errors import BrokerError, ErasureIncompleteError, ProfileStoreError
from receiptflow.jobs.looks import Looker
from receiptflow.jobs.subject import STEPS, audit_log, erase_card, export_card, steps_done
from receiptflow.models import ConsentChange, ConsentState, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.keys import ERASED_KEY, card_keys
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.router.route import process
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.redis_auth import RedisRole
from receiptflow.sinks import DEFAULT_GROUP, Sink, open_sink, run_sink
from receiptflow.sinks.card_rows import delete_card
from receiptflow.stack import free_port
from receiptflow.topics import TopicNames, create_topics

from .conftest import RedisServer
from .support import env_for, read_all

MakeSettings = Callable[..., Settings]
CODEC = Codec()
POLICY = load_policy()
CARD_TABLES = ("receipts", "receipt_items", "receipt_groups", "consent_changes")
DPO = Looker("dpo", "the card holder's request", "cli", "")  # who exports, for the audit of looks


# --- helpers --------------------------------------------------------------------------------------
def _purchases(seed: int, card: str, count: int = 120) -> tuple[list[Purchase], list[Purchase]]:
    """(the card's purchases, everybody else's): simulated checkouts routed by the pure core, with
    product-data consent so item rows are stored; the busiest simulated card becomes ``card``."""
    sim = Simulator(seed, stores=20, customers=40)
    now = datetime.now(UTC)
    routed = [
        process(c, POLICY, ConsentState(True, True, True) if c.card_id else None, now).customer
        for c in sim.stream(count, now - timedelta(days=2), count / (2 * 86_400))
    ]
    busiest = max(sim.truth.per_card, key=lambda c: sim.truth.per_card[c][0])
    mine = [replace(p, card_id=card) for p in routed if p.card_id == busiest]
    assert len(mine) >= 3
    return mine, [p for p in routed if p.card_id != busiest]


def _send(settings: Settings, purchases: list[Purchase], consents: list[ConsentChange]) -> None:
    topic = TopicNames(settings.kafka.topic_prefix).purchases_customer
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True}))
    for p in purchases:
        producer.produce(topic, key=(p.card_id or p.store_id).encode(), value=CODEC.encode("purchase", p.to_avro()))
    assert producer.flush(30) == 0
    client = RegisterClient(settings)
    for c in consents:
        client.send_consent(c)
    client.flush()


def _load(settings: Settings) -> None:
    """Run the live sink of ``settings`` until it has been idle for a moment."""
    sink = open_sink(settings)
    try:
        run_sink(settings, sink, idle_exit_after=3.0)
    finally:
        sink.close()


def _rows_of(sink: Sink, card: str) -> dict[str, int]:
    p = "%s" if "Postgres" in type(sink).__name__ else "?"
    receipts = f"SELECT receipt_id FROM receipts WHERE card_id = {p}"
    return {
        "receipts": int(sink.warehouse.query(f"SELECT count(*) FROM receipts WHERE card_id = {p}", (card,))[0][0]),
        "receipt_items": int(
            sink.warehouse.query(f"SELECT count(*) FROM receipt_items WHERE receipt_id IN ({receipts})", (card,))[0][0]
        ),
        "consent_changes": int(
            sink.warehouse.query(f"SELECT count(*) FROM consent_changes WHERE card_id = {p}", (card,))[0][0]
        ),
    }


def _warehouse_rows(settings: Settings, card: str) -> dict[str, int]:
    sink = open_sink(settings)
    try:
        return _rows_of(sink, card)
    finally:
        sink.close()


def _card() -> str:
    return "27" + str(uuid.uuid4().int)[:11]  # a card of this test's own: Redis is shared by the session


@pytest.fixture
def new_database(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Creates fresh, empty databases on the session's PostgreSQL server (dropped afterwards)."""
    made: list[str] = []

    def make() -> str:
        name = f"rf_erase_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        made.append(name)
        parts = urlsplit(postgres_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))

    yield make
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        for name in made:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiptflow", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _subject_audit(settings: Settings, subject: str) -> list[dict[str, str]]:
    return [e for e in audit_log(settings) if e.get("subject") == subject]


# --- a replay into a fresh PostgreSQL ---------------------------------------------------------------
def test_an_erased_card_stays_erased_after_a_replay_into_a_fresh_postgresql(
    make_settings: MakeSettings, new_database: Callable[[], str], redis_server: RedisServer
) -> None:
    settings = make_settings(warehouse={"url": new_database()})
    create_topics(settings)
    card = _card()
    mine, others = _purchases(3101, card)
    _send(settings, mine + others, [ConsentChange(card, datetime.now(UTC), True, True, "app")])
    _load(settings)
    # A second warehouse that loaded the card before the erasure (a copy, a restored backup).
    before = settings.model_copy(update={"warehouse": {"url": new_database()}})
    _load(before)
    assert _warehouse_rows(settings, card)["receipts"] == len(mine)
    assert _warehouse_rows(before, card)["receipts"] == len(mine)

    erasure = erase_card(settings, card)
    assert not erasure.resumed and erasure.warehouse_rows["receipts"] == len(mine)
    assert _warehouse_rows(settings, card) == {"receipts": 0, "receipt_items": 0, "consent_changes": 0}

    # A fresh PostgreSQL, filled by `sink replay --from-beginning` from the retained topics, which
    # still hold the card's records: none of them is stored, everybody else's are.
    fresh = settings.model_copy(update={"warehouse": {"url": new_database()}})
    replayed = _cli(fresh, "sink", "replay", "--from-beginning")
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    assert _warehouse_rows(fresh, card) == {"receipts": 0, "receipt_items": 0, "consent_changes": 0}
    sink = open_sink(fresh)
    try:
        stored = int(sink.warehouse.query("SELECT count(*) FROM receipts")[0][0])
        assert stored == len({p.receipt_id for p in others})
        assert sink.warehouse.query("SELECT card_hash FROM erased_cards") == [(erasure.subject,)]
    finally:
        sink.close()

    # The warehouse that held the card before: its sink's next start reads the erased-cards record
    # and deletes the card's rows there too.
    assert _warehouse_rows(before, card)["receipts"] == len(mine)
    _load(before)
    assert _warehouse_rows(before, card) == {"receipts": 0, "receipt_items": 0, "consent_changes": 0}

    # A profile store that never saw the erasure (a new Redis that `profiles rebuild` fills) gets the
    # erased-cards record first, so the live scripts keep the card out there as well.
    redis.Redis.from_url(redis_server.role_url(RedisRole.ADMIN, 11)).flushdb()
    target = redis_server.role_url(RedisRole.WRITER, 11)
    rebuilt = _cli(settings, "profiles", "rebuild", "--redis-url", target)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    # The card's marker (which the scripts check) from the topic's hash alone, and the audit list.
    assert redis.Redis.from_url(target).exists(card_keys(erasure.subject).erased)
    assert redis.Redis.from_url(redis_server.role_url(RedisRole.ADMIN, 11)).sismember(ERASED_KEY, erasure.subject)

    # Export: nothing in any store, but the topics still hold the card, until their retention.
    doc = export_card(settings, card, who=DPO)
    assert doc["profile"] is None and all(rows == [] for rows in doc["warehouse"].values())
    assert doc["held"] is True and doc["erasure"]["complete"] is True
    assert doc["erasure"]["erased_at"] == erasure.at.isoformat()
    names = TopicNames(settings.kafka.topic_prefix)
    topics = {t["topic"]: t for t in doc["topics"]}
    assert set(topics) == {
        names.checkouts,
        names.consents,
        names.purchases_customer,
        names.purchases_marketing,
        names.checkouts_dlq,
        names.retractions,
    }
    purchases = topics[names.purchases_customer]
    assert purchases["retention_ms"] == 30 * 86_400_000 and purchases["cleanup_policy"] == "delete"
    until = erasure.at + timedelta(milliseconds=purchases["retention_ms"] + purchases["segment_ms"])
    assert purchases["may_hold_until"] == until.isoformat()
    consents = topics[names.consents]
    assert consents["cleanup_policy"] == "compact" and consents["max_compaction_lag_ms"] == 7 * 86_400_000
    assert f"topic:{names.purchases_customer}" in doc["held_in"]
    assert not any(h.startswith(("profile", "warehouse")) for h in doc["held_in"])

    # A card that was not erased: its topics are listed with their retention, counted from now.
    other = next(p.card_id for p in others if p.card_id is not None)
    live = export_card(settings, other, who=DPO)
    assert live["held"] is True and live["erasure"] is None and live["warehouse"]["receipts"]
    assert {t["topic"] for t in live["topics"]} == set(topics)
    assert {t["topic"]: t["may_hold_until"] for t in live["topics"]}[names.consents] is None


# --- erase while the DuckDB sink runs ----------------------------------------------------------------
def _sink_has_written(settings: Settings) -> bool:
    """Whether the live sink has stored a batch (it mirrors its positions to Kafka after each one)."""
    topic = TopicNames(settings.kafka.topic_prefix).purchases_customer
    consumer = Consumer(settings.kafka_config(**{"group.id": DEFAULT_GROUP, "enable.auto.commit": False}))
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(settings.kafka.topic_partitions)], timeout=10
        )
        return any(tp.offset >= 0 for tp in found)
    except KafkaException:  # a broker just started may not have its group coordinator yet: ask again
        return False
    finally:
        consumer.close()


def test_erase_while_the_duckdb_sink_runs_refuses_before_changing_anything(settings: Settings) -> None:
    create_topics(settings)
    card = _card()
    mine, others = _purchases(3202, card)
    _send(settings, mine + others, [ConsentChange(card, datetime.now(UTC), True, True, "app")])
    store = RedisProfileStore.from_settings(settings)
    store.apply(mine)
    assert store.get(card) is not None
    subject = store.erased_hash(card)

    settings.local.data_dir.mkdir(parents=True, exist_ok=True)
    log = settings.local.data_dir / "sink.log"
    with log.open("wb") as out:
        sink = subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "sink", "run"],
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Once it has stored a batch the sink holds the file (and keeps it until it stops).
        deadline = time.monotonic() + 90
        while not _sink_has_written(settings):
            assert sink.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the sink never stored a batch"
            time.sleep(0.5)

        refused = _cli(settings, "erase", card, "--yes")
        assert refused.returncode == 1
        message = " ".join(refused.stderr.split())  # the console wraps long lines at its width
        assert "error: erase refused, nothing changed: the DuckDB warehouse is in use" in message, message
        assert "stop the sink, run erase again" in message
        assert "Traceback" not in refused.stderr
        # Nothing anywhere: the profile is whole, no record on the topic, no audit entry.
        assert store.get(card) is not None and store.client.exists(store.keys_for(card).seen) == 1
        assert not store.client.exists(store.keys_for(card).erased)
        assert subject not in erased_cards(settings)
        assert _subject_audit(settings, subject) == []
    finally:
        sink.terminate()
        sink.wait(timeout=60)
    assert sink.returncode == 0, log.read_text()[-3000:]
    assert _warehouse_rows(settings, card)["receipts"] == len(mine)

    # The sink stopped: the erasure goes through, every step audited.
    done = _cli(settings, "erase", card, "--yes")
    assert done.returncode == 0, done.stderr
    assert store.get(card) is None and store.client.exists(store.keys_for(card).erased)
    assert erased_at(settings, subject) is not None
    assert _warehouse_rows(settings, card) == {"receipts": 0, "receipt_items": 0, "consent_changes": 0}
    assert [e["step"] for e in _subject_audit(settings, subject)] == list(STEPS)


# --- a failure between steps, then a re-run --------------------------------------------------------
def test_a_failure_after_the_topic_record_is_completed_by_running_erase_again(
    make_settings: MakeSettings, new_database: Callable[[], str], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(warehouse={"url": new_database()})
    create_topics(settings)
    card = _card()
    mine, others = _purchases(3303, card)
    _send(settings, mine + others, [ConsentChange(card, datetime.now(UTC), True, True, "app")])
    _load(settings)
    store = RedisProfileStore.from_settings(settings)
    store.apply(mine)
    subject = store.erased_hash(card)
    database = urlsplit(str(settings.warehouse.url)).path.lstrip("/")
    real_delete = subject_module.delete_card

    def warehouse_goes_away(sink: Any, *args: Any) -> dict[str, int]:
        # The server drops the eraser's connection just as the warehouse step begins.
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        return real_delete(sink, *args)

    monkeypatch.setattr(subject_module, "delete_card", warehouse_goes_away)
    with pytest.raises(ErasureIncompleteError, match=r"stopped at step 'warehouse'.*run erase again"):
        erase_card(settings, card)
    monkeypatch.undo()

    # Half way, but erased for every reader: the topic has it, Redis too; the warehouse still has rows.
    first = erased_at(settings, subject)
    assert first is not None
    assert store.get(card) is None and store.client.exists(store.keys_for(card).profile) == 0
    assert _warehouse_rows(settings, card)["receipts"] == len(mine)
    assert [e["step"] for e in _subject_audit(settings, subject)] == ["record", "retraction", "profile"]
    assert export_card(settings, card, who=DPO)["erasure"]["complete"] is False

    again = _cli(settings, "erase", card, "--yes")
    assert again.returncode == 0, again.stderr
    assert "completed the erasure recorded at" in " ".join(again.stdout.split())
    assert _warehouse_rows(settings, card) == {"receipts": 0, "receipt_items": 0, "consent_changes": 0}
    audit = _subject_audit(settings, subject)
    assert [e["step"] for e in audit] == [
        *("record", "retraction", "profile"),
        *("record", "retraction", "profile", "warehouse", "consents"),
    ]
    assert {e["erased_at"] for e in audit} == {first.isoformat()}  # the resumed run keeps the first time
    assert len({e["run"] for e in audit}) == 2
    assert "receipts=" + str(len(mine)) in audit[6]["detail"]
    assert set(steps_done(audit, subject)) == set(STEPS)
    assert not any(card in value for e in audit_log(settings) for value in e.values())
    records = read_all(settings, TopicNames(settings.kafka.topic_prefix).consents_erased)
    assert [m.key() for m in records] == [subject.encode()]  # recorded once, by the first run
    assert export_card(settings, card, who=DPO)["erasure"]["complete"] is True


# --- cards erased before the topic existed --------------------------------------------------------
def test_earlier_erasures_are_put_on_the_topic(make_settings: MakeSettings, redis_server: RedisServer) -> None:
    # A Redis database of its own: the session's default one holds other tests' erased-cards records.
    redis.Redis.from_url(redis_server.role_url(RedisRole.ADMIN, 12)).flushdb()
    parts = urlsplit(redis_server.url)
    settings = make_settings(
        redis={"url": urlunsplit((parts.scheme, parts.netloc, "/12", parts.query, parts.fragment))}
    )
    create_topics(settings)
    # As an earlier `erase` did it: with the login that may write the erased-cards record.
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    in_redis, in_warehouse = _card(), _card()
    earlier = datetime.now(UTC) - timedelta(days=30)
    # As the erase of an earlier version left them: in rf:erased, or in the warehouse's erased_cards.
    store.client.sadd(ERASED_KEY, store.erased_hash(in_redis))
    sink = open_sink(settings)
    try:
        delete_card(sink.warehouse, in_warehouse, sink.card_hash(in_warehouse), earlier)
    finally:
        sink.close()
    assert erased_cards(settings) == {}

    done = _cli(settings, "erase", "--record-existing")
    assert done.returncode == 0, done.stderr
    assert "recorded 2 earlier erasure(s)" in done.stdout
    on_topic = erased_cards(settings)
    assert set(on_topic) == {store.erased_hash(in_redis), store.erased_hash(in_warehouse)}
    assert on_topic[store.erased_hash(in_warehouse)] == earlier
    assert [e["step"] for e in _subject_audit(settings, store.erased_hash(in_warehouse))] == ["record"]
    again = _cli(settings, "erase", "--record-existing")
    assert again.returncode == 0 and "recorded 0 earlier" in again.stdout


# --- an unreachable store ---------------------------------------------------------------------------
def test_erase_refuses_before_any_change_when_redis_or_kafka_do_not_answer(
    settings: Settings, make_settings: MakeSettings
) -> None:
    create_topics(settings)
    card = _card()
    subject = RedisProfileStore.from_settings(settings).erased_hash(card)
    no_redis = settings.model_copy(update={"redis": {"url": f"redis://127.0.0.1:{free_port()}/0"}})
    with pytest.raises(ProfileStoreError, match="erase refused, nothing changed: Redis does not answer"):
        erase_card(no_redis, card)
    no_kafka = settings.model_copy(update={"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"}})
    with pytest.raises(BrokerError, match=r"erase refused, nothing changed: Kafka at .* does not answer"):
        erase_card(no_kafka, card)
    no_topic = make_settings(
        local={"data_dir": settings.local.data_dir}
    )  # another prefix: its topics were never created
    with pytest.raises(BrokerError, match=r"erase refused, nothing changed: topics .* do not exist"):
        erase_card(no_topic, card)
    # Nothing was recorded anywhere.
    assert subject not in erased_cards(settings)
    assert _subject_audit(settings, subject) == []
