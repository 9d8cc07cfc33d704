"""receiptflow sql on a PostgreSQL warehouse: a read-only session, optionally as the analyst group role."""

from __future__ import annotations

import pytest

from receiptflow.cli import main
from receiptflow.humanize import euros
from receiptflow.sinks import PostgresSink

from ..unit.sinks.test_contract import SALT, cell_records, records

pytestmark = pytest.mark.integration


def test_sql_reads_postgres_read_only_and_as_the_analyst_role(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = PostgresSink(pg_database, erasure_salt=SALT)
    sink.setup()
    sink.write([*records(20), *cell_records(40)])
    sink.flush()
    (cents,) = sink.conn.execute("SELECT sum(total_cents) FROM receipts").fetchone() or (0,)
    sink.close()
    monkeypatch.setenv("RECEIPTFLOW_WAREHOUSE_URL", pg_database)

    assert main(["sql", "SELECT count(*) AS receipts, sum(total_cents) AS total_cents FROM receipts"]) == 0
    assert euros(int(cents)) in capsys.readouterr().out

    # A read-only session: a write is refused in one line and changes nothing.
    assert main(["sql", "DELETE FROM receipts"]) == 1
    err = capsys.readouterr().err
    assert "read-only transaction" in err and "Traceback" not in err
    assert main(["sql", "--json", "SELECT count(*) AS n, sum(total_cents) AS total_cents FROM receipts"]) == 0
    assert f'"n": 20, "total_cents": {cents}' in capsys.readouterr().out  # numbers, not texts

    # As the analyst: the anonymous analytics, never the card-linked tables.
    assert main(["sql", "--role", "receiptflow_analyst", "SELECT sum(baskets) AS b FROM analytics.daily_sales"]) == 0
    capsys.readouterr()
    day = sum(r.cell.baskets for r in cell_records(40) if r.cell.key.family.value == "chain_day")
    chain_days = "SELECT sum(baskets) AS baskets FROM analytics.chain_daily_sales"
    assert main(["sql", "--json", "--role", "receiptflow_analyst", chain_days]) == 0
    assert f'"baskets": {day}' in capsys.readouterr().out
    assert main(["sql", "--role", "receiptflow_analyst", "SELECT count(*) FROM analytics.cells"]) == 0
    capsys.readouterr()
    assert main(["sql", "--role", "receiptflow_analyst", "SELECT count(*) FROM receipts"]) == 1
    assert "permission denied" in capsys.readouterr().err
