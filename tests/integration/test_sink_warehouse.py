"""Warehouse sink against the real broker, real DuckDB and the real PostgreSQL server.

Purchases are produced to a fresh topic; the sink consumes them into each warehouse; counts and
sums per chain must equal what was sent, and running the sink again (a replay from the stored
offsets, and one from the beginning with a new consumer name) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.processors.core import process
from receiptflow.processors.policy import load_policy
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import PostgresSink, open_sink, run_sink, warehouse_counts
from receiptflow.topics import create_topics

N = 1500


def _produce(settings: Settings, n: int) -> dict[str, tuple[int, int]]:
    sim = Simulator(21, stores=30, customers=120)
    policy = load_policy()
    codec = Codec()
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    now = datetime.now(UTC)
    failures: list[Any] = []
    for c in sim.stream(n, datetime(2026, 11, 1, tzinfo=UTC), rate=0.5):
        p = process(c, policy, None, now).customer
        producer.produce(
            settings.topic_prefix + "purchases.customer",
            key=(p.card_id or p.store_id).encode(),
            value=codec.encode("purchase", p.to_avro()),
            on_delivery=lambda err, _m: failures.append(err) if err else None,
        )
        producer.poll(0)
    assert producer.flush(30) == 0 and failures == []
    return {chain: (v[0], v[1]) for chain, v in sim.truth.per_chain.items()}


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], tmp_path: Path
) -> Settings:
    if request.param == "duckdb":
        return make_settings(warehouse_url=f"duckdb:///{tmp_path / 'dw.duckdb'}")
    url = request.getfixturevalue("postgres_url")
    settings = make_settings(warehouse_url=url)
    sink = PostgresSink(url)
    sink.setup()
    # The session's PostgreSQL is shared: start every test from empty tables.
    sink.conn.execute("TRUNCATE receipts, receipt_items, receipt_groups, sink_offsets")
    sink.conn.commit()
    sink.close()
    return settings


def test_sink_matches_what_was_sent_and_replays_change_nothing(warehouse_settings: Settings) -> None:
    create_topics(warehouse_settings)
    truth = _produce(warehouse_settings, N)

    sink = open_sink(warehouse_settings)
    stats = run_sink(warehouse_settings, sink, batch_size=500, idle_exit_after=3)
    counts = warehouse_counts(sink)
    assert stats.records == N
    assert counts["receipts"] == N
    assert {c: (v["receipts"], v["total_cents"]) for c, v in counts["per_chain"].items()} == truth
    items = sink.query("SELECT count(*) FROM receipt_items")[0][0]
    groups = sink.query("SELECT count(*) FROM receipt_groups")[0][0]
    assert items > 0 and groups > 0
    sink.close()

    # Restart: resumes from the warehouse's offsets, nothing new to read.
    sink = open_sink(warehouse_settings)
    again = run_sink(warehouse_settings, sink, idle_exit_after=2)
    assert again.records == 0
    sink.close()

    # A full replay under another consumer name re-reads everything and inserts nothing.
    sink = open_sink(warehouse_settings, consumer="replay-test")
    replay = run_sink(warehouse_settings, sink, idle_exit_after=3)
    assert replay.records == N and replay.receipts_inserted == 0
    after = warehouse_counts(sink)
    assert after == counts
    assert sink.query("SELECT count(*) FROM receipt_items")[0][0] == items
    sink.close()
