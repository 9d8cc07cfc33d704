"""Reading the warehouse without changing it: ``receiptflow sql``, ``export`` and the card holder's page.

A person's query must never change the warehouse or stand in the sink's way more than it has to.
DuckDB: the warehouse file is opened read-only and its analytics file attached read-only as
``analytics`` (so ``analytics.daily_sales`` reads the same on both engines); a file that
does not exist is not created. DuckDB lets one process write a file and no other process open it
meanwhile, so beside a running ``sink run`` the query is refused at once with what to do.
PostgreSQL: a read-only session, optionally under a group role (``receiptflow_analyst`` sees only
the analytics and pseudonymous schemas; see docs/warehouse.md).

:func:`open_warehouse` gives the same read-only connection as a
:class:`~receiptflow.sinks.queries.Warehouse` (``query`` with ``{p}`` placeholders) for code that
reads card rows: unlike opening a sink it runs no migration and writes no chain dimension, so a
read never writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from psycopg import sql as pgsql

from ..card_hash import CardHasher
from ..config import Settings
from ..errors import ConfigError, WarehouseError
from ..secrets import erasure_salt
from .duckdb import DuckDBWarehouse, analytics_path_for
from .postgres import PostgresWarehouse
from .queries import Warehouse
from .runner import duckdb_path
from .tables import ANALYTICS_SCHEMA

IN_USE = (
    "the DuckDB warehouse {path} is in use by another process (a running `receiptflow sink run`?): "
    "DuckDB lets no other process open the file while one writes it; stop that process first, "
    "or use a PostgreSQL warehouse to work beside a running sink"
)


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def is_lock_error(exc: BaseException) -> bool:
    """Whether DuckDB refused a file because another process holds it."""
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set lock" in text)


def query(settings: Settings, statement: str, *, role: str | None = None) -> QueryResult:
    """Run one read-only ``statement`` against the warehouse of ``settings``."""
    url = settings.resolved_warehouse_url
    if url.startswith("duckdb:"):
        return _duckdb(duckdb_path(url), statement)
    if url.split(":", 1)[0] in ("postgresql", "postgres"):
        return _postgres(settings.warehouse_connection_url(), statement, role)
    raise ConfigError(f"unsupported warehouse URL {url!r}: use duckdb:///abs/path.duckdb or postgresql://user@host/db")


@contextmanager
def open_warehouse(settings: Settings) -> Iterator[Warehouse]:
    """The warehouse of ``settings`` opened for reading only (closed on leaving the block).

    A DuckDB file that does not exist is not created, and one a running sink holds is refused at once;
    a PostgreSQL session runs every statement in a read-only transaction.
    """
    url = settings.resolved_warehouse_url
    hasher = CardHasher(erasure_salt(settings))
    db: Warehouse
    if url.startswith("duckdb:"):
        path = duckdb_path(url)
        if not path.exists():
            raise WarehouseError(f"no warehouse at {path}: `receiptflow sink run` creates it")
        db = _ReadOnlyDuckDB(path, analytics_path_for(path), hasher)
    elif url.split(":", 1)[0] in ("postgresql", "postgres"):
        db = _ReadOnlyPostgres(settings.warehouse_connection_url(), hasher, lambda: None)
    else:
        raise ConfigError(
            f"unsupported warehouse URL {url!r}: use duckdb:///abs/path.duckdb or postgresql://user@host/db"
        )
    try:
        yield db
    finally:
        db.close()


class _ReadOnlyDuckDB(DuckDBWarehouse):
    def __init__(self, path: Path, analytics_path: Path, card_hash: CardHasher) -> None:
        super().__init__(path, analytics_path, card_hash)
        try:
            self._con = duckdb.connect(str(path), read_only=True)
            if analytics_path.exists():
                quoted = str(analytics_path).replace("'", "''")
                self._con.execute(f"ATTACH '{quoted}' AS {ANALYTICS_SCHEMA} (READ_ONLY)")
        except duckdb.Error as exc:
            self.close()
            if is_lock_error(exc):
                raise WarehouseError(IN_USE.format(path=path)) from exc
            raise WarehouseError(f"cannot open the DuckDB warehouse {path}: {_first_line(exc)}") from exc


class _ReadOnlyPostgres(PostgresWarehouse):
    def __init__(self, url: str, card_hash: CardHasher, on_failed_read: Callable[[], None]) -> None:
        super().__init__(url, card_hash, on_failed_read)
        try:
            self._con = psycopg.connect(url, autocommit=False, application_name="receiptflow-read")
        except psycopg.Error as exc:
            raise WarehouseError(f"cannot reach the PostgreSQL warehouse: {_first_line(exc)}") from exc
        self._con.read_only = True  # every transaction of this session: BEGIN READ ONLY

    def commit(self) -> None:
        raise WarehouseError("the warehouse was opened for reading only")


def _duckdb(path: Path, statement: str) -> QueryResult:
    if not path.exists():
        raise WarehouseError(f"no warehouse at {path}: `receiptflow sink run` creates it")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if is_lock_error(exc):
            raise WarehouseError(IN_USE.format(path=path)) from exc
        raise WarehouseError(f"cannot open the DuckDB warehouse {path}: {exc}") from exc
    try:
        analytics = analytics_path_for(path)
        if analytics.exists():
            quoted = str(analytics).replace("'", "''")
            con.execute(f"ATTACH '{quoted}' AS analytics (READ_ONLY)")
        try:
            cursor = con.execute(statement)
        except duckdb.Error as exc:
            raise WarehouseError(f"the query failed: {_first_line(exc)}") from exc
        columns = [d[0] for d in cursor.description or ()]
        return QueryResult(columns, list(cursor.fetchall()) if columns else [])
    except duckdb.Error as exc:
        if is_lock_error(exc):
            raise WarehouseError(IN_USE.format(path=analytics_path_for(path))) from exc
        raise WarehouseError(f"cannot read the DuckDB warehouse {path}: {_first_line(exc)}") from exc
    finally:
        con.close()


def _postgres(url: str, statement: str, role: str | None) -> QueryResult:
    try:
        with psycopg.connect(url, autocommit=False, application_name="receiptflow-sql") as conn:
            conn.read_only = True
            if role:
                conn.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(role)))
            cursor = conn.execute(statement.encode())
            columns = [d.name for d in cursor.description or ()]
            rows: Sequence[tuple[Any, ...]] = cursor.fetchall() if columns else []
            conn.rollback()
            return QueryResult(columns, list(rows))
    except psycopg.OperationalError as exc:
        raise WarehouseError(f"cannot reach the PostgreSQL warehouse: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise WarehouseError(f"the query failed: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
