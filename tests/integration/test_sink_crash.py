"""The warehouse sink SIGKILLed five times in the middle of batches: no gap, no duplicate, equal to the truth.

Simulated traffic (the seeded simulator: every chain, cards and anonymous sales, 5 % redelivered
sales and consent changes) goes through the processor's core (``processors.core.process``, what the
router runs per checkout) onto ``purchases.customer`` and ``consents`` in Kafka transactions,
redeliveries included; the anonymous baskets it makes become, window by window, the cells the
aggregator publishes (``receiptflow.suppression.release``) on ``purchases.analytics``, keyed by window
id. ``receiptflow sink run`` then runs as its own process in small batches and is SIGKILLed five times:

* three times by itself at a chosen point of a chosen batch -- after the first table's rows of the
  batch are in the open transaction, after all rows and positions are staged but before COMMIT, and
  right after COMMIT before the positions are mirrored to Kafka (so the child reports how it died);
* twice from outside at a random moment while it writes.

After every kill the warehouse must hold exactly the records before the positions it stored, on all
three topics (a whole batch or none of it). After a last run to the end of the topics the tables
must equal the simulator's ground truth: receipts and money per chain, item and group rows as the
policy allowed them, every published cell once and each chain's sales in its day cells, every
consent change once. Runs on DuckDB and on the real PostgreSQL server.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from receiptflow.adjustment_split import line_shares
from receiptflow.cells import DEFAULT_K, Cell, Window, window_of
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.models import AnalyticsBasket, ConsentChange, Granularity, LineKind, Purchase, ReceiptKind
from receiptflow.policy import load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator, Traffic
from receiptflow.producers.truth import GroundTruth
from receiptflow.sinks import DEFAULT_GROUP, cell_counts, open_sink, warehouse_counts
from receiptflow.sinks.tables import CELLS
from receiptflow.suppression import release
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, read_all

MakeSettings = Callable[..., Settings]
CODEC = Codec()
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
BASKETS = BasketPseudonymiser(b"crash-test-analytics-key")
START = datetime(2026, 11, 20, 6, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]

# The child: the real `receiptflow sink run`, with the sink classes wrapped so that the process
# SIGKILLs itself at one point of the n-th batch. Nothing else of the sink or runner changes.
CHILD = r"""
import os, signal, sys
from receiptflow import cli
from receiptflow.sinks import DuckDBSink, PostgresSink

