"""receiptflow sql on a DuckDB warehouse: read-only, amounts in euros, a write refused in one line."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from receiptflow.cli import main
from receiptflow.config import Settings
from receiptflow.errors import WarehouseError
from receiptflow.humanize import euros
from receiptflow.sinks import DuckDBSink
from receiptflow.sinks.read_only import open_warehouse

from .sinks.test_contract import SALT, cell_records, records

pytestmark = pytest.mark.unit


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data" / "warehouse.duckdb"
    sink = DuckDBSink(path, erasure_salt=SALT)
    sink.setup()
    sink.write([*records(20), *cell_records(40)])
    sink.flush()
    sink.close()
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RECEIPTFLOW_WAREHOUSE_URL", raising=False)
    return path


def _count(path: Path) -> tuple[int, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("SELECT count(*), sum(total_cents) FROM receipts").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_sql_prints_rows_for_people_and_json_for_machines(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    receipts, cents = _count(warehouse)
    assert receipts == 20
    assert main(["sql", "SELECT count(*) AS receipts, sum(total_cents) AS total_cents FROM receipts"]) == 0
    out = capsys.readouterr()
    assert euros(cents) in out.out and "total (€)" in out.out and "1 rows" in out.out
    assert f"data dir {warehouse.parent}" in out.err
    assert main(["sql", "--json", "SELECT count(*) AS receipts, sum(total_cents) AS total_cents FROM receipts"]) == 0
    assert f'"total_cents": {cents}' in capsys.readouterr().out
    # The analytics file is attached read-only, under the name the views have on PostgreSQL too.
    assert main(["sql", "SELECT sum(baskets) AS baskets FROM analytics.daily_sales"]) == 0
    assert "baskets" in capsys.readouterr().out
    day = sum(r.cell.baskets for r in cell_records(40) if r.cell.key.family.value == "chain_day")
    assert main(["sql", "--json", "SELECT sum(baskets) AS baskets FROM analytics.chain_daily_sales"]) == 0
    assert f'"baskets": {day}' in capsys.readouterr().out


def test_sql_cannot_change_the_warehouse(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _count(warehouse)
    assert main(["sql", "DELETE FROM receipts"]) == 1
    err = capsys.readouterr().err
    assert "the query failed" in err and "read-only" in err.lower() and "Traceback" not in err
    assert _count(warehouse) == before


def test_open_warehouse_reads_card_rows_and_leaves_the_files_unchanged(warehouse: Path) -> None:
    # export and the card holder's page read through it: no migration, no chain dimension written.
    files = [warehouse, warehouse.with_name("warehouse-analytics.duckdb")]
    before = [f.read_bytes() for f in files]
    card = next(r.purchase.card_id for r in records(20) if r.purchase.card_id is not None)
    with open_warehouse(Settings()) as db:
        rows = db.query(db.sql("SELECT count(*) FROM receipts WHERE card_id = {p}"), (card,))
        assert rows[0][0] >= 1
        assert db.query("SELECT count(*) FROM analytics.cells")[0][0] == len(cell_records(40))
        with pytest.raises(WarehouseError):
            db.transaction([("DELETE FROM receipts", ())])
    assert [f.read_bytes() for f in files] == before
    assert _count(warehouse)[0] == 20


def test_open_warehouse_refuses_a_missing_file_and_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RECEIPTFLOW_WAREHOUSE_URL", raising=False)
    with pytest.raises(WarehouseError, match=r"no warehouse at .*sink run` creates it"), open_warehouse(Settings()):
        pass
    assert not (tmp_path / "data" / "warehouse.duckdb").exists()
