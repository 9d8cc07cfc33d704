"""Warehouse migrations: the SQL files in ``sinks/migrations``, and the one routine that applies them.

Migrations are plain SQL files named ``NNNN_name.sql``, applied in order by a sink's ``setup()``
(:func:`apply_migrations`) and recorded with a checksum in ``schema_migrations``. The dialects
differ in a few type names only; a file writes ``{double}`` and :data:`DIALECTS` fills it in, and
``{in_analytics}`` before a table of the analytics store that a view of that store reads
(``analytics.`` on PostgreSQL; nothing on DuckDB, whose views resolve names in their own database
file, so the file works when opened on its own). A file whose first line is ``-- dialects: postgres``
(or ``duckdb``) runs on that dialect only; elsewhere it is recorded as applied with no statements. A
statement must not contain a semicolon outside a dollar-quoted ``$$`` block (files are split on
them), and an applied file must never change: ``setup()`` refuses to run against a warehouse whose
recorded checksum differs (add a new migration instead).

How the two engines apply them differs in transactions only, and :class:`~receiptflow.sinks.queries.Warehouse`
says how: on PostgreSQL every pending migration runs in one transaction under an advisory lock, so
several sinks starting at once apply each exactly once (and a login with only the sink role's rights
starts against a migrated warehouse: the bookkeeping DDL runs only when needed); on DuckDB (one
writing process per file) each migration is a transaction of its own, DDL included, and one that
touches the analytics file is recorded in a second transaction, since a DuckDB transaction writes one
database file (its statements are idempotent, so a crash between the two only runs them again).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from ..errors import WarehouseError
from .queries import MIGRATION_LOCK, Warehouse
from .tables import ANALYTICS_SCHEMA, Dialect

log = logging.getLogger(__name__)

# Placeholders a migration may use, per dialect.
DIALECTS: dict[Dialect, dict[str, str]] = {
    "duckdb": {"double": "DOUBLE", "in_analytics": ""},
    "postgres": {"double": "DOUBLE PRECISION", "in_analytics": "analytics."},
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    checksum: str  # sha256 of the file as written (before placeholders), the same for every dialect
    statements: tuple[str, ...]


def migrations(dialect: Dialect, folder: Path | None = None) -> list[Migration]:
    """Every migration in ``folder`` (default: the shipped ``sinks/migrations``), in order, rendered for ``dialect``."""
    source: Path | Traversable = folder if folder is not None else resources.files("receiptflow.sinks") / "migrations"
    found: list[Migration] = []
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        head = entry.name.split("_", 1)[0]
        if not head.isdigit():
            raise WarehouseError(f"migration file {entry.name!r} does not start with a version number")
        text = entry.read_text(encoding="utf-8")
        first = text.split("\n", 1)[0].strip()
        if (
            first.startswith("-- dialects:")
            and dialect not in first.removeprefix("-- dialects:").replace(",", " ").split()
        ):
            # Recorded as applied (with its checksum) so that version numbers stay the same everywhere.
            found.append(Migration(int(head), entry.name, hashlib.sha256(text.encode("utf-8")).hexdigest(), ()))
            continue
        rendered = text
        # Plain replacement, not str.format: SQL may contain braces of its own (struct or JSON literals).
        for name, value in DIALECTS[dialect].items():
            rendered = rendered.replace("{" + name + "}", value)
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        found.append(Migration(int(head), entry.name, checksum, tuple(split_sql(rendered))))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise WarehouseError(f"migration versions must be 1..n without gaps or repeats, found {versions}")
    return found


def split_sql(script: str) -> list[str]:
    """Statements of a migration file: ``--`` comment lines dropped, split on ``;`` outside ``$$`` blocks."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    statements, current = [], []
    # Even parts are outside dollar quotes (a PL/pgSQL body is one odd part, semicolons and all).
    for i, part in enumerate("\n".join(lines).split("$$")):
        if i % 2:
            current.append("$$" + part + "$$")
            continue
        pieces = part.split(";")
        current.append(pieces[0])
        for piece in pieces[1:]:
            statements.append("".join(current))
            current = [piece]
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    pending: list[Migration]  # not applied yet, in order
    unrecorded: list[Migration]  # applied before checksums were kept: record theirs now


def plan_migrations(dialect: Dialect, applied: Mapping[int, str | None], folder: Path | None = None) -> MigrationPlan:
    """What ``setup()`` must do, given ``applied`` (version → recorded checksum); raises if a file was edited."""
    plan = MigrationPlan([], [])
    known = migrations(dialect, folder)
    for m in known:
        if m.version not in applied:
            plan.pending.append(m)
            continue
        recorded = applied[m.version]
        if recorded is None:
            plan.unrecorded.append(m)
        elif recorded != m.checksum:
            raise WarehouseError(
                f"migration {m.name} was changed after it was applied to this warehouse; "
                "put schema changes in a new migration file"
            )
    unknown = sorted(set(applied) - {m.version for m in known})
    if unknown:
        raise WarehouseError(f"the warehouse has migrations {unknown} this code does not know: is it older?")
    return plan


SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)",
    # Warehouses created before checksums were recorded get the column; their NULLs are filled in.
    "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum TEXT",
)


def apply_migrations(db: Warehouse, where: str, folder: Path | None = None) -> None:
    """Apply the pending migrations of ``folder`` (default: the shipped ones) to ``db`` and record them.

    ``where`` names the warehouse in the log. Driver errors propagate unchanged (the sink's ``setup``
    reports them); a failing migration leaves no half-applied schema on either engine.
    """
    if db.migration_lock is None:
        _migrate(db, where, folder, outer=False)
        return
    try:
        db.begin()
        # First thing in the transaction: even CREATE TABLE IF NOT EXISTS races with a concurrent one.
        db.execute(db.migration_lock, (MIGRATION_LOCK,))
        _migrate(db, where, folder, outer=True)
        db.commit()
    except BaseException:
        db.abort()
        raise


def _migrate(db: Warehouse, where: str, folder: Path | None, *, outer: bool) -> None:
    """The migration steps; with ``outer`` inside one open transaction, else one transaction per migration."""
    p = db.p
    if db.migrations_ready is None or not db.execute(db.migrations_ready):
        for ddl in SCHEMA_MIGRATIONS_DDL:
            db.execute(ddl)
    applied = {int(v): c for v, c in db.execute("SELECT version, checksum FROM schema_migrations")}
    plan = plan_migrations(db.dialect, applied, folder)
    for m in plan.pending:
        if not outer:
            db.begin()
        try:
            for statement in m.statements:
                db.execute(statement)
            if db.one_file_per_transaction and any(f"{ANALYTICS_SCHEMA}." in s for s in m.statements):
                db.commit()
                db.begin()
            db.execute(
                f"INSERT INTO schema_migrations (version, name, checksum) VALUES ({p}, {p}, {p})",
                (m.version, m.name, m.checksum),
            )
            if not outer:
                db.commit()
        except BaseException:
            if not outer:
                db.abort()
            raise
        log.info("%s: applied migration %s", where, m.name)
    for m in plan.unrecorded:
        db.execute(f"UPDATE schema_migrations SET checksum = {p} WHERE version = {p}", (m.checksum, m.version))
