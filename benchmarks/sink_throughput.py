"""Warehouse sink throughput: rows/s into DuckDB and PostgreSQL next to plain bulk inserts, same run.

The same simulated purchases (as the processor emits them) go into empty warehouses, in batches of
``--batch`` receipts, each batch one transaction:

* ``sink``                    ``DuckDBSink`` / ``PostgresSink`` ``write(batch)`` + ``flush()``: rows of
                              the three tables, conflict handling on natural keys, offsets stored
                              in the same transaction (what production runs);
* ``plain executemany``       the first thing one writes: ``executemany`` of one ``INSERT`` per row,
                              no conflict handling, no offsets (timed on a slice: it is slow);
* ``plain bulk``              the engine's own bulk path without our extras: DuckDB's columnar
                              ``INSERT … SELECT unnest(?)`` and PostgreSQL's binary ``COPY`` straight
                              into the tables, no conflict handling, no offsets: the ceiling.

rows/s counts every row written (receipts + item lines + group totals). PostgreSQL is a local
server started for the run (the project's embedded one) unless ``--postgres-url`` names one.
Usage: ``python benchmarks/sink_throughput.py [--receipts N] [--batch N] [--postgres-url URL]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from receiptflow.config import Settings
from receiptflow.policy import load_policy
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import DuckDBSink, PostgresSink, SinkRecord, to_rows
from receiptflow.sinks.duckdb import analytics_path_for
from receiptflow.sinks.rows import Rows
from receiptflow.sinks.tables import ANALYTICS_TABLES, TABLES
from receiptflow.stack.postgres import EmbeddedPostgres
from receiptflow.stack.process import free_port

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def records(n: int) -> list[SinkRecord]:
    sim = Simulator(7, stores=60, customers=5000)
    policy = load_policy()
    return [
        SinkRecord(process(c, policy, None, NOW).customer, "purchases.customer", i % 6, i // 6)
        for i, c in enumerate(sim.stream(n, datetime(2026, 11, 20, tzinfo=UTC), rate=5))
    ]


def batches(recs: Sequence[SinkRecord], size: int) -> list[Sequence[SinkRecord]]:
    return [recs[i : i + size] for i in range(0, len(recs), size)]


def row_count(rows: Rows) -> int:
    return len(rows.receipts) + len(rows.items) + len(rows.groups)


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# --- DuckDB ----------------------------------------------------------------------------------------
def duckdb_schema(path: Path) -> duckdb.DuckDBPyConnection:
    # The sink's own setup makes the schema (its migrations, in order); the baseline then writes raw.
    sink = DuckDBSink(path, erasure_salt=secrets.token_bytes(32))
    sink.setup()
    sink.close()
    con = duckdb.connect(str(path))
    con.execute(f"ATTACH '{analytics_path_for(path)}' AS analytics")
    return con


def duckdb_sink(path: Path, parts: list[Sequence[SinkRecord]]) -> float:
    sink = DuckDBSink(path, erasure_salt=secrets.token_bytes(32))
    sink.setup()

    def run() -> None:
        for b in parts:
            sink.write(b)
            sink.flush()

    try:
        return timed(run)
    finally:
        sink.close()


def duckdb_executemany(path: Path, parts: list[Rows]) -> float:
    con = duckdb_schema(path)

    def run() -> None:
        for rows in parts:
            con.execute("BEGIN")
            for table, table_rows in rows.by_table():
                if table_rows:
                    marks = ", ".join("?" for _ in table.columns)
                    insert = f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})"
                    con.executemany(insert, table_rows)
            con.execute("COMMIT")

    try:
        return timed(run)
    finally:
        con.close()


def duckdb_bulk(path: Path, parts: list[Rows]) -> float:
    con = duckdb_schema(path)
    types = {
        t.name: dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [t.name]
            ).fetchall()
        )
        for t in TABLES
        if t.name not in ANALYTICS_TABLES  # the purchases here carry no analytics baskets
    }
    sql = {
        t.name: f"INSERT INTO {t.name} ({', '.join(t.columns)}) SELECT "
        + ", ".join(f"unnest(CAST(? AS {types[t.name][c]}[]))" for c in t.columns)
        for t in TABLES
        if t.name in types
    }

    def run() -> None:
        for rows in parts:
            con.execute("BEGIN")
            for table, table_rows in rows.by_table():
                if table_rows:
                    con.execute(sql[table.name], [list(col) for col in zip(*table_rows, strict=True)])
            con.execute("COMMIT")

    try:
        return timed(run)
    finally:
        con.close()


# --- PostgreSQL ------------------------------------------------------------------------------------
def fresh_database(server_url: str) -> str:
    name = f"rf_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def postgres_schema(url: str) -> psycopg.Connection[Any]:
    # The sink's own setup makes the schema (its migrations, in order); the baseline then writes raw.
    sink = PostgresSink(url, erasure_salt=secrets.token_bytes(32))
    sink.setup()
    sink.close()
    return psycopg.connect(url)


def postgres_sink(url: str, parts: list[Sequence[SinkRecord]]) -> float:
    sink = PostgresSink(url, erasure_salt=secrets.token_bytes(32))
    sink.setup()

    def run() -> None:
        for b in parts:
            sink.write(b)
            sink.flush()

    try:
        return timed(run)
    finally:
        sink.close()


def postgres_bytes(url: str) -> int:
    """Bytes of the card-linked tables with their indexes and TOAST (``pg_total_relation_size``)."""
    with psycopg.connect(url) as con:
        row = con.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname = 'public'"
        ).fetchone()
    return int(row[0] or 0) if row else 0


def postgres_executemany(url: str, parts: list[Rows]) -> float:
    con = postgres_schema(url)

    def run() -> None:
        with con.cursor() as cur:
            for rows in parts:
                for table, table_rows in rows.by_table():
                    if table_rows:
                        marks = ", ".join("%s" for _ in table.columns)
                        cur.executemany(
                            f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})", table_rows
                        )
                con.commit()

    try:
        return timed(run)
    finally:
        con.close()


def postgres_copy(url: str, parts: list[Rows]) -> float:
    con = postgres_schema(url)

    def run() -> None:
        with con.cursor() as cur:
            for rows in parts:
                for table, table_rows in rows.by_table():
                    if table_rows:
                        with cur.copy(f"COPY {table.name} ({', '.join(table.columns)}) FROM STDIN") as copy:
                            for row in table_rows:
                                copy.write_row(row)
                con.commit()

    try:
        return timed(run)
    finally:
        con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="receipts per batch (one transaction each)")
    parser.add_argument("--slow-slice", type=int, default=2000, help="receipts for the executemany baselines")
    parser.add_argument("--postgres-url", help="a PostgreSQL server to use (a database is created on it)")
    args = parser.parse_args()

    recs = records(args.receipts)
    parts = batches(recs, args.batch)
    row_parts = [to_rows(b) for b in parts]
    slow_parts = [to_rows(b) for b in batches(recs[: args.slow_slice], args.batch)]
    all_rows = sum(row_count(r) for r in row_parts)
    slow_rows = sum(row_count(r) for r in slow_parts)
    results: list[tuple[str, int, float]] = []

    with tempfile.TemporaryDirectory(prefix="receiptflow-bench-") as tmp:
        d = Path(tmp)
        results.append(("DuckDB sink", all_rows, duckdb_sink(d / "sink.duckdb", parts)))
        # What a day of receipts costs on disk (for docs/capacity.md): the sink's files after the run.
        storage = {"DuckDB": sum(f.stat().st_size for f in d.glob("sink*.duckdb*"))}
        results.append(("DuckDB plain executemany", slow_rows, duckdb_executemany(d / "many.duckdb", slow_parts)))
        results.append(("DuckDB plain bulk", all_rows, duckdb_bulk(d / "bulk.duckdb", row_parts)))

        server: EmbeddedPostgres | None = None
        server_url = args.postgres_url
        if server_url is None:
            port = free_port()
            settings = Settings(
                local={"data_dir": d / "pg"}, warehouse={"url": f"postgresql://127.0.0.1:{port}/receiptflow"}
            )
            server = EmbeddedPostgres(settings, port=port)
            server.up()
            server_url = server.url
        try:
            pg_url = fresh_database(server_url)
            results.append(("PostgreSQL sink", all_rows, postgres_sink(pg_url, parts)))
            storage["PostgreSQL"] = postgres_bytes(pg_url)
            many = postgres_executemany(fresh_database(server_url), slow_parts)
            results.append(("PostgreSQL plain executemany", slow_rows, many))
            results.append(("PostgreSQL plain COPY", all_rows, postgres_copy(fresh_database(server_url), row_parts)))
        finally:
            if server is not None:
                server.down()

    print(
        f"{args.receipts} receipts → {all_rows} rows (receipts, item lines, group totals), batches of {args.batch},"
        f" {os.cpu_count()} cores; executemany rows timed on the first {args.slow_slice} receipts"
    )
    print(f"\n{'path':<30}{'rows':>10}{'rows/s':>12}{'seconds':>10}")
    for name, rows, seconds in results:
        print(f"{name:<30}{rows:>10,}{rows / seconds:>12,.0f}{seconds:>10.2f}")
    print(f"\n{'storage of the sink':<30}{'bytes':>14}{'bytes/receipt':>15}{'bytes/row':>11}")
    for name, size in storage.items():
        print(f"{name:<30}{size:>14,}{size / args.receipts:>15,.0f}{size / all_rows:>11,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
