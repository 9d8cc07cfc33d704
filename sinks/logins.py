"""The workers' PostgreSQL logins: ``receiptflow warehouse setup``, the owner's one-shot job before the workers start.

The migrations (0006, 0009, 0014) make the group roles (``receiptflow_sink``, ``receiptflow_support``
…) and grant each the least it needs, but nothing logs in as a group. This job, run as the owner
(who may create roles), applies the pending migrations and then, for each worker whose password it
is given, creates or updates its login as a member of its group and nothing else:

* ``rf_sink`` (``RECEIPTFLOW_WAREHOUSE_SINK_USER``/``_SINK_PASSWORD``) in ``receiptflow_sink``: the
  warehouse sink of the compose and Kubernetes bundles;
* ``rf_support`` (``RECEIPTFLOW_WAREHOUSE_SUPPORT_USER``/``_SUPPORT_PASSWORD``) in
  ``receiptflow_support``: ``export`` and ``erase`` run by the data-protection staff.

A login is ``LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT``: it owns
nothing and may create nothing, so it can neither drop nor alter a table nor create one in any
schema, and it reads only what its group was granted. Its password is sent as the SCRAM-SHA-256
verifier the client library computes (``PQencryptPasswordConn``), never in clear, so no server log
holds it.

The sink also follows erasures: it adds the erased cards' hashes to ``erased_cards`` and deletes the
rows those cards still have (``sinks.card_rows.record_erased``). Migration 0009 granted the group
neither, so a sink running under its login would fail at the first erasure; :data:`SINK_FOLLOWS_ERASURES`
grants them here (idempotent), until a migration takes them over.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..card_hash import CardHasher
from ..errors import ConfigError, WarehouseError
from .migrate import apply_migrations
from .postgres import PostgresWarehouse

SINK_GROUP = "receiptflow_sink"
SUPPORT_GROUP = "receiptflow_support"
# Erasure's follow-up in every sink (record_erased): the hashes in, the erased cards' rows out.
SINK_FOLLOWS_ERASURES = (
    "GRANT INSERT ON erased_cards TO receiptflow_sink",
    "GRANT DELETE ON receipts, receipt_items, receipt_groups, consent_changes TO receiptflow_sink",
)
_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"


@dataclass(frozen=True, slots=True)
class Login:
    """A worker's login: its name, the group role it is a member of, and its password (never printed)."""

    name: str
    group: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Login(name={self.name!r}, group={self.group!r})"


def check_login_name(name: str) -> str:
    """``name`` if it is a plain PostgreSQL role name (lower-case letters, digits, ``_``; not a group's)."""
    if not name or len(name) > 63 or not all(c.islower() or c.isdigit() or c == "_" for c in name) or name[0].isdigit():
        raise ConfigError(f"{name!r} is not a login name: lower-case letters, digits and _, up to 63 characters")
    if name.startswith("receiptflow_") or name.startswith("pg_"):
        raise ConfigError(f"{name!r} is the name of a group role: give the login a name of its own")
    return name


def login_statements(login: Login, verifier: str, exists: bool) -> list[sql.Composed]:
    """What makes ``login`` a member of its group with ``verifier`` as its password, and nothing more (pure)."""
    role = sql.Identifier(check_login_name(login.name))
    make = "ALTER ROLE {} WITH " if exists else "CREATE ROLE {} WITH "
    return [
        sql.SQL(make + _ATTRIBUTES + " PASSWORD {}").format(role, sql.Literal(verifier)),
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(login.group), role),
    ]


def set_up_logins(url: str, logins: Sequence[Login]) -> list[str]:
    """As the owner at ``url``: apply the migrations, the sink's erasure grants, then each login; their names."""
    # Migrations hash nothing: a throwaway key stands in for the erasure salt, which this job need not hold.
    db = PostgresWarehouse(url, CardHasher(os.urandom(32)), lambda: None)
    try:
        db.open()
        apply_migrations(db, "PostgreSQL warehouse")
    except psycopg.Error as exc:
        raise WarehouseError(f"warehouse setup: the migrations failed: {exc}") from exc
    finally:
        db.close()
    try:
        with (
            psycopg.connect(url, autocommit=True, application_name="receiptflow-warehouse-setup") as con,
            con.transaction(),
        ):
            for statement in SINK_FOLLOWS_ERASURES:
                con.execute(statement)
            for login in logins:
                _set_up(con, login)
    except psycopg.Error as exc:
        raise WarehouseError(
            f"warehouse setup: the logins could not be set up (run it as the warehouse owner): {exc}"
        ) from exc
    return [login.name for login in logins]


def _set_up(con: psycopg.Connection[Any], login: Login) -> None:
    exists = con.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login.name,)).fetchone() is not None
    verifier = con.pgconn.encrypt_password(login.password.encode(), login.name.encode(), b"scram-sha-256").decode()
    for statement in login_statements(login, verifier, exists):
        con.execute(statement)
