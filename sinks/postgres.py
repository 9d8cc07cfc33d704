"""PostgreSQL warehouse sink (psycopg 3): the server option, ``postgresql://user@host:port/db``.

Bulk path: binary ``COPY`` of each table's rows into a session-private TEMP staging table, then
``INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT DO NOTHING`` into the real table, all in one
transaction per batch together with the offset upsert. COPY avoids a round trip or a bound
statement per row; the staging step is what lets ``ON CONFLICT`` (which COPY lacks) make replays
harmless. ``DISTINCT ON ... ORDER BY key`` also means concurrent sinks lock keys in the same order.

Rows of a card (receipts, their items and groups, consent changes) are staged with the card's salted
hash in one more column, and the insert leaves out those whose hash is in ``erased_cards`` (an
anti-join in the same ``INSERT ... SELECT``), so an erased card is never stored again, from the live
topics or a replay. Every batch transaction holds a shared advisory lock that erasure — and a sink
recording hashes newly read from the erased-cards topic — takes exclusively: it waits for the
batches in flight and the batches after it see the hash, so no row of the card can be committed
around it (``sinks.subject`` gives the whole argument).

The anonymous analytics go to the ``analytics`` schema (with the positions of ``purchases.analytics``
in ``analytics.sink_offsets``, in the same transaction as everything else); the schemas and the
roles that may read them are made by the migrations (0006, 0009).

Migrations run under a transaction-scoped advisory lock, so several sinks starting at once apply
each migration exactly once. They need the owner; against a migrated warehouse a login with only
the ``receiptflow_sink`` role's rights starts and writes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from ..card_hash import CardHasher
from ..errors import WarehouseError
from .base import (
    ANALYTICS_OFFSETS_SELECT,
    ANALYTICS_OFFSETS_UPSERT,
    CARD_TABLES,
    CHAINS_UPSERT,
    DEFAULT_GROUP,
    OFFSETS_SELECT,
    OFFSETS_UPSERT,
    SCHEMA_MIGRATIONS_DDL,
    TABLES,
    AnyRecord,
    Sink,
    Table,
    WriteResult,
    next_offsets,
    plan_migrations,
    to_rows,
)

log = logging.getLogger(__name__)

# Arbitrary but fixed: the advisory lock key every receiptflow sink takes while migrating.
_MIGRATION_LOCK = 20100501
# Shared by every batch transaction, exclusive for an erasure (``sinks.subject``).
ERASURE_LOCK = 20100502
_TEXT_OID = 25


class PostgresSink(Sink):
    """Warehouse tables in PostgreSQL; see the module docstring for the bulk path."""

    def __init__(
        self,
        url: str,
        group_id: str = DEFAULT_GROUP,
        migrations_dir: Path | None = None,
        *,
        erasure_salt: bytes,
    ) -> None:
        self.url = url  # may carry a password (Settings.warehouse_connection_url): never log it
        self.group_id = group_id
        self.migrations_dir = migrations_dir  # None: the shipped migrations
        self.card_hash = CardHasher(erasure_salt)
        self._conn: psycopg.Connection[Any] | None = None
        self._type_oids: dict[str, list[int]] = {}
        self._pending = WriteResult()
        self._in_tx = False

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise WarehouseError("PostgreSQL sink used before setup() or after close()")
        return self._conn

    def setup(self) -> None:
        if self._conn is not None:
            return
        try:
            self._conn = psycopg.connect(self.url, autocommit=False, application_name="receiptflow-sink")
            self._migrate()
            self._prepare_staging()
        except psycopg.Error as exc:
            self.close()
            raise WarehouseError(f"cannot open PostgreSQL warehouse: {exc}") from exc
        except WarehouseError:
            self.close()
            raise

    def _migrate(self) -> None:
        conn = self.conn
        with conn.transaction():
            # First thing in the transaction: even CREATE TABLE IF NOT EXISTS races with a concurrent one.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            # The bookkeeping DDL only when needed: a sink that logs in as a member of
            # receiptflow_sink (no CREATE, not the owner) starts against a migrated warehouse.
            ready = conn.execute(
                "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('schema_migrations') "
                "AND attname = 'checksum' AND NOT attisdropped"
            ).fetchone()
            if ready is None:
                for ddl in SCHEMA_MIGRATIONS_DDL:
                    conn.execute(ddl)
            rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
            plan = plan_migrations("postgres", {int(v): c for v, c in rows}, self.migrations_dir)
            for m in plan.pending:
                for statement in m.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
                log.info("PostgreSQL warehouse: applied migration %s", m.name)
            for m in plan.unrecorded:
                conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s", (m.checksum, m.version))
        conn.commit()

    def _prepare_staging(self) -> None:
        conn = self.conn
        for table in TABLES:
            # TEMP: private to this session, no WAL, gone when the connection closes.
            stage = _stage(table)
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name} INCLUDING DEFAULTS)")
            if table.name in CARD_TABLES:
                conn.execute(f"ALTER TABLE {stage} ADD COLUMN IF NOT EXISTS erased_check TEXT")
            rows = conn.execute(
                "SELECT attname, atttypid::int FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table.name,),
            ).fetchall()
            oids = {str(name): int(oid) for name, oid in rows}
            missing = [c for c in table.columns if c not in oids]
            if missing:
                raise WarehouseError(
                    f"table {table.name} lacks columns {missing}: migrations out of step with the code"
                )
            # Binary COPY needs the exact column types up front.
            self._type_oids[table.name] = [oids[c] for c in table.columns]
            if table.name in CARD_TABLES:
                self._type_oids[table.name].append(_TEXT_OID)
        conn.commit()

    def _copy_insert(self, table: Table, rows: list[tuple[Any, ...]], cards: list[str | None] | None) -> int:
        if not rows:
            return 0
        stage = _stage(table)
        cols = ", ".join(table.columns)
        keys = ", ".join(table.key)
        staged, erased = cols, ""
        if table.name in CARD_TABLES:
            if cards is None or len(cards) != len(rows):
                raise WarehouseError(f"rows of {table.name} without their cards: a row builder bug")
            rows = [(*row, h) for row, h in zip(rows, self.card_hash.column(cards), strict=True)]
            staged = cols + ", erased_check"
            erased = "WHERE NOT EXISTS (SELECT 1 FROM erased_cards AS e WHERE e.card_hash = s.erased_check) "
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY {stage} ({staged}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(self._type_oids[table.name])
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO {table.name} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {stage} AS s "
                f"{erased}ORDER BY {keys} ON CONFLICT DO NOTHING"
            )
            inserted = cur.rowcount
            # Empty the stage for the next write of this transaction (rolled back with it on failure).
            cur.execute(f"TRUNCATE {stage}")
        return max(inserted, 0)

    def write(self, batch: Sequence[AnyRecord]) -> None:
        if not batch:
            return
        rows = to_rows(batch)
        try:
            if not self._in_tx:
                # Held until the batch commits: an erasure (exclusive) waits for it, or it for the erasure.
                self.conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ERASURE_LOCK,))
            self._in_tx = True  # psycopg opened a transaction with the first statement
            for table, table_rows in rows.by_table():
                self._pending.add(table.name, self._copy_insert(table, table_rows, rows.cards.get(table.name)))
            for table, table_rows in rows.analytics_by_table():
                self._pending.add(table.name, self._copy_insert(table, table_rows, None))
            with self.conn.cursor() as cur:
                cur.executemany(
                    OFFSETS_UPSERT.format(p="%s"), [(self.group_id, t, p, o) for t, p, o in next_offsets(batch)]
                )
                cur.executemany(
                    ANALYTICS_OFFSETS_UPSERT.format(p="%s"),
                    [(self.group_id, t, p, o) for t, p, o in next_offsets(batch, analytics=True)],
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
        finally:
            self._in_tx = False
        return result

    def rollback(self) -> None:
        self._pending = WriteResult()
        self._in_tx = False
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.rollback()
            except psycopg.Error as exc:  # a broken connection: nothing left to roll back
                log.warning("PostgreSQL rollback failed: %s", exc)

    def sync_chains(self, rows: Sequence[tuple[str, str, str, str, datetime]]) -> None:
        if self._in_tx:
            raise WarehouseError("sync_chains() inside an unflushed write: flush or roll back first")
        try:
            with self.conn.cursor() as cur:
                # Sorted by chain (as the policy lists them), so concurrent starts lock rows in one order.
                cur.executemany(CHAINS_UPSERT.format(p="%s"), list(rows))
            self.conn.commit()
        except psycopg.Error as exc:
            self.rollback()
            raise WarehouseError(f"PostgreSQL chain dimension update failed: {exc}") from exc

    def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        if self._in_tx:
            raise WarehouseError("transaction() inside an unflushed write: flush or roll back first")
        out: list[list[tuple[Any, ...]]] = []
        try:
            with self.conn.cursor() as cur:
                for sql, params in statements:
                    cur.execute(sql, params)
                    out.append(list(cur.fetchall()) if cur.description else [])
            self.conn.commit()
        except psycopg.Error as exc:
            self.rollback()
            raise WarehouseError(f"PostgreSQL transaction failed: {exc}") from exc
        return out

    def committed_offsets(self, topic: str) -> dict[int, int]:
        rows = self.query(OFFSETS_SELECT.format(p="%s"), (self.group_id, topic))
        rows += self.query(ANALYTICS_OFFSETS_SELECT.format(p="%s"), (self.group_id, topic))
        return {int(p): int(o) for p, o in rows}

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                out = list(cur.fetchall())
            if not self._in_tx:
                # End the read-only transaction: an idle session must not hold a snapshot open.
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


def _stage(table: Table) -> str:
    """The session's staging table of ``table`` (``analytics.baskets`` → ``stage_analytics_baskets``)."""
    return "stage_" + table.name.replace(".", "_")
