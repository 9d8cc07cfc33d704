"""One receipt travels the whole way: Avro → Kafka → router → faust profile agent → Redis → warehouse row.

Real parts only: the session's Kafka broker and Redis server, a DuckDB file, and the processor
running as its own worker process (``python -m receiptflow process``), as in production. It runs
twice: with the schema ids of ``schemas/ids.json``, and with every producer and consumer taking its
ids from the session's schema registry (``RECEIPTFLOW_SCHEMA_REGISTRY_URL``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from receiptflow.config import Settings
from receiptflow.consume import consume_json
from receiptflow.metrics import Metrics
from receiptflow.models import ConsentChange
from receiptflow.processors.profile_store import RedisProfileStore
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import open_sink, run_sink, warehouse_counts
from receiptflow.topics import TopicNames, create_topics

from .conftest import RedisServer
from .support import env_for

N = 600


@pytest.fixture(params=["repo-ids", "schema-registry"])
def e2e_settings(
    request: pytest.FixtureRequest, kafka_bootstrap: str, redis_server: RedisServer, tmp_path: Path
) -> Settings:
    run = uuid.uuid4().hex[:8]
    registry = request.getfixturevalue("schema_registry") if request.param == "schema-registry" else None
    redis.Redis.from_url(redis_server.admin_url).flushdb()
    return Settings(
        **redis_server.role_settings(),
        bootstrap_servers=kafka_bootstrap,
        redis_url=redis_server.url,
        data_dir=tmp_path / "data",
        topic_prefix=f"e2e-{run}.",
        topic_partitions=3,
        processor_id=f"e2e-processor-{run}",
        metrics_port=0,
        schema_registry_url=registry,
    )


def _env(settings: Settings) -> dict[str, str]:
    env = env_for(settings)  # the role passwords among them
    env.update(
        RECEIPTFLOW_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        RECEIPTFLOW_REDIS_URL=settings.redis_url,
        RECEIPTFLOW_DATA_DIR=str(settings.data_dir),
        RECEIPTFLOW_TOPIC_PREFIX=settings.topic_prefix,
        RECEIPTFLOW_TOPIC_PARTITIONS=str(settings.topic_partitions),
        RECEIPTFLOW_PROCESSOR_ID=settings.processor_id,
        RECEIPTFLOW_METRICS_PORT="0",
    )
    return env


@pytest.fixture
def processor(e2e_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    create_topics(e2e_settings)
    e2e_settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = open(e2e_settings.data_dir / "processor.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "receiptflow", "process"], env=_env(e2e_settings), stdout=log, stderr=subprocess.STDOUT
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _wait(predicate, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"processor exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; processor log tail:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


def test_checkouts_reach_profiles_and_warehouse(e2e_settings: Settings, processor: subprocess.Popen[bytes]) -> None:
    sim = Simulator(seed=42, stores=25, customers=80)
    client = RegisterClient(e2e_settings)
    checkouts = list(sim.stream(N, datetime.now(UTC), rate=1000))
    for checkout in checkouts:
        client.send(checkout)
    consents = [
        ConsentChange(card, datetime.now(UTC), product_data_marketing=i % 2 == 0, electronic_marketing=True)
        for i, card in enumerate(sorted(sim.truth.per_card)[:3])
    ]
    for change in consents:
        client.send_consent(change)
    # Bad input travels too, and must end in the dead-letter topic with its reason.
    names = TopicNames(e2e_settings.topic_prefix)
    client.send_raw(names.checkouts, b"garbage-key", b"not avro at all")
    stats = client.flush()
    assert (stats.acked, stats.failed) == (N + 1 + len(consents), 0)

    truth = sim.truth
    store = RedisProfileStore.from_settings(e2e_settings)
    carded = truth.receipts - truth.anonymous
    log = e2e_settings.data_dir / "processor.log"
    _wait(lambda: store.totals()[1] >= carded, 120, processor, log)

    # Every card's profile equals the simulator's ground truth exactly.
    assert store.totals() == (len(truth.per_card), carded, sum(v[1] for v in truth.per_card.values()))
    for card, (receipts, spend) in truth.per_card.items():
        profile = store.get(card)
        assert profile is not None, card
        assert (profile.visits, profile.spend_cents) == (receipts, spend), card

    # The warehouse sink, reading purchases.customer, ends with exactly N receipt rows.
    sink = open_sink(e2e_settings)
    stop = threading.Event()
    metrics = Metrics()
    thread = threading.Thread(target=run_sink, args=(e2e_settings, sink), kwargs={"stop": stop, "metrics": metrics})
    thread.start()
    lines = sum(len(c.lines) for c in checkouts)

    def rows(table: str) -> float:
        return metrics.registry.get_sample_value("receiptflow_warehouse_rows_total", {"table": table}) or 0

    deadline = time.monotonic() + 60
    while rows("receipts") < N or rows("analytics.basket_lines") < lines or rows("consent_changes") < len(consents):
        assert time.monotonic() < deadline, "warehouse did not receive every receipt, line and consent change"
        assert thread.is_alive(), "sink stopped early"
        time.sleep(0.2)
    stop.set()
    thread.join(30)
    counts = warehouse_counts(sink.warehouse)
    analytics = sink.warehouse.query(
        "SELECT b.chain, count(*), sum(l.amount_cents) FROM analytics.basket_lines AS l "
        "JOIN analytics.baskets AS b USING (basket_id) GROUP BY b.chain"
    )
    columns_sql = "SELECT column_name FROM information_schema.columns WHERE table_name IN ('baskets', 'basket_lines')"
    analytics_columns = {r[0] for r in sink.warehouse.query(columns_sql)}
    audit = sink.warehouse.query(
        "SELECT card_id, product_data_marketing, electronic_marketing FROM consent_changes ORDER BY 1"
    )
    sink.close()
    # The anonymous lines: every line of every receipt, per chain, with the same money.
    want: dict[str, list[int]] = {}
    for c in checkouts:
        if c.lines:
            w = want.setdefault(c.chain, [0, 0])
            w[0] += len(c.lines)
            w[1] += c.total_cents
    assert {chain: [int(n), int(cents)] for chain, n, cents in analytics} == want
    assert analytics_columns and not analytics_columns & {"card_id", "register_id", "receipt_id", "line_no"}
    assert audit == sorted((c.card_id, c.product_data_marketing, c.electronic_marketing) for c in consents)
    assert counts["receipts"] == N
    assert counts["total_cents"] == truth.spend_cents
    assert {c: (v["receipts"], v["total_cents"]) for c, v in counts["per_chain"].items()} == {
        c: (v[0], v[1]) for c, v in truth.per_chain.items()
    }

    dead = [line for line in consume_json(e2e_settings, names.checkouts_dlq, max_records=10, idle=3)]
    assert len(dead) == 1
    assert '"reason": "undecodable"' in dead[0]
