"""Read-only questions to the warehouse: ``receiptflow sql``.

A person's query must never change the warehouse or stand in the sink's way more than it has to.
DuckDB: the warehouse file is opened read-only and its analytics file attached read-only as
``analytics`` (so ``analytics.product_group_mix`` reads the same on both engines); a file that
does not exist is not created. DuckDB lets one process write a file and no other process open it
meanwhile, so beside a running ``sink run`` the query is refused at once with what to do.
PostgreSQL: a read-only session, optionally under a group role (``receiptflow_analyst`` sees only
the analytics and pseudonymous schemas; see docs/warehouse.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from psycopg import sql as pgsql

from ..config import Settings
from ..errors import ConfigError, WarehouseError
from .duckdb import analytics_path_for
from .runner import duckdb_path

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
