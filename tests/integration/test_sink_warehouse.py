"""The warehouse sink end to end: a real broker, a real DuckDB file and a real PostgreSQL server.

Purchases are produced (encoded with the codec) to a fresh topic; ``run_sink`` consumes them into
each warehouse. Counts and per-chain sums must equal what was committed to Kafka — an aborted
producer transaction must not show up — and running the sink again, after a crash, or replaying the
whole topic under another consumer group must change nothing. ``receiptflow sink replay`` restores
rows that went missing, the analytics cells among them; a record on ``purchases.analytics`` that is
not a cell (an anonymous basket of before the cells) is dead-lettered and the sink goes on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from receiptflow.cells import Cell, Window
from receiptflow.codec import Codec, SchemaCatalog, schema_id_of
from receiptflow.config import Settings
from receiptflow.dlq import DeadLetter, iter_dead_letters
from receiptflow.errors import WarehouseError
from receiptflow.metrics import Metrics
from receiptflow.models import ConsentChange, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import Routed, process
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import (
    DEFAULT_GROUP,
    RowCounts,
    Sink,
    SinkRecord,
    cell_counts,
    open_sink,
    run_sink,
    warehouse_counts,
)
from receiptflow.sinks.duckdb import analytics_path_for
from receiptflow.sinks.migrate import migrations
from receiptflow.sinks.replay import replay_group, replay_warehouse
from receiptflow.sinks.runner import duckdb_path
from receiptflow.sinks.tables import CELLS
from receiptflow.topics import TopicNames, create_topics

from ..unit.sinks.test_contract import NOW, K, analytics_baskets, expected_counts, purchases, released, table_count
from .support import env_for, opened_letters, read_all

MakeSettings = Callable[..., Settings]
# The fields of an analytics cell record, which are also the first columns of analytics.cells.
CELL_FIELDS = CELLS.columns[:-3]


@pytest.fixture(params=["duckdb", "postgres"])
def settings(request: pytest.FixtureRequest, make_settings: MakeSettings, tmp_path: Path) -> Settings:
    """Settings on the session broker (fresh topic prefix) with an empty warehouse of each kind."""
    duckdb_url = f"duckdb:///{tmp_path / 'dw.duckdb'}"
    url = duckdb_url if request.param == "duckdb" else request.getfixturevalue("pg_database")
    s = make_settings(warehouse={"url": url})
    create_topics(s)
    return s


@pytest.fixture
def duckdb_settings(make_settings: MakeSettings, tmp_path: Path) -> Settings:
    """For runner behaviour that does not depend on the warehouse kind."""
    s = make_settings(warehouse={"url": f"duckdb:///{tmp_path / 'dw.duckdb'}"})
    create_topics(s)
    return s


def _topic(settings: Settings) -> str:
    return TopicNames(settings.kafka.topic_prefix).purchases_customer


def _produce(settings: Settings, ps: Sequence[Purchase], *, abort: bool = False) -> None:
    """Send ``ps`` in one producer transaction, committed (or aborted) as a whole."""
    codec = Codec()
    producer = Producer(settings.kafka_config(**{"transactional.id": f"sink-test-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for p in ps:
        producer.produce(
            _topic(settings), key=(p.card_id or p.store_id).encode(), value=codec.encode("purchase", p.to_avro())
        )
        producer.poll(0)
    if abort:
        producer.flush(30)
        producer.abort_transaction(30)
    else:
        producer.commit_transaction(30)


def _produce_raw(settings: Settings, values: Sequence[bytes], partition: int = 0) -> None:
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    for v in values:
        producer.produce(_topic(settings), value=v, partition=partition)
    assert producer.flush(30) == 0


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _kafka_committed(settings: Settings, group: str, partitions: int = 3) -> dict[int, int]:
    c = Consumer(settings.kafka_config(**{"group.id": group}))
    try:
        tps = c.committed([TopicPartition(_topic(settings), p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        c.close()


def test_sink_stores_what_was_committed_and_replays_change_nothing(settings: Settings) -> None:
    sent = purchases(1500, seed=21)
    _produce(settings, sent[:1000])
    _produce(settings, purchases(200, seed=99), abort=True)  # must never reach the warehouse
    _produce(settings, sent[1000:])
    records = [SinkRecord(p, _topic(settings), 0, 0) for p in sent]
    want = expected_counts(records)

    metrics = Metrics()
    with open_sink(settings) as sink:
        stats = run_sink(settings, sink, batch_size=500, idle_exit_after=3, metrics=metrics)
        assert stats.records == 1500 and stats.inserted.receipts == 1500
        counts = warehouse_counts(sink.warehouse)
        assert counts == want
        items, groups = table_count(sink, "receipt_items"), table_count(sink, "receipt_groups")
        assert (stats.inserted.items, stats.inserted.groups) == (items, groups)
        assert items > 0 and groups > 0
        stored = sink.committed_offsets(_topic(settings))
    assert _sample(metrics, "receiptflow_warehouse_rows_total", table="receipts") == 1500
    assert _sample(metrics, "receiptflow_consumed_total", topic=_topic(settings)) == 1500
    # The copy of the positions in Kafka (for lag tools) matches the warehouse's.
    assert _kafka_committed(settings, DEFAULT_GROUP) == stored

    # Restart: resumes from the warehouse's offsets; nothing new to read.
    with open_sink(settings) as sink:
        again = run_sink(settings, sink, idle_exit_after=2)
        assert again.records == 0
        assert warehouse_counts(sink.warehouse) == counts

    # A full replay under another consumer group re-reads everything and inserts nothing.
    metrics = Metrics()
    with open_sink(settings, group_id="replay-test") as sink:
        replay = run_sink(settings, sink, idle_exit_after=3, metrics=metrics)
        assert replay.records == 1500 and replay.inserted.receipts == 0
        assert (replay.inserted.items, replay.inserted.groups) == (0, 0)
        assert warehouse_counts(sink.warehouse) == counts
        assert (table_count(sink, "receipt_items"), table_count(sink, "receipt_groups")) == (items, groups)
        assert sink.committed_offsets(_topic(settings)) == stored
    assert _sample(metrics, "receiptflow_duplicates_total", stage="warehouse") == 1500


class CrashingSink(Sink):
    """Delegates to a real sink and dies at the n-th flush, before or after the warehouse commit."""

    def __init__(self, inner: Sink, crash_at_flush: int, after_commit: bool) -> None:
        self.inner = inner
        self.group_id = inner.group_id
        self.card_hash = inner.card_hash
        self.warehouse = inner.warehouse
        self.crash_at_flush = crash_at_flush
        self.after_commit = after_commit
        self.flushes = 0
        self.inserted = 0

    def setup(self) -> None:
        self.inner.setup()

    def write(self, batch: Sequence[SinkRecord]) -> None:
        self.inner.write(batch)

    def flush(self) -> RowCounts:
        self.flushes += 1
        if self.flushes == self.crash_at_flush and not self.after_commit:
            self.inner.rollback()
            raise WarehouseError("simulated crash before the warehouse commit")
        result = self.inner.flush()
        self.inserted += result.receipts
        if self.flushes == self.crash_at_flush:
            raise WarehouseError("simulated crash after the warehouse commit, before the Kafka commit")
        return result

    def rollback(self) -> None:
        self.inner.rollback()

    def committed_offsets(self, topic: str) -> dict[int, int]:
        return self.inner.committed_offsets(topic)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "after-commit"])
def test_a_crash_between_batches_loses_and_duplicates_nothing(settings: Settings, after_commit: bool) -> None:
    sent = purchases(900, seed=7)
    _produce(settings, sent)
    want = expected_counts([SinkRecord(p, "", 0, 0) for p in sent])

    crashing = CrashingSink(open_sink(settings), crash_at_flush=3, after_commit=after_commit)
    with pytest.raises(WarehouseError, match="simulated crash"):
        run_sink(settings, crashing, batch_size=100, idle_exit_after=3)
    kept = warehouse_counts(crashing.warehouse)["receipts"]
    assert kept == crashing.inserted and 0 < kept < 900
    crashing.close()

    with open_sink(settings) as sink:
        resumed = run_sink(settings, sink, batch_size=100, idle_exit_after=3)
        # Exactly the records the warehouse did not have are read again: none lost, none re-read.
        assert resumed.records == 900 - kept
        assert resumed.inserted.receipts == 900 - kept
        assert warehouse_counts(sink.warehouse) == want


def test_a_record_the_warehouse_cannot_use_is_dead_lettered_and_the_sink_goes_on(duckdb_settings: Settings) -> None:
    """Issue 15: non-Avro bytes, or a line number past the INTEGER column, stopped the sink on every restart."""
    settings = duckdb_settings
    codec = Codec()
    ps = purchases(10, seed=3)
    good = [codec.encode("purchase", p.to_avro()) for p in ps]
    with_items = next(p for p in purchases(40, seed=4) if p.items)
    huge_line_no = replace(with_items, items=(replace(with_items.items[0], line_no=2**40), *with_items.items[1:]))
    _produce_raw(
        settings,
        [
            *good[:5],
            b"\x00\x00\x00\x00\x63not avro at all",
            codec.encode("purchase", huge_line_no.to_avro()),
            *good[5:],
        ],
        partition=1,
    )
    topic = _topic(settings)
    names = TopicNames(settings.kafka.topic_prefix)

    for _ in range(2):  # and again after a restart: nothing is read, stored or dead-lettered twice
        with open_sink(settings) as sink:
            run_sink(settings, sink, idle_exit_after=3)
            assert warehouse_counts(sink.warehouse)["receipts"] == 10
            assert sink.committed_offsets(topic) == {1: 12}
    letters = [codec.decode(m.value(), expect="dead_letter").value for m in read_all(settings, names.checkouts_dlq)]
    assert sorted((d["source_offset"], d["reason"]) for d in letters) == [(5, "unknown_schema_id"), (6, "out_of_range")]
    assert all(d["source_topic"] == topic and d["source_partition"] == 1 for d in letters)


def test_an_undecodable_consent_record_is_dead_lettered_once_and_the_changes_around_it_stored(
    duckdb_settings: Settings,
) -> None:
    settings = duckdb_settings
    codec = Codec()
    topic = TopicNames(settings.kafka.topic_prefix).consents
    card = "6390000000042"
    changes = [ConsentChange(card, NOW, True, True, "app"), ConsentChange(card, NOW, False, True, "store")]
    bad = b"\x00\x00\x00\x00\x63not avro at all"
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    for value in (
        codec.encode("consent_change", changes[0].to_avro()),
        bad,
        codec.encode("consent_change", changes[1].to_avro()),
    ):
        producer.produce(topic, key=card.encode(), value=value, partition=2)
    assert producer.flush(30) == 0

    def letters() -> list[DeadLetter]:
        return list(iter_dead_letters(settings, idle=1.0))

    for run in range(2):  # and again after a restart: the stored offset is past the bad record
        metrics = Metrics()
        with open_sink(settings) as sink:
            stats = run_sink(settings, sink, idle_exit_after=2, metrics=metrics)
            audit = sink.warehouse.query(
                "SELECT source_offset FROM consent_changes WHERE card_id = ? ORDER BY 1", (card,)
            )
            assert [int(o) for (o,) in audit] == [0, 2]
            assert sink.committed_offsets(topic)[2] == 3
        assert stats.inserted.consent_changes == (2 if run == 0 else 0)
        assert _sample(metrics, "receiptflow_dead_letters_total", reason="unknown_schema_id") == (1 if run == 0 else 0)
        assert [
            (d.reason, d.source_topic, d.source_partition, d.source_offset, d.original_value)
            for d in opened_letters(settings, idle=1.0)
        ] == [("unknown_schema_id", topic, 2, 1, bad)]
        assert letters()[0].processor == f"receiptflow-sink-{DEFAULT_GROUP}"

    # A replay of the topic skips it (the live readers dead-lettered it) instead of failing on it.
    with open_sink(settings, group_id=replay_group(DEFAULT_GROUP)) as sink:
        replayed = replay_warehouse(settings, sink, topics=[topic])
    assert replayed.records == 3 and len(letters()) == 1


def test_kafka_committed_offsets_are_not_used_to_resume(duckdb_settings: Settings) -> None:
    settings = duckdb_settings
    sent = purchases(60, seed=11)
    _produce(settings, sent)
    group = f"sink-{uuid.uuid4().hex[:8]}"
    # Someone moved the group's Kafka offsets to the end; the warehouse has nothing yet.
    c = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    ends = []
    for p in range(3):
        _low, high = c.get_watermark_offsets(TopicPartition(_topic(settings), p), timeout=10)
        ends.append(TopicPartition(_topic(settings), p, high))
    c.commit(offsets=ends, asynchronous=False)
    c.close()

    with open_sink(settings, group_id=group) as sink:
        stats = run_sink(settings, sink, group_id=group, idle_exit_after=3)
        assert stats.records == 60
        assert warehouse_counts(sink.warehouse)["receipts"] == 60


def test_stop_event_ends_the_loop(duckdb_settings: Settings) -> None:
    settings = duckdb_settings
    _produce(settings, purchases(20, seed=13))
    stop = threading.Event()
    metrics = Metrics()
    result: list[Any] = []
    with open_sink(settings) as sink:
        t = threading.Thread(
            target=lambda: result.append(run_sink(settings, sink, stop=stop, batch_timeout=0.2, metrics=metrics))
        )
        t.start()
        # Watch the metrics, not the sink: the loop thread owns the warehouse connection.
        deadline = time.monotonic() + 60
        while _sample(metrics, "receiptflow_warehouse_rows_total", table="receipts") < 20:
            assert time.monotonic() < deadline and t.is_alive()
            time.sleep(0.1)
        stop.set()
        t.join(30)
        assert not t.is_alive()
        assert result and result[0].records == 20
        assert warehouse_counts(sink.warehouse)["receipts"] == 20


def _end_offsets(settings: Settings) -> dict[int, int]:
    """Per partition, the offset after its last record (transaction markers are not records)."""
    ends: dict[int, int] = {}
    for m in read_all(settings, _topic(settings)):
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return ends


REPLAYED_TABLES = (
    "receipts",
    "receipt_items",
    "receipt_groups",
    "analytics.cells",
    "consent_changes",
)

Windows = list[tuple[Window, tuple[Cell, ...]]]


def _tables(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables the sink fills, sorted: what "the same tables" means."""
    with open_sink(settings) as sink:
        return {t: sorted(sink.warehouse.query(f"SELECT * FROM {t}"), key=repr) for t in REPLAYED_TABLES}


