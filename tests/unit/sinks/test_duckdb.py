"""The DuckDB sink on a real file in a temp dir: the shared sink contract plus DuckDB specifics."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from receiptflow.config import Settings
from receiptflow.errors import WarehouseError
from receiptflow.sinks import DEFAULT_GROUP, DuckDBSink, Sink, open_sink, warehouse_counts
from receiptflow.sinks.migrate import migrations

from .test_contract import SALT, OpenSink, SinkContract, records


class TestDuckDBSink(SinkContract):
    @pytest.fixture
    def open_sink(self, tmp_path: Path) -> Iterator[OpenSink]:
        opened: list[Sink] = []

        def make(group_id: str = DEFAULT_GROUP, setup: bool = True) -> Sink:
            # DuckDB allows one connection per file and process at a time: close the previous one,
            # as a restarted sink process would have.
            for s in opened:
                s.close()
            (tmp_path / "dw").mkdir(exist_ok=True)
            sink = DuckDBSink(tmp_path / "dw" / "warehouse.duckdb", group_id, erasure_salt=SALT)
            if setup:  # else only made: a test opens its warehouse by itself
                sink.setup()
            opened.append(sink)
            return sink

        yield make
        for s in opened:
            s.close()

    def execute(self, sink: Sink, sql: str) -> None:
        assert isinstance(sink, DuckDBSink)
        sink.con.execute(sql)


def test_open_sink_uses_the_default_file_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(local={"data_dir": tmp_path / "data"})
    with open_sink(settings) as sink:
        assert isinstance(sink, DuckDBSink)
        assert sink.path == (tmp_path / "data" / "warehouse.duckdb").resolve()
        sink.write(records(7))
        sink.flush()
    # The file is a plain DuckDB database any tool can read once the sink has closed it.
    con = duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM receipts").fetchone() == (7,)
    con.close()


def test_a_second_writer_on_the_same_file_is_a_warehouse_error(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    first = DuckDBSink(path, erasure_salt=SALT)
    first.setup()
    try:
        # Another process holding the file: DuckDB's file lock refuses a second one.
        code = (
            "from receiptflow.sinks import DuckDBSink\n"
            "from receiptflow.errors import WarehouseError\n"
            f"s = DuckDBSink({str(path)!r}, erasure_salt={SALT!r})\n"
            "try:\n    s.setup()\nexcept WarehouseError as e:\n    print('refused:', e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.startswith(f"refused: the DuckDB warehouse {path} is in use by another process"), out
    finally:
        first.close()


def test_use_before_setup_is_a_warehouse_error(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "w.duckdb", erasure_salt=SALT)
    with pytest.raises(WarehouseError, match="before setup"):
        sink.committed_offsets("t")


def test_batch_of_a_thousand_goes_in_as_one_statement_per_table(tmp_path: Path, monkeypatch: Any) -> None:
    sink = DuckDBSink(tmp_path / "w.duckdb", erasure_salt=SALT)
    sink.setup()
    statements: list[str] = []
    real = sink._insert

    def spy(table: Any, rows: list[tuple[Any, ...]], cards: list[str | None] | None) -> int:
        if rows:  # tables without rows in the batch get no statement
            statements.append(table.name)
        return real(table, rows, cards)

    monkeypatch.setattr(sink, "_insert", spy)
    recs = records(1000)
    sink.write(recs)
    assert sink.flush().receipts == 1000
    assert statements == ["receipts", "receipt_items", "receipt_groups"]
    assert warehouse_counts(sink.warehouse)["receipts"] == 1000
    sink.close()


def test_a_warehouse_from_before_checksums_opens_and_keeps_its_data(tmp_path: Path) -> None:
    # The layout the first sink release wrote: schema_migrations without a checksum column.
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    )
    first = migrations("duckdb")[0]
    for statement in first.statements:
        con.execute(statement)
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (1, ?)", [first.name])
    con.execute("INSERT INTO sink_offsets VALUES (?, 'purchases.customer', 0, 42)", [DEFAULT_GROUP])
    con.close()

    with DuckDBSink(path, erasure_salt=SALT) as sink:
        assert sink.committed_offsets("purchases.customer") == {0: 42}
        rows = sink.warehouse.query("SELECT version, checksum FROM schema_migrations ORDER BY version")
        # The old migration gets its checksum recorded; the later ones are applied on top.
        assert rows == [(m.version, m.checksum) for m in migrations("duckdb")]
        assert rows[0] == (1, first.checksum)
        sink.write(records(3))
        assert sink.flush().receipts == 3
