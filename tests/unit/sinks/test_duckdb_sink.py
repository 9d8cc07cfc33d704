"""Sink rows and the DuckDB sink on a real file: idempotent writes, offsets with rows, migrations."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from receiptflow.config import Settings
from receiptflow.errors import ConfigError, WarehouseError
from receiptflow.models import Granularity, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import DuckDBSink, SinkRecord, open_sink, to_rows, warehouse_counts
from receiptflow.sinks.migrate import migrations

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def _records(n: int, seed: int = 5, topic: str = "purchases.customer") -> list[SinkRecord]:
    sim = Simulator(seed, stores=30, customers=50)
    policy = load_policy()
    out = []
    for i, c in enumerate(sim.stream(n, datetime(2026, 11, 20, tzinfo=UTC), rate=1)):
        out.append(SinkRecord(process(c, policy, None, NOW).customer, topic, i % 3, i // 3))
    return out


def test_rows_follow_granularity() -> None:
    recs = _records(200)
    rows = to_rows(recs)
    assert len(rows.receipts) == 200
    by_id = {r.purchase.receipt_id: r.purchase for r in recs}
    item_receipts = {row[0] for row in rows.items}
    group_receipts = {row[0] for row in rows.groups}
    for rid, p in by_id.items():
        assert (rid in item_receipts) == (p.granularity is Granularity.ITEM and bool(p.items))
        if p.granularity is Granularity.RECEIPT:
            assert rid not in group_receipts


def test_duplicates_inside_a_batch_are_folded() -> None:
    recs = _records(10)
    assert len(to_rows(recs + recs[:4]).receipts) == 10


def _sink(path: Path) -> DuckDBSink:
    sink = DuckDBSink(path, erasure_salt=b"test-erasure-salt-0123456789")
    sink.setup()
    return sink


def test_write_twice_gives_no_duplicates_and_offsets_round_trip(tmp_path: Path) -> None:
    recs = _records(300)
    sink = _sink(tmp_path / "w.duckdb")
    sink.write(recs)
    first = sink.flush()
    assert first.receipts == 300
    sink.write(recs)
    again = sink.flush()
    assert again.receipts == 0 and again.items == 0 and again.groups == 0
    counts = warehouse_counts(sink.warehouse)
    assert counts["receipts"] == 300
    assert counts["total_cents"] == sum(r.purchase.total_cents for r in recs)
    assert sink.committed_offsets("purchases.customer") == {0: 100, 1: 100, 2: 100}
    assert sink.committed_offsets("other") == {}
    sink.close()


def test_rollback_drops_rows_and_offsets_together(tmp_path: Path) -> None:
    recs = _records(50)
    sink = _sink(tmp_path / "w.duckdb")
    sink.write(recs[:20])
    sink.flush()
    sink.write(recs[20:])
    sink.rollback()
    assert warehouse_counts(sink.warehouse)["receipts"] == 20
    assert sum(sink.committed_offsets("purchases.customer").values()) == 20
    sink.close()


def test_reopen_keeps_data_and_applies_migrations_once(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    sink = _sink(path)
    sink.write(_records(5))
    sink.flush()
    sink.close()
    sink = _sink(path)
    assert sink.warehouse.query("SELECT count(*) FROM schema_migrations") == [(len(migrations("duckdb")),)]
    assert warehouse_counts(sink.warehouse)["receipts"] == 5
    sink.close()


def test_purchase_lineage_is_stored(tmp_path: Path) -> None:
    recs = _records(30)
    sink = _sink(tmp_path / "w.duckdb")
    sink.write(recs)
    sink.flush()
    p: Purchase = recs[0].purchase
    row = sink.warehouse.query(
        "SELECT policy_version, granularity, consent_known, event_local_date FROM receipts WHERE receipt_id = ?",
        [p.receipt_id],
    )
    assert row == [(p.policy_version, str(p.granularity), False, p.event_time.date())]
    sink.close()


def test_unsupported_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mysql"):
        open_sink(Settings(warehouse={"url": "mysql://x/y"}, local={"data_dir": tmp_path}))


def test_the_analytics_file_is_separate_owner_only_and_card_free(tmp_path: Path) -> None:
    from .test_contract import cell_records  # noqa: PLC0415 - the contract's cell builder

    path = tmp_path / "warehouse.duckdb"
    old = os.umask(0o022)
    try:
        with DuckDBSink(path, erasure_salt=b"test-erasure-salt-0123456789") as sink:
            cells = cell_records(50)
            sink.write([*_records(50), *cells])
            sink.flush()
            cards = {c for (c,) in sink.warehouse.query("SELECT card_id FROM receipts WHERE card_id IS NOT NULL")}
            analytics = sink.analytics_path
    finally:
        os.umask(old)
    assert analytics == tmp_path / "warehouse-analytics.duckdb" and cards
    for f in tmp_path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    con = duckdb.connect(str(analytics), read_only=True)
    try:
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"cells", "sink_offsets", "daily_sales", "product_pairs"} <= tables
        assert not tables & {"receipts", "receipt_items", "receipt_groups", "consent_changes", "erased_cards"}
        assert not tables & {"baskets", "basket_lines"}
        values = {str(v) for row in con.execute("SELECT * FROM cells").fetchall() for v in row}
        assert values and not values & cards
        # The views work on the file alone.
        days = [r.cell.baskets for r in cells if r.cell.key.family.value == "chain_day"]
        assert days and con.execute("SELECT sum(baskets) FROM chain_daily_sales").fetchone() == (sum(days),)
    finally:
        con.close()
    # The main file holds no analytics: they are only in their own file.
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert "receipts" in tables and not tables & {"cells", "baskets", "basket_lines", "analytics_lines"}
    finally:
        con.close()


def test_the_analytics_file_must_not_be_the_warehouse_file(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with pytest.raises(WarehouseError, match="must not be the warehouse file"):
        DuckDBSink(path, analytics_path=path, erasure_salt=b"test-erasure-salt-0123456789").setup()