point, at_batch = sys.argv[1], int(sys.argv[2])
seen = {"writes": 0, "flushes": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def wrap(cls, insert_name):
    insert, write, flush = getattr(cls, insert_name), cls.write, cls.flush

    def counted_write(self, batch):
        seen["writes"] += 1
        write(self, batch)

    def insert_then_maybe_die(self, table, rows, *more):
        n = insert(self, table, rows, *more)
        if point == "mid-write" and rows and seen["writes"] == at_batch:
            die()  # this table's rows are in the open transaction, the rest of the batch is not
        return n

    def flush_around(self):
        seen["flushes"] += 1
        if point == "before-commit" and seen["flushes"] == at_batch:
            die()  # rows and positions staged, COMMIT not sent
        result = flush(self)
        if point == "after-commit" and seen["flushes"] == at_batch:
            die()  # committed in the warehouse, positions not yet mirrored to Kafka
        return result

    cls.write, cls.flush = counted_write, flush_around
    setattr(cls, insert_name, insert_then_maybe_die)

wrap(DuckDBSink, "_insert")
wrap(PostgresSink, "_copy_insert")
sys.exit(cli.main(["sink", "run"]))
"""


@dataclass
class Sent:
    """What went onto the three topics, and what the warehouse must end up holding."""

    truth: GroundTruth
    checkouts: list[Any] = field(default_factory=list)  # distinct sales, in order
    consents: list[ConsentChange] = field(default_factory=list)
    redelivered: int = 0
    cells: list[Cell] = field(default_factory=list)  # what the aggregator published
    # topic -> (partition, offset) of every record the producer was told was delivered; the offset is
    # None where librdkafka acknowledged a record without the broker naming its offset (an implicit ack).
    delivered: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)


def _send_traffic(settings: Settings, n: int, seed: int) -> Sent:
    sim = Simulator(seed, stores=30, customers=80)
    traffic = Traffic(sim, lambda c: CODEC.encode("checkout", c.to_avro()), dup_rate=0.05, consent_change_rate=0.05)
    policy = load_policy()
    names = TopicNames(settings.kafka.topic_prefix)
    sent = Sent(sim.truth)
    windows: dict[Window, list[AnalyticsBasket]] = {}
    failed: list[str] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(f"{msg.topic()} [{msg.partition()}]: {err}")
        else:
            sent.delivered.setdefault(str(msg.topic()), []).append((int(msg.partition() or 0), msg.offset()))

    producer = Producer(
        settings.kafka_config(**{"transactional.id": f"crash-test-{uuid.uuid4().hex}", "on_delivery": report})
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i, e in enumerate(traffic.emissions(n, START, rate=0.5)):
        if i and i % 500 == 0:  # several transactions: commit markers in the partitions too
            producer.commit_transaction(30)
            producer.begin_transaction()
        if e.consent is not None:
            sent.consents.append(e.consent)
            value = CODEC.encode("consent_change", e.consent.to_avro())
            producer.produce(names.consents, key=e.consent.card_id.encode(), value=value)
        elif e.checkout is not None:
            if e.kind == "duplicate":
                sent.redelivered += 1
            else:
                sent.checkouts.append(e.checkout)
            routed = process(e.checkout, policy, None, NOW, BASKETS)
            c = routed.customer
            key = (c.card_id or c.store_id).encode()
            producer.produce(names.purchases_customer, key=key, value=CODEC.encode("purchase", c.to_avro()))
            if routed.analytics is not None:  # a redelivery's basket too: the aggregator takes each once
                windows.setdefault(window_of(routed.analytics), []).append(routed.analytics)
        producer.poll(0)
    producer.commit_transaction(30)
    # Each window closed: its cells in a transaction of their own, as the aggregator publishes them.
    for window, baskets in sorted(windows.items()):
        producer.begin_transaction()
        for cell in release(baskets, DEFAULT_K).cells:
            sent.cells.append(cell)
            value = CODEC.encode("analytics_cell", cell.to_avro(DEFAULT_K))
            producer.produce(names.purchases_analytics, key=window.id.encode(), value=value)
        producer.commit_transaction(30)
    assert len(sent.cells) > 100, "the traffic must publish cells"
    assert producer.flush(30) == 0 and not failed, failed  # every delivery report is in
    assert sent.redelivered > 0 and sent.consents, "the traffic must exercise redeliveries and consent changes"
    return sent


@dataclass
class TopicLog:
    """The keys every record of the three topics stores, by (topic, partition, offset)."""

    customer: list[tuple[int, int, str]]  # partition, offset, receipt id
    analytics: list[tuple[int, int]]  # partition, offset (a cell's key in the warehouse)
    consents: list[tuple[int, int]]  # partition, offset
    ends: dict[str, dict[int, int]]  # topic -> partition -> offset after its last record


def _topic_log(settings: Settings) -> TopicLog:
    names = TopicNames(settings.kafka.topic_prefix)
    log = TopicLog([], [], [], {})
    for topic in (names.purchases_customer, names.purchases_analytics, names.consents):
        ends: dict[int, int] = {}
        for m in read_all(settings, topic):
            p, o = m.partition(), m.offset()
            ends[p] = max(ends.get(p, 0), o + 1)
            if topic == names.consents:
                log.consents.append((p, o))
                continue
            if topic == names.purchases_customer:
                purchase = Purchase.from_avro(CODEC.decode(m.value(), expect="purchase").value)
                log.customer.append((p, o, purchase.receipt_id))
            else:
                CODEC.decode(m.value(), expect="analytics_cell")
                log.analytics.append((p, o))
        log.ends[topic] = ends
    return log


def _assert_the_topics_hold_what_was_sent(settings: Settings, sent: Sent, log: TopicLog) -> None:
    """Before any sink runs: every partition holds as many records as the producer was told it delivered,
    at the offsets the broker named. A record missing from the warehouse later was lost by the sink."""
    names = TopicNames(settings.kafka.topic_prefix)
    read = {
        names.purchases_customer: [(p, o) for p, o, _ in log.customer],
        names.purchases_analytics: list(log.analytics),
        names.consents: log.consents,
    }
    assert sent.delivered[names.consents] and len(sent.delivered[names.consents]) == len(sent.consents)
    for topic, held in read.items():
        reports = sent.delivered.get(topic, [])
        for partition in sorted({p for p, _ in reports} | {p for p, _ in held}):
            acked = [o for p, o in reports if p == partition]
            there = {o for p, o in held if p == partition}
            implicit = sum(1 for o in acked if o is None)
            assert len(acked) == len(there) and {o for o in acked if o is not None} <= there, (
                f"{topic} [{partition}] holds {len(there)} records, the producer was told {len(acked)} were "
                f"delivered ({implicit} without an offset: librdkafka acknowledges a record so when a later request "
                "to the partition succeeded after its own failed): Kafka lost records before any sink read them"
            )


def _warehouse_matches_its_positions(settings: Settings, log: TopicLog) -> dict[str, dict[int, int]]:
    """Assert the warehouse holds exactly the records before its stored positions; return the positions."""
    names = TopicNames(settings.kafka.topic_prefix)
    with open_sink(settings) as sink:
        stored = {
            t: sink.committed_offsets(t) for t in (names.purchases_customer, names.purchases_analytics, names.consents)
        }
        receipts = [r for (r,) in sink.warehouse.query("SELECT receipt_id FROM receipts")]
        cells = [
            (int(p), int(o))
            for p, o in sink.warehouse.query("SELECT source_partition, source_offset FROM analytics.cells")
        ]
        consents = [
            (int(p), int(o))
            for p, o in sink.warehouse.query("SELECT source_partition, source_offset FROM consent_changes")
        ]

    def below(topic: str, p: int, o: int) -> bool:
        return o < stored[topic].get(p, 0)

    want_receipts = {r for p, o, r in log.customer if below(names.purchases_customer, p, o)}
    want_cells = {(p, o) for p, o in log.analytics if below(names.purchases_analytics, p, o)}
    want_consents = {(p, o) for p, o in log.consents if below(names.consents, p, o)}
    assert len(receipts) == len(set(receipts)) and set(receipts) == want_receipts
    assert len(cells) == len(set(cells)) and set(cells) == want_cells
    assert len(consents) == len(set(consents)) and set(consents) == want_consents
    return stored


def _kafka_committed(settings: Settings, stored: dict[str, dict[int, int]]) -> dict[str, dict[int, int]]:
    """The sink group's positions as mirrored to Kafka (for lag tools), for the partitions in ``stored``."""
    c = Consumer(settings.kafka_config(**{"group.id": DEFAULT_GROUP}))
    try:
        tps = [TopicPartition(t, p) for t, parts in stored.items() for p in parts]
        out: dict[str, dict[int, int]] = {}
        for tp in c.committed(tps, timeout=10):
            if tp.offset >= 0:
                out.setdefault(tp.topic, {})[tp.partition] = tp.offset
        return out
    finally:
        c.close()


def _total(positions: dict[str, dict[int, int]]) -> int:
    return sum(sum(parts.values()) for parts in positions.values())


def _kill_from_outside(env: dict[str, str], settings: Settings, before: int, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "receiptflow", "sink", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        # Wait until it writes (its mirrored positions in Kafka move), then kill it at a random moment.
        while _total(_kafka_committed_all(settings)) <= before:
            assert proc.poll() is None, "the sink exited by itself"
            assert time.monotonic() < deadline, "the sink made no progress"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def _kafka_committed_all(settings: Settings) -> dict[str, dict[int, int]]:
    names = TopicNames(settings.kafka.topic_prefix)
    every = {
        t: dict.fromkeys(range(settings.kafka.topic_partitions), 0)
        for t in (names.purchases_customer, names.purchases_analytics, names.consents)
    }
    return _kafka_committed(settings, every)


@pytest.fixture(params=["duckdb", "postgres"])
def crash_settings(request: pytest.FixtureRequest, make_settings: MakeSettings, tmp_path: Path) -> Settings:
    url = f"duckdb:///{tmp_path / 'dw.duckdb'}" if request.param == "duckdb" else request.getfixturevalue("pg_database")
    s = make_settings(warehouse={"url": url})
    create_topics(s)
    return s


def test_sink_sigkilled_five_times_mid_batch_ends_equal_to_the_ground_truth(crash_settings: Settings) -> None:
    settings = crash_settings
    sent = _send_traffic(settings, 1500, seed=77)
    log = _topic_log(settings)
    _assert_the_topics_hold_what_was_sent(settings, sent, log)
    env = env_for(settings)
    # Small batches; a stable member name so that each restart takes the partitions back at once.
    env.update(
        RECEIPTFLOW_SINK_BATCH_MAX="50",
        RECEIPTFLOW_SINK_BATCH_SECONDS="0.2",
        RECEIPTFLOW_SINK_INSTANCE=f"crash-{uuid.uuid4().hex[:6]}",
    )
    rng = random.Random(8)
    rounds = ["mid-write", "before-commit", "after-commit", "outside", "outside"]
    positions = 0
    for point in rounds:
        if point == "outside":
            _kill_from_outside(env, settings, _total(_kafka_committed_all(settings)), rng)
        else:
            at_batch = rng.randint(2, 5)
            child = subprocess.run(
                [sys.executable, "-c", CHILD, point, str(at_batch)],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
                timeout=180,
            )
            assert child.returncode == -signal.SIGKILL, (
                f"{point}: exited with {child.returncode}: {child.stderr[-2000:]}"
            )
        stored = _warehouse_matches_its_positions(settings, log)
        assert _total(stored) >= positions, "stored positions never move backwards"
        positions = _total(stored)
        if point == "after-commit":
            # The batch it died after is in the warehouse but its positions never reached Kafka: the
            # restart must (and does) resume from the warehouse's positions, not from Kafka's.
            assert _total(stored) > _total(_kafka_committed(settings, stored))
    # Positions are offsets, and commit markers take offsets too: compare with the topics' end offsets.
    assert 0 < positions < _total(log.ends), "the kills should land between the start and the end of the topics"

    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", "sink", "run", "--idle-exit", "3"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stored = _warehouse_matches_its_positions(settings, log)
    assert stored == log.ends
    _assert_equal_to_the_truth(settings, sent)


def _millis(t: datetime) -> datetime:
    """The instant at the precision the consent schema carries (timestamp-millis)."""
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _warehouse_cells(sink: Any) -> list[dict[str, Any]]:
    """Every row of ``analytics.cells`` as the fields of its cell (without its source position)."""
    fields = CELLS.columns[: -len(CELLS.key)]
    rows = sink.warehouse.query(f"SELECT {', '.join(fields)} FROM analytics.cells")
    return [dict(zip(fields, row, strict=True)) for row in rows]


def _assert_equal_to_the_truth(settings: Settings, sent: Sent) -> None:
    """Every table against what the simulator sent, computed here from the checkouts and the policy."""
    policy = load_policy()
    items: dict[str, list[int]] = {}
    groups: dict[str, list[int]] = {}
    days: dict[tuple[str, Any], list[int]] = {}  # sale baskets and their money per chain and local date
    for c in sent.checkouts:
        level = policy.version_at(c.chain, c.event_time).level
        if level is Granularity.ITEM:
            it = items.setdefault(c.chain, [0, 0])
            it[0] += len(c.lines)
            it[1] += sum(line.amount_cents for line in c.lines)
        # Bottle deposits are in no product group (receipts v2); receipt-level discounts come off the
        # groups, split over the goods lines (the split's own properties are unit-tested: it adds up).
        goods = [line for line in c.lines if line.kind not in (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND)]
        if level is not Granularity.RECEIPT and goods:
            g = groups.setdefault(c.chain, [0, 0])
            g[0] += len({line.product_group for line in goods})
            g[1] += sum(line.amount_cents for line in goods) + sum(line_shares(c.lines, c.adjustments).values())
        if c.lines and c.receipt_kind is not ReceiptKind.REFUND:
            d = days.setdefault((c.chain, c.event_time.date()), [0, 0])
            d[0] += 1
            d[1] += c.total_cents
    truth_chains = {chain: (n, cents) for chain, (n, cents) in sent.truth.per_chain.items()}
    consents = Counter(
        (c["card_id"], _millis(datetime.fromisoformat(str(c["event_time"]))), c["product_data_marketing"],
         c["electronic_marketing"], c["source"])
        for c in sent.truth.consents
    )  # fmt: skip

    def per_chain(sink: Any, sql: str) -> dict[str, list[int]]:
        return {str(chain): [int(n), int(cents)] for chain, n, cents in sink.warehouse.query(sql)}

    with open_sink(settings) as sink:
        counts = warehouse_counts(sink.warehouse)
        assert counts["receipts"] == sent.truth.receipts == len(sent.checkouts)
        assert counts["total_cents"] == sent.truth.spend_cents
        assert {c: (v["receipts"], v["total_cents"]) for c, v in counts["per_chain"].items()} == truth_chains
        assert sink.warehouse.query("SELECT count(*) FROM receipts WHERE card_id IS NULL") == [(sent.truth.anonymous,)]
        assert per_chain(
            sink,
            "SELECT r.chain, count(*), sum(i.amount_cents) FROM receipt_items i JOIN receipts r USING (receipt_id) "
            "GROUP BY r.chain",
        ) == {c: v for c, v in items.items() if v[0]}
        assert (
            per_chain(
                sink,
                "SELECT r.chain, count(*), sum(g.amount_cents) FROM receipt_groups g "
                "JOIN receipts r USING (receipt_id) GROUP BY r.chain",
            )
            == groups
        )
        # Every published cell once; each chain's day figures equal its sales wherever the day had k.
        stored_cells = _warehouse_cells(sink)
        assert Counter(Cell.from_avro(c) for c in stored_cells) == Counter(sent.cells)
        assert {c["k"] for c in stored_cells} == {DEFAULT_K}
        chain_days = {
            (str(chain), day): [int(n), int(cents)]
            for chain, day, n, cents in sink.warehouse.query(
                "SELECT chain, sales_date, baskets, sales_cents FROM analytics.chain_daily_sales"
            )
        }
        assert chain_days == {w: v for w, v in days.items() if v[0] >= DEFAULT_K}
        assert len(chain_days) > 1 and cell_counts(sink.warehouse)["cells"] == len(sent.cells)
        stored_consents = Counter(
            (card, _millis(at), bool(p), bool(e), source)
            for card, at, p, e, source in sink.warehouse.query(
                "SELECT card_id, changed_at, product_data_marketing, electronic_marketing, source FROM consent_changes"
            )
        )
        assert stored_consents == consents
        # The first view an analyst opens agrees with the truth too.
        assert {
            str(c): (int(n), int(cents))
            for c, n, cents in sink.warehouse.query(
                "SELECT chain, sum(receipts), sum(sales_cents) FROM daily_sales GROUP BY chain"
            )
        } == truth_chains
