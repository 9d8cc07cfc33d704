"""The aggregator on the real broker, SIGKILLed while it works: each window once, its cells exactly release()'s.

Simulated checkouts over four local days go through the router's core (``route.process`` with a basket
pseudonymiser, what the router runs per checkout) onto ``purchases.baskets``, keyed by chain, in event
time order and in Kafka transactions. ``receiptflow aggregate run`` then runs as its own process (small
grace and idle close, small turns), is SIGKILLed from outside three times at random moments while it
closes windows, and a last run goes on until idle. Then:

* every window (chain, local date) is closed once: one close marker on ``analytics.windows``;
* the cells on ``purchases.analytics`` (read-committed) of each window are exactly
  ``release(that window's baskets, k).cells``: none missing, none twice, none of a window that had none;
* each close marker's totals are the truth of its window.

Then a few baskets of days already closed arrive (late), with a record that is no basket, and a basket
of a new day that holds the committed offset back; the aggregator is killed right after the
transaction that counted them, and runs again to the end: each late basket is counted once in its
window's marker (not published), the bad record is dead-lettered once, nothing is published twice.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer

from receiptflow.cells import Cell, window_of
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.models import AnalyticsBasket, ReceiptKind
from receiptflow.policy import load_policy
from receiptflow.processors.aggregate.marker import Marker
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.suppression import release
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, read_all

MakeSettings = Callable[..., Settings]
CODEC = Codec()
K = 5
BASKETS = BasketPseudonymiser(b"aggregate-test-analytics-key")
DAYS = 4
ENV = {
    "RECEIPTFLOW_ANALYTICS_K": str(K),
    "RECEIPTFLOW_ANALYTICS_GRACE_SECONDS": "1800",
    "RECEIPTFLOW_ANALYTICS_IDLE_CLOSE_SECONDS": "3",
    "RECEIPTFLOW_ANALYTICS_BATCH_MAX": "40",  # many small turns: a kill lands between and inside them
}
CLOSED = re.compile(r"closed window (\S+) ")


def _baskets(start: datetime, count: int) -> list[AnalyticsBasket]:
    """Anonymous baskets of ``count`` simulated checkouts over ``DAYS`` days from ``start``, in event time order."""
    sim = Simulator(28, stores=40, customers=300)
    now = datetime.now(UTC)
    rate = count / (DAYS * 86_400)
    out = []
    for c in sim.stream(count, start, rate):
        routed = process(c, load_policy(), None, now, BASKETS)
        if routed.analytics is not None:
            out.append(routed.analytics)
    return out


def _send(settings: Settings, records: list[tuple[bytes, bytes]], per_transaction: int = 500) -> None:
    """``records`` (key, value) onto ``purchases.baskets`` in transactions, as the router writes them."""
    topic = TopicNames(settings.kafka.topic_prefix).analytics_baskets
    producer = Producer(settings.kafka_config(**{"transactional.id": f"aggregate-test-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    for at in range(0, len(records), per_transaction):
        producer.begin_transaction()
        for key, value in records[at : at + per_transaction]:
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
        producer.commit_transaction(30)


def _as_records(baskets: list[AnalyticsBasket]) -> list[tuple[bytes, bytes]]:
    return [(b.chain.encode(), CODEC.encode("analytics_basket", b.to_avro())) for b in baskets]


def _start(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "-v", "aggregate", "run", *args],
            env={**env_for(settings), **ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_for(proc: subprocess.Popen[bytes], log: Path, pattern: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, log.read_text(errors="replace"))) < count:
        assert proc.poll() is None, f"the aggregator exited with {proc.returncode}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {count} x {pattern!r} after {timeout}s: {log.read_text()[-3000:]}"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None, "the aggregator ended before the kill"
    proc.kill()
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def _run_to_the_end(settings: Settings, log: Path) -> str:
    proc = _start(settings, log, "--idle-exit", "8")
    try:
        assert proc.wait(240) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text()


def _markers(settings: Settings) -> dict[str, list[Marker]]:
    """Every close marker on analytics.windows by window, in the order written (one window, one partition)."""
    out: dict[str, list[Marker]] = defaultdict(list)
    for m in read_all(settings, TopicNames(settings.kafka.topic_prefix).analytics_windows):
        marker = Marker.from_json(m.value())
        assert m.key() == marker.window_id.encode()
        out[marker.window_id].append(marker)
    return out


def _cells(settings: Settings) -> dict[str, Counter[Cell]]:
    """The published cells (read-committed) by window id, counted."""
    out: dict[str, Counter[Cell]] = defaultdict(Counter)
    for m in read_all(settings, TopicNames(settings.kafka.topic_prefix).purchases_analytics):
        value = CODEC.decode(m.value(), expect="analytics_cell").value
        assert m.key() == value["window_id"].encode() and value["k"] == K
        out[value["window_id"]][Cell.from_avro(value)] += 1
    return out


def _assert_published_once(settings: Settings, truth: dict[str, list[AnalyticsBasket]]) -> dict[str, list[Marker]]:
    markers = _markers(settings)
    assert set(markers) == set(truth), "every window closed, no other"
    cells = _cells(settings)
    for window_id, baskets in truth.items():
        released = release(baskets, K)
        first = markers[window_id][0]
        assert [m.late_baskets for m in markers[window_id]][:1] == [0]
        assert [m for m in markers[window_id] if m.late_baskets == 0] == [first], f"{window_id} closed twice"
        assert cells.get(window_id, Counter()) == Counter(released.cells), f"{window_id}: cells differ"
        (totals,) = released.totals
        assert (first.sale_baskets, first.sale_cents, first.refund_baskets, first.refund_cents) == (
            totals.sale_baskets,
            totals.sale_cents,
            totals.refund_baskets,
            totals.refund_cents,
        ), window_id
        assert (first.cells, first.k) == (len(released.cells), K)
    assert sum(sum(c.values()) for c in cells.values()) > 100
    return markers


def test_killed_three_times_each_window_is_published_once_with_exactly_its_cells_and_late_baskets_count_once(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings()
    create_topics(settings)
    start = (datetime.now(UTC) - timedelta(days=DAYS + 3)).replace(hour=0, minute=0, second=0, microsecond=0)
    baskets = _baskets(start, 3600)
    truth: dict[str, list[AnalyticsBasket]] = defaultdict(list)
    for b in baskets:
        truth[window_of(b).id].append(b)
    assert len(baskets) > 2500 and len({window_of(b).local_date for b in baskets}) >= 3
    assert any(b.receipt_kind is ReceiptKind.REFUND for b in baskets)
    _send(settings, _as_records(baskets))

    # Three kills from outside, each a random moment after the run closed its first few windows.
    rng = random.Random(28)
    closed_before: set[str] = set()
    for n in range(3):
        log = tmp_path / f"killed-{n}.log"
        proc = _start(settings, log)
        try:
            _wait_for(proc, log, CLOSED.pattern, rng.randint(1, 4))
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            _kill(proc)
        closed_before |= set(CLOSED.findall(log.read_text()))
    assert 0 < len(closed_before) < len(truth), "the kills landed while windows were still open"
    _run_to_the_end(settings, tmp_path / "last.log")
    markers = _assert_published_once(settings, truth)
    assert all(len(ms) == 1 for ms in markers.values())

    # Late: baskets of a closed day (of three chains), a record that is no basket, and a basket of a new day
    # that keeps a window open on the bad record's partition (so the committed offset stays below it when
    # the aggregator is killed right after the transaction that dead-lettered it).
    first_day = window_of(baskets[0]).local_date
    chains = sorted({b.chain for b in baskets if window_of(b).local_date == first_day})[:3]
    late = [
        _copy(b, f"late-{i}")
        for i, b in enumerate(b for c in chains for b in [x for x in baskets if x.chain == c][:2])
        if window_of(b).local_date == first_day
    ]
    new_day = _copy(baskets[-1], "new-day", chain=late[0].chain, days=1)
    bad = (late[0].chain.encode(), b"no basket at all")
    _send(settings, [*_as_records([new_day, *late]), bad])
    log = tmp_path / "late-killed.log"
    proc = _start(settings, log)
    try:
        _wait_for(proc, log, r"dead-lettered ", 1)
    finally:
        _kill(proc)
    _run_to_the_end(settings, tmp_path / "late-last.log")

    truth[window_of(new_day).id].append(new_day)
    markers = _assert_published_once(settings, truth)
    late_by_window = Counter(window_of(b).id for b in late)
    assert len(late) == 6 and len(late_by_window) == 3
    assert {w: ms[-1].late_baskets for w, ms in markers.items() if ms[-1].late_baskets} == late_by_window
    names = TopicNames(settings.kafka.topic_prefix)
    dead = [CODEC.decode(m.value(), expect="dead_letter").value for m in read_all(settings, names.checkouts_dlq)]
    assert [(d["source_topic"], d["original_value"]) for d in dead] == [(names.analytics_baskets, bad[1])]


def _copy(b: AnalyticsBasket, basket_id: str, *, chain: str | None = None, days: int = 0) -> AnalyticsBasket:
    """``b`` under another basket id (of ``chain``, ``days`` later)."""
    return replace(b, basket_id=basket_id, chain=chain or b.chain, event_hour=b.event_hour + timedelta(days=days))
