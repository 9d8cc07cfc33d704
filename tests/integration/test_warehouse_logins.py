"""The workers' PostgreSQL logins of the bundles, on a real PostgreSQL: made by ``receiptflow warehouse
setup`` (the owner's job, through the console script), able to do their work and nothing of the owner's.

The sink login of compose and Kubernetes (``rf_sink``, tests/unit/test_deploy_bundle.py checks the
bundles name it) writes a batch and follows an erasure (adds the hash, deletes the card's rows), and
is refused DROP, ALTER, CREATE in every schema, TRUNCATE, UPDATE, role changes and every relation its
group was not granted (the pseudonym key, the pseudonymous and marketing views). The support login
reads the card-linked tables and nothing of the analytics, and changes no schema either.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from receiptflow.config import Settings
from receiptflow.sinks import PostgresSink
from receiptflow.sinks.card_rows import record_erased

from ..unit.sinks.test_contract import SALT, cell_records, records

pytestmark = pytest.mark.integration

SINK, SUPPORT = Settings().warehouse.sink_user, Settings().warehouse.support_user  # the bundles' names


def _as(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, parts.fragment))


def _setup(owner_url: str, sink_password: str, support_password: str, **more: str) -> subprocess.CompletedProcess[str]:
    env = {
        **more,
        "PATH": "/usr/bin:/bin",
        "RECEIPTFLOW_WAREHOUSE_URL": owner_url,
        "RECEIPTFLOW_WAREHOUSE_SINK_PASSWORD": sink_password,
        "RECEIPTFLOW_WAREHOUSE_SUPPORT_PASSWORD": support_password,
        "RECEIPTFLOW_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # a local install: it asks no broker
    }
    return subprocess.run(
        [sys.executable, "-m", "receiptflow", "warehouse", "setup"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def logins(pg_database: str) -> Iterator[tuple[str, str]]:
    """The owner's setup run on a new warehouse; the URLs of the sink's and support's logins."""
    sink_password, support_password = secrets.token_hex(24), secrets.token_hex(24)
    done = _setup(pg_database, sink_password, support_password)
    assert done.returncode == 0, done.stderr
    assert f"logins {SINK}, {SUPPORT} set up" in done.stdout
    assert sink_password not in done.stdout + done.stderr
    yield _as(pg_database, SINK, sink_password), _as(pg_database, SUPPORT, support_password)


OWNER_THINGS = [
    "DROP TABLE receipts",
    "DROP TABLE analytics.cells",
    "ALTER TABLE receipts ADD COLUMN stolen INT",
    "ALTER TABLE erased_cards DROP CONSTRAINT erased_cards_pkey",
    "CREATE TABLE stolen (x INT)",
    "CREATE TABLE analytics.stolen (x INT)",
    "CREATE TABLE marketing.stolen (x INT)",
    "CREATE VIEW stolen AS SELECT 1 AS x",
    "CREATE SCHEMA stolen",
    "TRUNCATE receipts",
    "UPDATE receipts SET card_id = NULL",
    "DELETE FROM schema_migrations",
    "GRANT SELECT ON card_pseudonym_key TO PUBLIC",
    "SELECT * FROM card_pseudonym_key",
    "SELECT * FROM pseudonymous.card_months",
    "CREATE ROLE stolen LOGIN",
]


def _refused(con: psycopg.Connection[Any], statements: list[str]) -> None:
    for sql in statements:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute(sql)


def test_the_sink_login_of_the_bundles_writes_follows_erasures_and_does_nothing_of_the_owner_s(
    pg_database: str, logins: tuple[str, str]
) -> None:
    sink_url, _ = logins
    with psycopg.connect(pg_database, autocommit=True) as owner:
        attrs = owner.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin "
            "FROM pg_roles WHERE rolname = %s",
            (SINK,),
        ).fetchone()
        assert attrs == (False, False, False, False, False, True)
        member_of = owner.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            (SINK,),
        ).fetchall()
        assert member_of == [("receiptflow_sink",)]
        verifier = owner.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (SINK,)).fetchone()
        assert verifier is not None and str(verifier[0]).startswith("SCRAM-SHA-256$")  # never the clear text
    with PostgresSink(sink_url, erasure_salt=SALT) as sink:
        batch = records(30)
        sink.write([*batch, *cell_records(30)])
        assert sink.flush().receipts == 30
        card = next(r.purchase.card_id for r in batch if r.purchase.card_id is not None)
        deleted = record_erased(sink.warehouse, {sink.warehouse.card_hash(card): datetime.now(UTC)})
        assert deleted.get("receipts", 0) >= 1
    with psycopg.connect(sink_url, autocommit=True) as con:
        _refused(con, [*OWNER_THINGS, "SELECT * FROM marketing.card_share"])
        assert con.execute("SELECT count(*) FROM receipts WHERE card_id = %s", (card,)).fetchone() == (0,)


def test_the_support_login_reads_the_card_tables_and_nothing_else(pg_database: str, logins: tuple[str, str]) -> None:
    sink_url, support_url = logins
    with PostgresSink(sink_url, erasure_salt=SALT) as sink:
        sink.write([*records(10), *cell_records(10)])
        sink.flush()
    with psycopg.connect(support_url, autocommit=True) as con:
        assert con.execute("SELECT count(*) FROM receipts").fetchone() == (10,)
        _refused(
            con,
            [
                *OWNER_THINGS,
                "SELECT count(*) FROM analytics.cells",
                "SELECT count(*) FROM sink_offsets",
                "INSERT INTO receipts SELECT * FROM receipts LIMIT 1",
            ],
        )


def test_setup_again_changes_the_password_and_keeps_one_membership(pg_database: str, logins: tuple[str, str]) -> None:
    # (The test server trusts local connections, so the password itself is checked as its stored verifier.)
    def verifier() -> str:
        with psycopg.connect(pg_database, autocommit=True) as owner:
            row = owner.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (SINK,)).fetchone()
        assert row is not None
        return str(row[0])

    before = verifier()
    new = secrets.token_hex(24)
    again = _setup(pg_database, new, secrets.token_hex(24))
    assert again.returncode == 0, again.stderr
    changed = verifier()
    assert changed != before and changed.startswith("SCRAM-SHA-256$")
    with psycopg.connect(_as(pg_database, SINK, new)) as con:
        assert con.execute("SELECT count(*) FROM receipts").fetchone() == (0,)
    with psycopg.connect(pg_database, autocommit=True) as owner:
        count = owner.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            (SINK,),
        ).fetchone()
        assert count == (1,)
    # In production the bundle's placeholder is refused in one line, before anything is changed.
    placeholder = _setup(
        pg_database, "REPLACE-ME-not-a-real-password", secrets.token_hex(24), RECEIPTFLOW_DEPLOYMENT="production"
    )
    assert placeholder.returncode == 2, placeholder.stderr
    assert "RECEIPTFLOW_WAREHOUSE_SINK_PASSWORD" in placeholder.stderr and "Traceback" not in placeholder.stderr
    assert verifier() == changed  # unchanged
