"""PostgreSQL warehouse sink: the server option.

Bulk path: ``COPY`` into temporary staging tables, then ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING`` into the real tables, in one transaction per batch together with the offset upsert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..errors import WarehouseError
from .base import (
    GROUP_COLUMNS,
    ITEM_COLUMNS,
    RECEIPT_COLUMNS,
    TABLE_KEYS,
    Sink,
    SinkRecord,
    WriteResult,
    migrations,
    next_offsets,
    split_sql,
    to_rows,
)


class PostgresSink(Sink):
    def __init__(self, url: str, consumer: str = "receiptflow-warehouse") -> None:
        self.url = url
        self.consumer = consumer
        self._conn: psycopg.Connection[Any] | None = None
        self._pending = WriteResult()

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise WarehouseError("PostgreSQL sink used before setup()")
        return self._conn

    def setup(self) -> None:
        try:
            self._conn = psycopg.connect(self.url, autocommit=False)
            with self.conn.transaction():
                # One sink at a time applies migrations.
                self.conn.execute("SELECT pg_advisory_xact_lock(20100501)")
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = {r[0] for r in self.conn.execute("SELECT version FROM schema_migrations").fetchall()}
                for version, name, sql in migrations("DOUBLE PRECISION"):
                    if version in done:
                        continue
                    for statement in split_sql(sql):
                        self.conn.execute(statement)
                    self.conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            self.conn.commit()
        except psycopg.Error as exc:
            raise WarehouseError(f"cannot open PostgreSQL warehouse: {exc}") from exc

    def _copy_insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        stage = f"stage_{table}"
        cols = ", ".join(columns)
        self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            keys = ", ".join(TABLE_KEYS[table])
            cur.execute(
                f"INSERT INTO {table} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {stage} ON CONFLICT DO NOTHING"
            )
            inserted = cur.rowcount
            cur.execute(f"TRUNCATE {stage}")
        return max(inserted, 0)

    def write(self, batch: Sequence[SinkRecord]) -> None:
        if not batch:
            return
        rows = to_rows(batch)
        try:
            self._pending.receipts += self._copy_insert("receipts", RECEIPT_COLUMNS, rows.receipts)
            self._pending.items += self._copy_insert("receipt_items", ITEM_COLUMNS, rows.items)
            self._pending.groups += self._copy_insert("receipt_groups", GROUP_COLUMNS, rows.groups)
            with self.conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO sink_offsets (consumer, topic, kafka_partition, next_offset) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (consumer, topic, kafka_partition) DO UPDATE SET "
                    "next_offset = greatest(sink_offsets.next_offset, excluded.next_offset)",
                    [(self.consumer, t, p, o) for (t, p), o in next_offsets(batch).items()],
                )
        except psycopg.Error as exc:
            self.rollback()
            raise WarehouseError(f"PostgreSQL write failed: {exc}") from exc

    def flush(self) -> WriteResult:
        result, self._pending = self._pending, WriteResult()
        try:
            self.conn.commit()
        except psycopg.Error as exc:
            self.rollback()
            raise WarehouseError(f"PostgreSQL commit failed: {exc}") from exc
        return result

    def rollback(self) -> None:
        self._pending = WriteResult()
        if self._conn is not None and not self._conn.closed:
            self._conn.rollback()

    def committed_offsets(self, topic: str) -> dict[int, int]:
        rows = self.query(
            "SELECT kafka_partition, next_offset FROM sink_offsets WHERE consumer = %s AND topic = %s",
            (self.consumer, topic),
        )
        return {int(p): int(o) for p, o in rows}

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                out = list(cur.fetchall())
            self.conn.commit()
            return out
        except psycopg.Error as exc:
            self.rollback()
            raise WarehouseError(f"PostgreSQL query failed: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self.rollback()
            self._conn.close()
            self._conn = None
