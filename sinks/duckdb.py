"""DuckDB warehouse sink: the embedded default, one file under the data dir.

Bulk path: multi-row ``INSERT ... VALUES`` statements of a few hundred rows each with
``ON CONFLICT DO NOTHING`` (no pyarrow/pandas needed), inside one transaction per batch together
with the offset upsert. DuckDB allows one writing process per file: the sink owns the file while it
runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from ..errors import WarehouseError
from .base import (
    GROUP_COLUMNS,
    ITEM_COLUMNS,
    RECEIPT_COLUMNS,
    Sink,
    SinkRecord,
    WriteResult,
    migrations,
    next_offsets,
    split_sql,
    to_rows,
)

CHUNK = 200  # rows per INSERT statement: large enough to amortise parsing, small enough to plan fast


class DuckDBSink(Sink):
    def __init__(self, path: Path, consumer: str = "receiptflow-warehouse") -> None:
        self.path = path
        self.consumer = consumer
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pending = WriteResult()
        self._in_tx = False

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise WarehouseError("DuckDB sink used before setup()")
        return self._con

    def setup(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(self.path))
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
            )
            done = {row[0] for row in self.con.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, name, sql in migrations("DOUBLE"):
                if version in done:
                    continue
                self.con.execute("BEGIN")
                for statement in split_sql(sql):
                    self.con.execute(statement)
                self.con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
                self.con.execute("COMMIT")
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open DuckDB warehouse {self.path}: {exc}") from exc

    def _insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> int:
        inserted = 0
        row_sql = "(" + ", ".join("?" for _ in columns) + ")"
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                + ", ".join(row_sql for _ in chunk)
                + " ON CONFLICT DO NOTHING"
            )
            params = [v for row in chunk for v in row]
            result = self.con.execute(sql, params).fetchone()
            inserted += int(result[0]) if result else 0
        return inserted

    def write(self, batch: Sequence[SinkRecord]) -> None:
        if not batch:
            return
        rows = to_rows(batch)
        try:
            if not self._in_tx:
                self.con.execute("BEGIN")
                self._in_tx = True
            self._pending.receipts += self._insert("receipts", RECEIPT_COLUMNS, rows.receipts)
            self._pending.items += self._insert("receipt_items", ITEM_COLUMNS, rows.items)
            self._pending.groups += self._insert("receipt_groups", GROUP_COLUMNS, rows.groups)
            for (topic, partition), offset in next_offsets(batch).items():
                self.con.execute(
                    "INSERT INTO sink_offsets (consumer, topic, kafka_partition, next_offset) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (consumer, topic, kafka_partition) DO UPDATE SET "
                    "next_offset = greatest(sink_offsets.next_offset, excluded.next_offset)",
                    [self.consumer, topic, partition, offset],
                )
        except duckdb.Error as exc:
            self.rollback()
            raise WarehouseError(f"DuckDB write failed: {exc}") from exc

    def flush(self) -> WriteResult:
        result, self._pending = self._pending, WriteResult()
        if self._in_tx:
            try:
                self.con.execute("COMMIT")
            except duckdb.Error as exc:
                self.rollback()
                raise WarehouseError(f"DuckDB commit failed: {exc}") from exc
            finally:
                self._in_tx = False
        return result

    def rollback(self) -> None:
        self._pending = WriteResult()
        if self._in_tx:
            self._in_tx = False
            # The transaction may already have been aborted by the failed statement.
            with contextlib.suppress(duckdb.Error):
                self.con.execute("ROLLBACK")

    def committed_offsets(self, topic: str) -> dict[int, int]:
        rows = self.con.execute(
            "SELECT kafka_partition, next_offset FROM sink_offsets WHERE consumer = ? AND topic = ?",
            [self.consumer, topic],
        ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self.con.execute(sql, list(params)).fetchall())
        except duckdb.Error as exc:
            raise WarehouseError(f"DuckDB query failed: {exc}") from exc

    def close(self) -> None:
        if self._con is not None:
            self.rollback()
            self._con.close()
            self._con = None