def _delete(settings: Settings, lost: Sequence[Routed], lost_windows: Windows) -> None:
    """Rows lost outside the sink (an older backup restored, a hand-made DELETE): these receipts with
    their detail, the cells of these windows, and the whole consent audit."""
    url = settings.resolved_warehouse_url
    receipt_ids = [r.customer.receipt_id for r in lost]
    tables = ("receipt_items", "receipt_groups", "receipts")
    statements = [(f"DELETE FROM {t} WHERE receipt_id = ANY(%s)", receipt_ids) for t in tables]
    statements.append(("DELETE FROM analytics.cells WHERE window_id = ANY(%s)", [w.id for w, _ in lost_windows]))
    if url.startswith("duckdb:"):
        path = duckdb_path(url)
        con = duckdb.connect(str(path))
        try:
            con.execute(f"ATTACH '{analytics_path_for(path)}' AS analytics")
            for s, ids in statements:
                con.execute(s.replace("ANY(%s)", "ANY(?)"), [ids])
            con.execute("DELETE FROM consent_changes")
        finally:
            con.close()
    else:
        with psycopg.connect(settings.warehouse_connection_url(), autocommit=True) as con:
            for s, ids in statements:
                con.execute(s, [ids])
            con.execute("DELETE FROM consent_changes")


