"""Reading and running statements against a warehouse, in its dialect: what jobs and erasure use.

A :class:`Warehouse` is the connection of an open sink as everything but the write path sees it:
``query`` (a read; on PostgreSQL in a read-only transaction when no write is open),
``transaction`` (statements all or nothing, between flushes), the placeholder style (``?`` on
DuckDB, ``%s`` on PostgreSQL; write ``{p}`` in a template and :meth:`Warehouse.sql` fills it in)
and the locks a dialect needs. Callers never ask which engine they have.

It shares the sink's connection on purpose: DuckDB allows one writing process per file, so a job
beside a sink in the same process must go through the sink's own connection, and PostgreSQL
credentials are handled once. The dialect-specific part (how to begin, run, commit, and which
driver errors to turn into :class:`~receiptflow.errors.WarehouseError`) is in ``sinks.duckdb`` and
``sinks.postgres``; everything else is here, once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from ..card_hash import CardHasher
from ..errors import WarehouseError
from .tables import ANALYTICS_SCHEMA, Dialect

Params = Sequence[Any]
Statement = tuple[str, Params]

# Advisory lock keys (PostgreSQL), arbitrary but fixed. The migration lock is taken by every sink
# while migrating; the erasure lock is held shared by every batch transaction and exclusively by an
# erasure (see ``sinks.card_rows``).
MIGRATION_LOCK = 20100501
ERASURE_LOCK = 20100502

# Offsets upsert, shared by both dialects apart from the parameter style. greatest() keeps the stored
# position monotonic: a zombie consumer that still finishes a batch of a partition after a rebalance
# handed it to someone else must not move the position backwards.
OFFSETS_UPSERT = (
    "INSERT INTO sink_offsets (consumer, topic, kafka_partition, next_offset) VALUES ({p}, {p}, {p}, {p}) "
    "ON CONFLICT (consumer, topic, kafka_partition) DO UPDATE SET "
    "next_offset = greatest(sink_offsets.next_offset, excluded.next_offset)"
)
OFFSETS_SELECT = "SELECT kafka_partition, next_offset FROM sink_offsets WHERE consumer = {p} AND topic = {p}"
# The positions of purchases.analytics live in the analytics store, committed with its rows: on DuckDB
# that is another database file, which one transaction cannot write together with the main one.
ANALYTICS_OFFSETS_UPSERT = OFFSETS_UPSERT.replace("INTO sink_offsets", f"INTO {ANALYTICS_SCHEMA}.sink_offsets", 1)
ANALYTICS_OFFSETS_SELECT = OFFSETS_SELECT.replace("FROM sink_offsets", f"FROM {ANALYTICS_SCHEMA}.sink_offsets", 1)

# The chain dimension from the policy file. An upsert, not delete + insert: two sinks starting at once
# both write the same rows without a key conflict, and a chain the policy dropped keeps its row (its
# receipts still refer to it).
CHAINS_UPSERT = (
    "INSERT INTO dim_chains (chain, chain_group, current_level, current_policy_version, updated_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (chain) DO UPDATE SET chain_group = excluded.chain_group, "
    "current_level = excluded.current_level, current_policy_version = excluded.current_policy_version, "
    "updated_at = excluded.updated_at"
)

# The erased-cards record: erasure adds a hash with its rows' deletes, in one transaction.
ERASED_INSERT = "INSERT INTO erased_cards (card_hash, erased_at) VALUES ({p}, {p}) ON CONFLICT (card_hash) DO NOTHING"

PLACEHOLDERS: dict[Dialect, str] = {"duckdb": "?", "postgres": "%s"}


class Warehouse(abc.ABC):
    """An open warehouse connection: reads, transactions between flushes, and the dialect's SQL.

    ``in_write`` is True while a sink's batch is staged and not yet flushed; ``transaction`` refuses
    then, and ``query`` sees the staged rows too. A warehouse is used from one thread at a time.
    """

    dialect: ClassVar[Dialect]
    # A transaction-scoped lock that serialises migrations, or None where one process writes anyway.
    migration_lock: ClassVar[str | None] = None
    # A query that returns a row once ``schema_migrations`` has its checksum column, or None: run
    # the (idempotent) bookkeeping DDL every time.
    migrations_ready: ClassVar[str | None] = None
    # Whether one transaction writes one database file only (DuckDB: the analytics store is another).
    one_file_per_transaction: ClassVar[bool] = False
    errors: ClassVar[tuple[type[Exception], ...]] = ()  # the driver's errors, turned into WarehouseError

    def __init__(self, card_hash: CardHasher) -> None:
        self.card_hash = card_hash  # card id → the salted hash ``erased_cards`` keeps
        self.in_write = False

    @property
    def p(self) -> str:
        """The parameter placeholder of this dialect."""
        return PLACEHOLDERS[self.dialect]

    def sql(self, template: str) -> str:
        """``template`` with every ``{p}`` replaced by this dialect's placeholder."""
        return template.replace("{p}", self.p)

    def erasure_lock(self) -> list[Statement]:
        """Statements that take the erasure lock exclusively for the rest of a transaction (none on DuckDB,
        where an erasure and a sink cannot overlap: one process holds the file)."""
        return []

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run a read query. Outside a write it sees committed data; inside one, also the staged rows."""
        try:
            rows = self.execute(sql, params, read_only=not self.in_write)
            if not self.in_write:
                self._end_read()
            return rows
        except self.errors as exc:
            self._query_failed()
            raise self._failed("query", exc) from exc

    def transaction(
        self, statements: Sequence[Statement], *, caller: str = "transaction", what: str = "transaction"
    ) -> list[list[tuple[Any, ...]]]:
        """Run ``statements`` in one transaction of their own (all or nothing); the rows each returned.

        Not inside a write: call it between flushes. ``caller`` and ``what`` name the work in errors.
        """
        if self.in_write:
            raise WarehouseError(f"{caller}() inside an unflushed write: flush or roll back first")
        out: list[list[tuple[Any, ...]]] = []
        try:
            self.begin()
            for sql, params in statements:
                out.append(self.execute(sql, params))
            self.commit()
        except self.errors as exc:
            self.abort()
            raise self._failed(what, exc) from exc
        return out

    # --- what a dialect provides ---------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """Whether the connection is open (between the sink's ``setup`` and ``close``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect (idempotent)."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Params = (), *, read_only: bool = False) -> list[tuple[Any, ...]]:
        """Execute one statement in the current transaction; its rows ([] when it returns none).
        Driver errors are not translated (migrations let them reach the sink's ``setup``).

        ``read_only``: the statement opens a transaction only to read (PostgreSQL makes it read-only).
        """

    @abc.abstractmethod
    def begin(self) -> None:
        """Open a transaction (where the driver does not open one implicitly)."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Commit the open transaction."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Roll back the open transaction, quietly: it may already be aborted or the connection gone."""

    @abc.abstractmethod
    def _end_read(self) -> None:
        """After a read outside a write: end whatever the read opened."""

    @abc.abstractmethod
    def _query_failed(self) -> None:
        """After a failed read: put the connection back in a usable state."""

    @abc.abstractmethod
    def _failed(self, what: str, exc: Exception) -> WarehouseError:
        """The error to raise for a driver error during ``what``."""


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class Connected(Warehouse, Generic[C]):
    """A warehouse over one driver connection ``C``, open between the sink's ``setup`` and ``close``."""

    engine: ClassVar[str]  # for people: "DuckDB", "PostgreSQL"

    def __init__(self, card_hash: CardHasher) -> None:
        super().__init__(card_hash)
        self._con: C | None = None

    @abc.abstractmethod
    def open(self) -> None:
        """Connect (driver errors unchanged); the sink's ``setup`` then migrates."""

    @property
    def con(self) -> C:
        if self._con is None:
            raise WarehouseError(f"{self.engine} sink used before setup() or after close()")
        return self._con

    @property
    def is_open(self) -> bool:
        return self._con is not None

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def sync_chains(warehouse: Warehouse, rows: Sequence[tuple[Any, ...]]) -> None:
    """Upsert the chain dimension (``rows.chain_dimension_rows``) in a transaction of its own.

    Sorted by chain (as the policy lists them), so concurrent starts lock rows in one order.
    """
    upsert = warehouse.sql(CHAINS_UPSERT)
    warehouse.transaction([(upsert, tuple(r)) for r in rows], caller="sync_chains", what="chain dimension update")


def warehouse_counts(warehouse: Warehouse) -> dict[str, Any]:
    """Receipts and their total cents, overall and per chain: what the demo and tests compare with the truth.

    ``{"receipts": n, "total_cents": c, "per_chain": {chain: {"receipts": n, "total_cents": c}}}``
    """
    total = warehouse.query("SELECT count(*), coalesce(sum(total_cents), 0) FROM receipts")[0]
    per_chain = warehouse.query("SELECT chain, count(*), sum(total_cents) FROM receipts GROUP BY chain ORDER BY chain")
    return {
        "receipts": int(total[0]),
        "total_cents": int(total[1]),
        "per_chain": {str(c): {"receipts": int(n), "total_cents": int(s)} for c, n, s in per_chain},
    }


def cell_counts(warehouse: Warehouse) -> dict[str, Any]:
    """The analytics cells: how many, of how many windows, and each chain's published day figures.

    ``{"cells": n, "windows": w, "per_chain": {chain: {"baskets": n, "sales_cents": c}}}``, the
    per-chain figures summed over its ``chain_day`` cells (a window of fewer than ``k`` sale baskets
    publishes none): what the demo and tests compare with the truth, as ``warehouse_counts`` does
    for the receipts.
    """
    total = warehouse.query(f"SELECT count(*), count(DISTINCT window_id) FROM {ANALYTICS_SCHEMA}.cells")[0]
    per_chain = warehouse.query(
        f"SELECT chain, sum(baskets), sum(amount_cents) FROM {ANALYTICS_SCHEMA}.cells WHERE family = 'chain_day' "
        "GROUP BY chain ORDER BY chain"
    )
    return {
        "cells": int(total[0]),
        "windows": int(total[1]),
        "per_chain": {str(c): {"baskets": int(n), "sales_cents": int(s)} for c, n, s in per_chain},
    }
