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
around it (``sinks.card_rows`` gives the whole argument).

The anonymous analytics cells go to the ``analytics`` schema (with the positions of
``purchases.analytics`` in ``analytics.sink_offsets``, in the same transaction as everything else);
the schemas and the roles that may read them are made by the migrations (0006, 0009, 0014).

Migrations (``sinks.migrate``) run under a transaction-scoped advisory lock, so several sinks
starting at once apply each migration exactly once. They need the owner; against a migrated
warehouse a login with only the ``receiptflow_sink`` role's rights starts and writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from ..card_hash import CardHasher
from ..errors import WarehouseError
from .base import Sink
from .migrate import apply_migrations
from .queries import ANALYTICS_OFFSETS_UPSERT, ERASURE_LOCK, OFFSETS_UPSERT, Connected, Params, Statement
from .rows import AnyRecord, next_offsets, to_rows
from .tables import CARD_TABLES, DEFAULT_GROUP, TABLES, RowCounts, Table

log = logging.getLogger(__name__)

_TEXT_OID = 25


class PostgresWarehouse(Connected[psycopg.Connection[Any]]):
    """The PostgreSQL connection, for reads (in read-only transactions outside a write) and transactions."""

    dialect = "postgres"
    engine = "PostgreSQL"
    migration_lock = "SELECT pg_advisory_xact_lock(%s)"
    # The bookkeeping DDL only when needed: a sink that logs in as a member of receiptflow_sink (no
    # CREATE, not the owner) starts against a migrated warehouse.
    migrations_ready = (
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('schema_migrations') "
        "AND attname = 'checksum' AND NOT attisdropped"
    )
    errors = (psycopg.Error,)

    def __init__(self, url: str, card_hash: CardHasher, on_failed_read: Callable[[], None]) -> None:
        super().__init__(card_hash)
        self.url = url  # may carry a password (Settings.warehouse_connection_url): never log it
        self._on_failed_read = on_failed_read  # the sink's rollback: a failed read also ends its write

    def open(self) -> None:
        """Connect (driver errors unchanged)."""
        self._con = psycopg.connect(self.url, autocommit=False, application_name="receiptflow-sink")

    def erasure_lock(self) -> list[Statement]:
        return [("SELECT pg_advisory_xact_lock(%s)", (ERASURE_LOCK,))]

    def execute(self, sql: str, params: Params = (), *, read_only: bool = False) -> list[tuple[Any, ...]]:
        conn = self.con
        if read_only and conn.info.transaction_status == TransactionStatus.IDLE:
            conn.read_only = True  # BEGIN READ ONLY: a read outside a write cannot change anything
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def begin(self) -> None:
        pass  # psycopg opens a transaction with the first statement

    def commit(self) -> None:
        self.con.commit()

    def abort(self) -> None:
        if self._con is not None and not self._con.closed:
            try:
                self._con.rollback()
                self._con.read_only = False
            except psycopg.Error as exc:  # a broken connection: nothing left to roll back
                log.warning("PostgreSQL rollback failed: %s", exc)

    def _end_read(self) -> None:
        # End the read-only transaction: an idle session must not hold a snapshot open.
        self.con.commit()
        self.con.read_only = False

    def _query_failed(self) -> None:
        self._on_failed_read()

    def _failed(self, what: str, exc: Exception) -> WarehouseError:
        return WarehouseError(f"PostgreSQL {what} failed: {exc}")


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
        self.warehouse = self._db = PostgresWarehouse(url, self.card_hash, self.rollback)
        self._type_oids: dict[str, list[int]] = {}
        self._pending = RowCounts()

    @property
    def conn(self) -> psycopg.Connection[Any]:
        return self._db.con

    def setup(self) -> None:
        if self._db.is_open:
            return
        try:
            self._db.open()
            apply_migrations(self._db, "PostgreSQL warehouse", self.migrations_dir)
            self._prepare_staging()
        except psycopg.Error as exc:
            self.close()
            raise WarehouseError(f"cannot open PostgreSQL warehouse: {exc}") from exc
        except WarehouseError:
            self.close()
            raise

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
            if not self._db.in_write:
                # Held until the batch commits: an erasure (exclusive) waits for it, or it for the erasure.
                self.conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ERASURE_LOCK,))
            self._db.in_write = True  # psycopg opened a transaction with the first statement
            for table, table_rows in rows.by_table():
                self._pending.add(table.name, self._copy_insert(table, table_rows, rows.cards.get(table.name)))
            for table, table_rows in rows.analytics_by_table():
                self._pending.add(table.name, self._copy_insert(table, table_rows, None))
            with self.conn.cursor() as cur:
                cur.executemany(
                    self._db.sql(OFFSETS_UPSERT), [(self.group_id, t, p, o) for t, p, o in next_offsets(batch)]
                )
                cur.executemany(
                    self._db.sql(ANALYTICS_OFFSETS_UPSERT),
                    [(self.group_id, t, p, o) for t, p, o in next_offsets(batch, analytics=True)],
                )
        except psycopg.Error as exc:
            self.rollback()
            raise WarehouseError(f"PostgreSQL write failed: {exc}") from exc

    def flush(self) -> RowCounts:
        result, self._pending = self._pending, RowCounts()
        try:
            self.conn.commit()
        except psycopg.Error as exc:
            self.rollback()
            raise WarehouseError(f"PostgreSQL commit failed: {exc}") from exc
        finally:
            self._db.in_write = False
        return result

    def rollback(self) -> None:
        self._pending = RowCounts()
        self._db.in_write = False
        self._db.abort()


def _stage(table: Table) -> str:
    """The session's staging table of ``table`` (``analytics.cells`` → ``stage_analytics_cells``)."""
    return "stage_" + table.name.replace(".", "_")