def _routed(n: int, seed: int, start: datetime = datetime(2026, 11, 20, tzinfo=UTC)) -> list[Routed]:
    """What the processor's core makes of ``n`` simulated checkouts (customer and anonymous records)."""
    sim = Simulator(seed, stores=30, customers=50)
    policy = load_policy()
    baskets = BasketPseudonymiser(b"sink-test-analytics-key")
    return [process(c, policy, None, NOW, baskets) for c in sim.stream(n, start, rate=1)]


def _windows(routed: Sequence[Routed]) -> Windows:
    """The windows of the routed baskets and the cells the aggregator publishes for each."""
    return released([r.analytics for r in routed if r.analytics is not None])


def _produce_routed(
    settings: Settings, routed: Sequence[Routed], windows: Windows, consents: Sequence[ConsentChange]
) -> None:
    """The three sink topics as the router, the aggregator and the registers fill them, in one producer
    transaction: the cells of a window keyed by its id, as the aggregator writes them."""
    codec = Codec()
    names = TopicNames(settings.kafka.topic_prefix)
    producer = Producer(settings.kafka_config(**{"transactional.id": f"sink-test-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for r in routed:
        c = r.customer
        producer.produce(
            names.purchases_customer,
            key=(c.card_id or c.store_id).encode(),
            value=codec.encode("purchase", c.to_avro()),
        )
    for window, cells in windows:
        for cell in cells:
            value = codec.encode("analytics_cell", cell.to_avro(K))
            producer.produce(names.purchases_analytics, key=window.id.encode(), value=value)
    for change in consents:
        producer.produce(
            names.consents, key=change.card_id.encode(), value=codec.encode("consent_change", change.to_avro())
        )
    producer.commit_transaction(30)


_REPLAYED = re.compile(
    r"replayed (\d+) records: (\d+) receipts, (\d+) item rows, (\d+) group rows, (\d+) analytics cells "
    r"and (\d+) consent changes were missing"
)


def _replay(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", "sink", "replay", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return " ".join(done.stdout.split())  # the console wraps long lines at its width


def test_replay_restores_missing_rows_and_twice_gives_the_same_tables(settings: Settings) -> None:
    early = _routed(500, seed=51)
    # Receipt ids encode store, register and time, so two simulated runs can share a few. The late
    # sales are of the next day: their windows are others, closed and published after the early ones.
    early_ids = {r.customer.receipt_id for r in early}
    next_day = _routed(450, seed=52, start=datetime(2026, 11, 21, tzinfo=UTC))
    late = [r for r in next_day if r.customer.receipt_id not in early_ids][:400]
    assert len(late) == 400
    early_windows, late_windows = _windows(early), _windows(late)
    assert not {w for w, _ in early_windows} & {w for w, _ in late_windows}
    cards = sorted({r.customer.card_id for r in early + late if r.customer.card_id})
    early_consents = [ConsentChange(card, NOW, True, False, "app") for card in cards[:12]]
    late_consents = [ConsentChange(card, NOW, False, True, "store") for card in cards[:7]]
    _produce_routed(settings, early, early_windows, early_consents)
    time.sleep(1.0)  # Kafka record timestamps: everything of `late` is after `middle`
    middle = datetime.now(UTC)
    time.sleep(0.1)
    _produce_routed(settings, late, late_windows, late_consents)
    with open_sink(settings) as sink:
        run_sink(settings, sink, idle_exit_after=3)
        # Every cell once, as published.
        stored = sink.warehouse.query(f"SELECT {', '.join(CELL_FIELDS)} FROM analytics.cells")
        published = [c for _, cells in early_windows + late_windows for c in cells]
        assert Counter(Cell.from_avro(dict(zip(CELL_FIELDS, row, strict=True))) for row in stored) == Counter(published)
        assert cell_counts(sink.warehouse)["windows"] == len(early_windows) + len(late_windows)
    full = _tables(settings)
    assert len(full["receipts"]) == 900
    assert len(full["consent_changes"]) == len(early_consents) + len(late_consents)
    assert len(full["analytics.cells"]) == len(published) > 0

    lost = [*late[::3], *early[::7]]
    lost_windows = [*late_windows[::3], *early_windows[::7]]
    _delete(settings, lost, lost_windows)
    assert len(_tables(settings)["receipts"]) == 900 - len(lost)

    def cells_of(windows: Windows) -> int:
        return sum(len(cells) for _, cells in windows)

    def records_of(rs: Sequence[Routed], windows: Windows, consents: Sequence[ConsentChange]) -> int:
        return len(rs) + cells_of(windows) + len(consents)

    # From the time in the middle: only `late` is read, so only its lost rows come back.
    counts = _REPLAYED.search(_replay(settings, "--from-time", middle.isoformat()))
    assert counts is not None
    records, receipts, _items, _groups, cells, consents = map(int, counts.groups())
    assert (records, receipts) == (records_of(late, late_windows, late_consents), len(late[::3]))
    assert (cells, consents) == (cells_of(late_windows[::3]), len(late_consents))
    restored = _tables(settings)
    assert len(restored["receipts"]) == 900 - len(early[::7])
    assert len(restored["consent_changes"]) == len(late_consents)
    assert len(restored["analytics.cells"]) == len(published) - cells_of(early_windows[::7])

    # From the beginning, twice: everything is back, and the second run changes nothing.
    counts = _REPLAYED.search(_replay(settings, "--from-beginning"))
    assert counts is not None
    assert int(counts[1]) == records_of(early + late, early_windows + late_windows, early_consents + late_consents)
    assert (int(counts[2]), int(counts[5]), int(counts[6])) == (
        len(early[::7]),
        cells_of(early_windows[::7]),
        len(early_consents),
    )
    assert _tables(settings) == full
    counts = _REPLAYED.search(_replay(settings, "--from-beginning"))
    assert counts is not None and [int(x) for x in counts.groups()[1:]] == [0, 0, 0, 0, 0]
    assert _tables(settings) == full
    # The live sink's stored positions were not touched by the replays.
    with open_sink(settings) as sink:
        assert sink.committed_offsets(_topic(settings)) == _end_offsets(settings)

    # --topic limits a replay to one of the sink's topics; another name is refused.
    _delete(settings, lost, lost_windows)
    consents_topic = TopicNames(settings.kafka.topic_prefix).consents
    counts = _REPLAYED.search(_replay(settings, "--from-beginning", "--topic", consents_topic))
    assert counts is not None
    n = len(early_consents) + len(late_consents)
    assert [int(x) for x in counts.groups()] == [n, 0, 0, 0, 0, n]
    assert len(_tables(settings)["receipts"]) == 900 - len(lost)
    refused = subprocess.run(
        [sys.executable, "-m", "receiptflow", "sink", "replay", "--from-beginning", "--topic", "checkouts"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert refused.returncode == 2 and "not checkouts" in refused.stderr


def test_an_old_basket_on_the_analytics_topic_is_dead_lettered_and_the_sink_goes_on(settings: Settings) -> None:
    """After the upgrade to cells the analytics topic still holds anonymous baskets of before: each is
    dead-lettered with its reason, none becomes a row, and the cells around them are stored once."""
    codec = Codec()
    names = TopicNames(settings.kafka.topic_prefix)
    topic = names.purchases_analytics
    window, cells = max(released(analytics_baskets(200, seed=81)), key=lambda wc: len(wc[1]))
    assert len(cells) > 5
    old = [b for b in analytics_baskets(20, seed=82) if b.lines][:2]
    bad = b"\x00\x00\x00\x00\x63not avro at all"
    values = [codec.encode("analytics_basket", old[0].to_avro())]
    values += [codec.encode("analytics_cell", c.to_avro(K)) for c in cells[:3]]
    values += [codec.encode("analytics_basket", old[1].to_avro()), bad]
    values += [codec.encode("analytics_cell", c.to_avro(K)) for c in cells[3:]]
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    for v in values:
        producer.produce(topic, key=window.id.encode(), value=v, partition=2)
    assert producer.flush(30) == 0

    def letters() -> list[DeadLetter]:
        return list(iter_dead_letters(settings, idle=1.0))

    for run in range(2):  # and again after a restart: nothing is read, stored or dead-lettered twice
        metrics = Metrics()
        with open_sink(settings) as sink:
            stats = run_sink(settings, sink, idle_exit_after=3, metrics=metrics)
            assert sink.committed_offsets(topic) == {2: len(values)}
            rows = sink.warehouse.query(f"SELECT {', '.join(CELL_FIELDS)} FROM analytics.cells")
            assert Counter(Cell.from_avro(dict(zip(CELL_FIELDS, r, strict=True))) for r in rows) == Counter(cells)
            # The positions are the analytics store's alone.
            db = sink.warehouse
            assert db.query(db.sql("SELECT count(*) FROM sink_offsets WHERE topic = {p}"), (topic,)) == [(0,)]
        assert stats.inserted.cells == (len(cells) if run == 0 else 0)
        retired = _sample(metrics, "receiptflow_dead_letters_total", reason="retired_subject")
        assert retired == (2 if run == 0 else 0)
        assert sorted((d.source_topic, d.source_partition, d.source_offset, d.reason) for d in letters()) == [
            (topic, 2, 0, "retired_subject"),
            (topic, 2, 4, "retired_subject"),
            (topic, 2, 5, "unknown_schema_id"),
        ]
    first = next(d for d in letters() if d.source_offset == 0)
    assert first.original_value == values[0] and "before the analytics became cells" in first.message


def test_replay_needs_a_starting_point(settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", "sink", "replay"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--from-time TIME or --from-beginning" in done.stderr


def _schemas_with_next_purchase(folder: Path) -> Codec:
    """The bundled contract plus the next purchase version: the newest one and one new optional field
    (what a producer team adds)."""
    shutil.copytree(Path(str(resources.files("receiptflow.schemas"))), folder)
    ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
    newest = max((e for e in ids["schemas"] if e["subject"] == "purchase"), key=lambda e: e["version"])
    current = json.loads((folder / newest["file"]).read_text(encoding="utf-8"))
    field = {"name": "loyalty_points", "type": ["null", "long"], "default": None, "doc": "points earned"}
    version = newest["version"] + 1
    path = f"purchase/v{version}.avsc"
    (folder / path).write_text(json.dumps({**current, "fields": [*current["fields"], field]}), encoding="utf-8")
    ids["schemas"].append({"id": 99, "subject": "purchase", "version": version, "file": path})
    (folder / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
    return Codec(SchemaCatalog.from_dir(folder))


def _migrations_with_a_new_column(folder: Path) -> tuple[Path, str]:
    """The shipped migrations plus the next one, adding a column for the new field; (folder, file name)."""
    folder.mkdir()
    shipped = migrations("duckdb")
    for entry in resources.files("receiptflow.sinks").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            (folder / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
    name = f"{len(shipped) + 1:04d}_receipts_loyalty_points.sql"
    (folder / name).write_text(
        "-- the next purchase version carries loyalty points: a column (null until the row builder fills it).\n"
        "ALTER TABLE receipts ADD COLUMN loyalty_points BIGINT;\n",
        encoding="utf-8",
    )
    return folder, name


def test_a_new_optional_field_does_not_stop_the_sink(settings: Settings, tmp_path: Path) -> None:
    new = _schemas_with_next_purchase(tmp_path / "schemas")
    old = Codec()
    ps = purchases(350, seed=61)
    # Producers still on the current version and producers already on the next write to the same topic.
    values = [old.encode("purchase", p.to_avro()) for p in ps[:150]]
    values += [new.encode("purchase", {**p.to_avro(), "loyalty_points": 7}) for p in ps[150:300]]
    assert schema_id_of(values[0]) == old.catalog.latest("purchase").schema_id and schema_id_of(values[-1]) == 99
    _produce_raw(settings, values)

    # The sink that knows the next schema stores both before the warehouse has a column for the field.
    with open_sink(settings) as sink:
        stats = run_sink(settings, sink, codec=new, idle_exit_after=3)
        assert stats.records == 300 and stats.inserted.receipts == 300

    # Adding the column is a migration: the next file, applied when the sink starts; the sink names the
    # columns it inserts, so the extra column does not disturb it.
    folder, name = _migrations_with_a_new_column(tmp_path / "migrations")
    _produce_raw(settings, [new.encode("purchase", {**p.to_avro(), "loyalty_points": 3}) for p in ps[300:]])
    with open_sink(settings, migrations_dir=folder) as sink:
        version = len(migrations("duckdb")) + 1
        assert sink.warehouse.query(f"SELECT name FROM schema_migrations WHERE version = {version}") == [(name,)]
        stats = run_sink(settings, sink, codec=new, idle_exit_after=3)
        assert stats.records == 50 and stats.inserted.receipts == 50
        assert warehouse_counts(sink.warehouse) == expected_counts([SinkRecord(p, "", 0, 0) for p in ps])
        assert sink.warehouse.query("SELECT count(*) FROM receipts WHERE loyalty_points IS NULL") == [(350,)]
    # Started again without the new file (an older build): refused rather than run against a schema
    # it does not know.
    with pytest.raises(WarehouseError, match="does not know"):
        open_sink(settings)
