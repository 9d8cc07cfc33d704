"""One receipt travels the whole way: Avro → Kafka → router → faust profile agent → Redis → warehouse row.

Real parts only: the session's Kafka broker and Redis server, a DuckDB file, and the processor
running as its own worker process (``python -m receiptflow process``), as in production. It runs
twice: with the schema ids of ``schemas/ids.json``, and with every producer and consumer taking its
ids from the session's schema registry (``RECEIPTFLOW_SCHEMA_REGISTRY_URL``).
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pytest
import redis

from receiptflow.cells import Family
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.consume import consume_json
from receiptflow.metrics import Metrics
from receiptflow.models import Checkout, ConsentChange, LineKind, ReceiptKind, Unit
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import process
from receiptflow.producers.client import RegisterClient, checkout_key
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import open_sink, run_sink, warehouse_counts
from receiptflow.suppression import release
from receiptflow.topics import TopicNames, create_topics

from .conftest import KafkaServer, RedisServer
from .support import env_for, stop

N = 600


@pytest.fixture(params=["repo-ids", "schema-registry"])
def e2e_settings(
    request: pytest.FixtureRequest, kafka_server: KafkaServer, redis_server: RedisServer, tmp_path: Path
) -> Settings:
    run = uuid.uuid4().hex[:8]
    registry = request.getfixturevalue("schema_registry") if request.param == "schema-registry" else None
    redis.Redis.from_url(redis_server.admin_url).flushdb()
    return Settings(
        **redis_server.role_settings(),
        **kafka_server.auth_settings(),
        kafka={
            "bootstrap_servers": kafka_server.bootstrap,
            "topic_prefix": f"e2e-{run}.",
            "topic_partitions": 3,
            "schema_registry_url": registry,
        },
        redis={"url": redis_server.url},
        local={"data_dir": tmp_path / "data"},
        router={"id": f"e2e-processor-{run}"},
        metrics={"port": 0},
    )


def _env(settings: Settings) -> dict[str, str]:
    env = env_for(settings)  # the role passwords among them
    env.update(
        RECEIPTFLOW_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        RECEIPTFLOW_REDIS_URL=settings.redis.url,
        RECEIPTFLOW_DATA_DIR=str(settings.local.data_dir),
        RECEIPTFLOW_TOPIC_PREFIX=settings.kafka.topic_prefix,
        RECEIPTFLOW_TOPIC_PARTITIONS=str(settings.kafka.topic_partitions),
        RECEIPTFLOW_PROCESSOR_ID=settings.router.id,
        RECEIPTFLOW_METRICS_PORT="0",
        # The sales are days old: their windows close once the aggregator has read everything and
        # heard nothing more for a while (long enough that the router's pauses do not make it late).
        RECEIPTFLOW_ANALYTICS_GRACE_SECONDS="60",
        RECEIPTFLOW_ANALYTICS_IDLE_CLOSE_SECONDS="10",
    )
    return env


@pytest.fixture
def processor(e2e_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    create_topics(e2e_settings)
    e2e_settings.local.data_dir.mkdir(parents=True, exist_ok=True)
    log = open(e2e_settings.local.data_dir / "processor.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "receiptflow", "process"], env=_env(e2e_settings), stdout=log, stderr=subprocess.STDOUT
    )
    yield proc
    stop(proc)
    log.close()


def _wait(predicate, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"processor exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; processor log tail:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


def _v1_shaped(c: Checkout) -> bool:
    """Whether checkout v1 can carry ``c`` as it is: a sale of pieces, one tender, no adjustments."""
    plain = all(x.kind is LineKind.SALE and x.unit is Unit.PIECE and x.quantity > 0 for x in c.lines)
    return plain and c.receipt_kind is ReceiptKind.SALE and not c.adjustments and not c.payments


def _v1_bytes(codec: Codec, c: Checkout) -> bytes:
    """``c`` as a v1 register writes it: the v1 schema and its id (the repo's or the registry's)."""
    v1 = codec.catalog.versions("checkout")[0]
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, v1.schema_id))
    fastavro.schemaless_writer(buf, v1.parsed, c.to_avro())  # the v2 fields are left out
    return buf.getvalue()


def test_checkouts_reach_profiles_and_warehouse(e2e_settings: Settings, processor: subprocess.Popen[bytes]) -> None:
    sim = Simulator(seed=42, stores=25, customers=80)
    client = RegisterClient(e2e_settings)
    names = TopicNames(e2e_settings.kafka.topic_prefix)
    # Three days ago at 100/s: a quarter of an hour of simulated traffic in every receipt shape of v2.
    checkouts = list(sim.stream(N, datetime.now(UTC) - timedelta(days=3), rate=100))
    kinds = {x.kind for c in checkouts for x in c.lines}
    assert kinds >= {LineKind.SALE, LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND, LineKind.DISCOUNT, LineKind.VOID}
    refunds = [c for c in checkouts if c.receipt_kind is ReceiptKind.REFUND]
    assert refunds and all(r.original_receipt_id in {c.receipt_id for c in checkouts} for r in refunds)
    # Old registers write checkout v1 on the same topic: every other receipt v1 can carry goes as v1.
    as_v1 = [c for c in checkouts if _v1_shaped(c)][::2]
    assert len(as_v1) > N // 10
    for checkout in checkouts:
        if any(checkout is c for c in as_v1):
            client.send_raw(names.checkouts, checkout_key(checkout), _v1_bytes(client.codec, checkout))
        else:
            client.send(checkout)
    consents = [
        ConsentChange(card, datetime.now(UTC), product_data_marketing=i % 2 == 0, electronic_marketing=True)
        for i, card in enumerate(sorted(sim.truth.per_card)[:3])
    ]
    for change in consents:
        client.send_consent(change)
    # Bad input travels too, and must end in the dead-letter topic with its reason.
    client.send_raw(names.checkouts, b"garbage-key", b"not avro at all")
    stats = client.flush()
    assert (stats.acked, stats.failed) == (N + 1 + len(consents), 0)

    truth = sim.truth
    store = RedisProfileStore.from_settings(e2e_settings)
    # Sales are visits (a refund is none); spend is goods net of refunds: wait for both.
    carded = sum(v[0] for v in truth.per_card.values())
    spent = sum(v[1] for v in truth.per_card.values())
    log = e2e_settings.local.data_dir / "processor.log"
    _wait(lambda: store.totals()[1:] == (carded, spent), 120, processor, log)

    # Every card's profile equals the simulator's ground truth exactly.
    assert store.totals() == (len(truth.per_card), carded, spent)
    for card, (visits, spend) in truth.per_card.items():
        profile = store.get(card)
        assert profile is not None, card
        assert (profile.visits, profile.spend_cents) == (visits, spend), card

    # The warehouse sink, reading purchases.customer, ends with exactly N receipt rows.
    sink = open_sink(e2e_settings)
    stop = threading.Event()
    metrics = Metrics()
    thread = threading.Thread(target=run_sink, args=(e2e_settings, sink), kwargs={"stop": stop, "metrics": metrics})
    thread.start()
    # The cells the aggregator must publish: release() of the routed baskets, window by window (a
    # basket's pseudonym changes nothing here but its id, and every id is distinct either way).
    policy, baskets = load_policy(), BasketPseudonymiser(b"e2e-test-basket-key")
    routed = [process(c, policy, None, datetime.now(UTC), baskets).analytics for c in checkouts]
    want_cells = release([b for b in routed if b is not None], e2e_settings.aggregate.k).cells
    assert want_cells, "the traffic must publish cells"

    def rows(table: str) -> float:
        return metrics.registry.get_sample_value("receiptflow_warehouse_rows_total", {"table": table}) or 0

    deadline = time.monotonic() + 120
    while rows("receipts") < N or rows("analytics.cells") < len(want_cells) or rows("consent_changes") < len(consents):
        assert time.monotonic() < deadline, (
            f"warehouse did not receive every receipt, cell and consent change: {rows('receipts'):.0f} of {N} "
            f"receipts, {rows('analytics.cells'):.0f} of {len(want_cells)} cells, {rows('consent_changes'):.0f} of "
            f"{len(consents)} consent changes; processor log tail:\n{log.read_text()[-3000:]}"
        )
        assert thread.is_alive(), "sink stopped early"
        time.sleep(0.2)
    stop.set()
    thread.join(30)
    counts = warehouse_counts(sink.warehouse)
    stored_cells = sink.warehouse.query(
        "SELECT family, chain, local_date, store_id, hour, product_group, sku, sku_b, size_bucket, baskets, lines, "
        "quantity, amount_cents FROM analytics.cells"
    )
    columns_sql = "SELECT column_name FROM information_schema.columns WHERE table_name = 'cells'"
    analytics_columns = {r[0] for r in sink.warehouse.query(columns_sql)}
    audit = sink.warehouse.query(
        "SELECT card_id, product_data_marketing, electronic_marketing FROM consent_changes ORDER BY 1"
    )
    net = {str(r[0]): int(r[1]) for r in sink.warehouse.query("SELECT receipt_id, net_cents FROM receipts_net")}
    sink.close()
    # Each refunded sale nets its refunds in the warehouse, exactly, and nothing is counted twice.
    by_id = {c.receipt_id: c for c in checkouts}
    for r in refunds:
        original = by_id[r.original_receipt_id or ""]
        back = sum(x.total_cents for x in refunds if x.original_receipt_id == original.receipt_id)
        assert net[original.receipt_id] == original.total_cents + back
        assert r.receipt_id not in net
    assert sum(net.values()) == truth.spend_cents
    # The analytics: exactly the released cells of every window, once each; none under k.
    got = sorted(
        (Family(f), str(ch), d, st, h, g, sku, sku_b, size, int(n), int(lines), round(float(q), 3), int(cents))
        for f, ch, d, st, h, g, sku, sku_b, size, n, lines, q, cents in stored_cells
    )
    want = sorted(
        (c.key.family, c.key.chain, c.key.local_date, c.key.store_id, c.key.hour, c.key.product_group, c.key.sku,
         c.key.sku_b, c.key.size_bucket, c.baskets, c.lines, c.quantity, c.amount_cents)
        for c in want_cells
    )  # fmt: skip
    assert got == want
    assert min(row[9] for row in got) >= e2e_settings.aggregate.k
    assert analytics_columns and not analytics_columns & {
        "card_id",
        "register_id",
        "receipt_id",
        "line_no",
        "basket_id",
    }
    assert audit == sorted((c.card_id, c.product_data_marketing, c.electronic_marketing) for c in consents)
    assert counts["receipts"] == N
    assert counts["total_cents"] == truth.spend_cents
    assert {c: (v["receipts"], v["total_cents"]) for c, v in counts["per_chain"].items()} == {
        c: (v[0], v[1]) for c, v in truth.per_chain.items()
    }

    dead = [line for line in consume_json(e2e_settings, names.checkouts_dlq, max_records=10, idle=3)]
    assert len(dead) == 1
    assert '"reason": "undecodable"' in dead[0]
