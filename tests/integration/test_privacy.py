"""The analytics cannot be joined back, and each role reads only its store.

Simulator traffic goes through the real router (in this process, with this install's generated
analytics key) and the real sink into a DuckDB warehouse and a PostgreSQL one. Then, against both:

* no value on ``purchases.baskets`` (the router's anonymous baskets for the aggregator: key, any
  string inside the record) or in the analytics tables equals or contains a receipt id of
  ``purchases.customer``;
* a join of the analytics tables to the card-linked tables on any shared column returns nothing:
  every pair of columns with the same name or of the same identifier-like type is found from the
  catalogue and joined;
* the DuckDB analytics file holds no card-linked table and no card id, works on its own, and both
  DuckDB files are readable by their owner only;
* on PostgreSQL a login that is a member of the analyst role gets "permission denied" on every
  card-linked table, reads the analytics and the pseudonymous card view (which holds no card id);
  a marketing login reads neither the card-linked tables nor the analytics.

The analytics are cells (``analytics.cells``, issue 28). The same checks also run on warehouses the
sink fills with the receipts and the released cells of the same simulated checkouts directly, and
there the analyst's reads are checked relation by relation against the catalogue.
"""

from __future__ import annotations

import stat
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import duckdb
import psycopg
import pytest

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.models import AnalyticsBasket, Purchase
from receiptflow.processors.aggregate.worker import Aggregator
from receiptflow.processors.router.worker import Router
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import Sink, cell_counts, open_sink, run_sink
from receiptflow.sinks.duckdb import DuckDBSink
from receiptflow.sinks.postgres import PostgresSink
from receiptflow.sinks.runner import duckdb_path
from receiptflow.sinks.tables import ANALYTICS_TABLES, CARD_TABLES
from receiptflow.topics import TopicNames, create_topics

from .conftest import KafkaServer
from .support import read_all

CODEC = Codec()
SALT = b"test-erasure-salt-0123456789"  # the install secret these sinks hash erased cards with
N = 900
# What the analyst role reads in the analytics schema besides the cells (migration 0013).
ANALYST_VIEWS = (
    "daily_sales",
    "chain_daily_sales",
    "store_hour_sales",
    "basket_sizes",
    "group_sales",
    "sku_sales",
    "product_pairs",
    "refunds",
)

# Columns the analytics cells share by name or by value with the card-linked tables. They say what
# was sold where, on which local date and for how much -- the analytics themselves -- and name no
# receipt: each value is shared by many receipts, and a cell's figures are those of at least k
# baskets. The source position says where a row was read: the cells' on purchases.analytics, never a
# position of a card-linked row.
DESCRIPTIVE = frozenset(
    {
        "chain",
        "store_id",
        "local_date",
        "sku",
        "sku_b",
        "product_group",
        "quantity",
        "amount_cents",
        "lines",
        "source_topic",
        "source_partition",
        "source_offset",
    }
)


class Substrings:
    """Does a value equal or contain one of a set of ids? (A set lookup per window, not a scan per id.)"""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = frozenset(ids)
        self.lengths = sorted({len(i) for i in self.ids})

    def found_in(self, value: str) -> str | None:
        for n in self.lengths:
            for at in range(len(value) - n + 1):
                if value[at : at + n] in self.ids:
                    return value[at : at + n]
        return None


@pytest.fixture(scope="module")
def traffic(make_module_settings: Callable[..., Settings]) -> Settings:
    """Simulated checkouts routed by the real router: the topics every test here reads."""
    # Days that are over (plus a small grace), so the aggregator closes their windows and publishes
    # their cells once it has read everything.
    settings = make_module_settings(analytics_grace_seconds=60, analytics_idle_close_seconds=1)
    create_topics(settings)
    start = datetime.now(UTC) - timedelta(days=3)
    client = RegisterClient(settings)
    for c in Simulator(61, stores=12, customers=150).stream(N, start, rate=N / (36 * 3600)):
        client.send(c)
    client.flush()
    Router(settings, name="privacy-router").run(max_idle=3)
    Aggregator(settings, name="privacy-aggregator").run(max_idle=5)
    return settings


@pytest.fixture(scope="module")
def make_module_settings(kafka_server: KafkaServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    data_dir = tmp_path_factory.mktemp("privacy") / "data"

    def make(**overrides: Any) -> Settings:
        run = uuid.uuid4().hex[:8]
        base: dict[str, Any] = {
            **kafka_server.auth_settings(),
            "bootstrap_servers": kafka_server.bootstrap,
            "redis_url": redis_url,
            "data_dir": data_dir,
            "topic_prefix": f"privacy-{run}.",
            "topic_partitions": 3,
            "processor_id": f"processor-{run}",
            "metrics_port": 0,
        }
        return Settings(**{**base, **overrides})

    return make


def _receipt_ids(settings: Settings) -> set[str]:
    topic = TopicNames(settings.kafka.topic_prefix).purchases_customer
    return {
        Purchase.from_avro(CODEC.decode(m.value(), expect="purchase").value).receipt_id
        for m in read_all(settings, topic)
    }


def _fill(settings: Settings) -> None:
    with open_sink(settings) as sink:
        run_sink(settings, sink, idle_exit_after=3)


def test_nothing_on_the_baskets_topic_names_a_receipt(traffic: Settings) -> None:
    rids = _receipt_ids(traffic)
    assert len(rids) > N * 0.9
    ids = Substrings(rids)
    # The router's anonymous baskets, on their way to the aggregator (which publishes cells only).
    messages = read_all(traffic, TopicNames(traffic.kafka.topic_prefix).analytics_baskets)
    assert len(messages) > N * 0.9
    for m in messages:
        # The whole record as written: Avro strings are their UTF-8 bytes, so any receipt id inside
        # any field would show here (latin-1 maps every byte to one character).
        for raw in (m.key() or b"", m.value() or b""):
            assert ids.found_in(raw.decode("latin-1")) is None
        basket = AnalyticsBasket.from_avro(CODEC.decode(m.value(), expect="analytics_basket").value)
        assert basket.basket_id not in rids
        assert basket.event_hour == basket.event_hour.replace(minute=0, second=0, microsecond=0)


def _columns(sink: Sink, postgres: bool) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(table, column, type) of the analytics tables and of the card-linked tables, from the catalogue."""
    rows = sink.warehouse.query(
        "SELECT table_catalog, table_schema, table_name, column_name, data_type FROM information_schema.columns"
    )
    analytics, cards = [], []
    main = sink.warehouse.query("SELECT current_database()")[0][0]
    for catalog, schema, table, column, typ in rows:
        where = schema if postgres else catalog
        qualified = f"{where}.{table}"
        if qualified in ANALYTICS_TABLES:
            analytics.append((qualified, str(column), str(typ).upper()))
        elif table in CARD_TABLES and (schema == "public" if postgres else catalog == main):
            cards.append((str(table), str(column), str(typ).upper()))
    return analytics, cards


def _is_text(typ: str) -> bool:
    return typ in ("TEXT", "VARCHAR", "CHARACTER VARYING")


def _is_time(typ: str) -> bool:
    return typ.startswith("TIMESTAMP") or typ == "DATE"


def _assert_not_joinable(sink: Sink, postgres: bool, rids: set[str]) -> None:
    analytics, cards = _columns(sink, postgres)
    assert {t for t, _, _ in analytics} == set(ANALYTICS_TABLES)
    assert {t for t, _, _ in cards} == set(CARD_TABLES)
    # Same name: only the descriptive columns, never an identifier.
    shared = {a for _, a, _ in analytics} & {c for _, c, _ in cards}
    assert shared <= DESCRIPTIVE, shared - DESCRIPTIVE
    # Every other pair of the same identifier-like type (text, time), whatever its names: no value in
    # common. A card-linked time exactly on the hour is left out: such a sale's time is its hour.
    pairs = [
        (at, a, ct, c, atyp)
        for at, a, atyp in analytics
        for ct, c, ctyp in cards
        if atyp == ctyp and (_is_text(atyp) or _is_time(atyp)) and a not in DESCRIPTIVE and c not in DESCRIPTIVE
    ]
    assert any(a == "window_id" and c == "receipt_id" for _, a, _, c, _ in pairs)
    assert any(a == "window_id" and c == "card_id" for _, a, _, c, _ in pairs)
    for at, a, ct, c, typ in pairs:
        on_hour = f" AND date_trunc('hour', x.{c}) <> x.{c}" if typ.startswith("TIMESTAMP") else ""
        sql = f"SELECT count(*) FROM {at} AS y JOIN {ct} AS x ON y.{a} = x.{c}{on_hour}"
        assert sink.warehouse.query(sql) == [(0,)], f"{at}.{a} joins {ct}.{c}"
    # No value of the analytics tables equals or contains a receipt id.
    ids = Substrings(rids)
    for table in sorted(ANALYTICS_TABLES):
        rows = sink.warehouse.query(f"SELECT * FROM {table}")
        assert rows
        for row in rows:
            for value in row:
                assert ids.found_in(str(value)) is None, (table, value)


def _assert_the_analytics_file_stands_alone(path: Path, cards: set[str]) -> None:
    """The DuckDB analytics file on its own, as an analyst receives it: cells and their views, no card."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {str(t) for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"cells", "sink_offsets", *ANALYST_VIEWS} <= tables
        assert not tables & CARD_TABLES and not tables & {"baskets", "basket_lines"}
        columns = {str(c) for (c,) in con.execute("SELECT column_name FROM information_schema.columns").fetchall()}
        assert not columns & {"card_id", "receipt_id", "register_id", "card_hash", "processed_at", "basket_id"}
        ids = Substrings(cards)
        rows = con.execute("SELECT * FROM cells").fetchall()
        assert rows and not any(ids.found_in(str(v)) for row in rows for v in row)
        # Every cell is of at least k baskets, and the views work without the warehouse.
        assert con.execute("SELECT count(*) FROM cells WHERE baskets < k OR k < 2").fetchone() == (0,)
        for view in ANALYST_VIEWS:
            con.execute(f"SELECT count(*) FROM {view}").fetchone()
        day = con.execute("SELECT count(*), min(baskets) FROM chain_daily_sales").fetchone()
        assert day is not None and day[0] > 0
    finally:
        con.close()


def test_the_duckdb_analytics_file_cannot_be_joined_back_and_holds_no_card(traffic: Settings) -> None:
    settings = traffic.model_copy(update={"warehouse": {"url": None}})
    _fill(settings)
    rids = _receipt_ids(settings)
    with open_sink(settings) as sink:
        assert isinstance(sink, DuckDBSink)
        assert cell_counts(sink.warehouse)["cells"] > 0
        _assert_not_joinable(sink, False, rids)
        cards = {
            str(c) for (c,) in sink.warehouse.query("SELECT DISTINCT card_id FROM receipts WHERE card_id IS NOT NULL")
        }
        main, analytics = sink.path, sink.analytics_path
    assert cards
    for path in (main, analytics):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    _assert_the_analytics_file_stands_alone(analytics, cards)
    assert duckdb_path(settings.resolved_warehouse_url) == main


def _direct(sink: Sink) -> tuple[set[str], set[str], int]:
    """Fill ``sink`` with the receipts and the released cells of the same simulated checkouts (what the
    router and the aggregator make of them); (receipt ids, card ids, cells). Released under k = 2 (the
    least the aggregator takes), so that a sample this size has cells of every view, refunds included."""
    from ..unit.sinks.test_contract import cell_records, records  # noqa: PLC0415 - shared builders

    receipts, cells = records(1500, seed=37), cell_records(1500, seed=37, k=2)
    sink.write([*receipts, *cells])
    sink.flush()
    rids = {r.purchase.receipt_id for r in receipts}
    cards = {r.purchase.card_id for r in receipts if r.purchase.card_id is not None}
    assert cells and cards
    return rids, cards, len(cells)


def test_duckdb_cells_cannot_be_joined_back_and_their_file_holds_no_card(tmp_path: Path) -> None:
    with DuckDBSink(tmp_path / "warehouse.duckdb", erasure_salt=SALT) as sink:
        rids, cards, _ = _direct(sink)
        _assert_not_joinable(sink, False, rids)
        analytics = sink.analytics_path
    _assert_the_analytics_file_stands_alone(analytics, cards)


def _login(url: str, role: str, group: str) -> str:
    """A login role that is a member of ``group``, and the URL to connect as it."""
    password = uuid.uuid4().hex
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE {group}")
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{role}:{password}@{host}", parts.path, parts.query, parts.fragment))


def _assert_the_analyst_reads_the_analytics_only(con: psycopg.Connection[Any], cards: set[str]) -> int:
    """As an analyst: every relation outside the analytics and pseudonymous schemas refused, the cells and
    their views read, nothing written; the number of cells read."""
    relations = con.execute(
        "SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'v', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_%'"
    ).fetchall()
    card_linked = [f"{schema}.{name}" for schema, name in relations if schema in ("public", "marketing")]
    assert {f"public.{t}" for t in CARD_TABLES} | {"public.erased_cards", "public.card_pseudonym_key"} <= set(
        card_linked
    )
    for relation in [*card_linked, "analytics.sink_offsets"]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            con.execute(f"SELECT count(*) FROM {relation}")
    readable = {f"analytics.{name}" for schema, name in relations if schema == "analytics"} - {"analytics.sink_offsets"}
    assert readable == {"analytics.cells", *(f"analytics.{v}" for v in ANALYST_VIEWS)}
    for relation in sorted(readable):
        assert con.execute(f"SELECT count(*) FROM {relation}").fetchone() is not None
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        con.execute("INSERT INTO analytics.cells SELECT * FROM analytics.cells LIMIT 1")
    months = con.execute("SELECT card_pseudonym, receipts FROM pseudonymous.card_months").fetchall()
    assert months and all(len(p) == 32 for p, _ in months)
    assert not {p for p, _ in months} & cards  # a pseudonym, never the card id
    assert len({p for p, _ in months}) <= len(cards)
    row = con.execute("SELECT count(*) FROM analytics.cells").fetchone()
    assert row is not None
    return int(row[0])


def _assert_marketing_reads_neither_store(con: psycopg.Connection[Any]) -> None:
    for relation in [
        "receipts",
        "consent_changes",
        "analytics.cells",
        "analytics.daily_sales",
        "pseudonymous.card_months",
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            con.execute(f"SELECT count(*) FROM {relation}")
    assert con.execute("SELECT count(*) FROM marketing.card_share").fetchone() is not None


def test_postgres_roles_see_only_their_store(traffic: Settings, pg_database: str) -> None:
    settings = traffic.model_copy(update={"warehouse": {"url": pg_database}})
    _fill(settings)
    rids = _receipt_ids(settings)
    with open_sink(settings) as sink:
        _assert_not_joinable(sink, True, rids)
        cards = {
            str(c) for (c,) in sink.warehouse.query("SELECT DISTINCT card_id FROM receipts WHERE card_id IS NOT NULL")
        }
        cells = cell_counts(sink.warehouse)["cells"]
    run = uuid.uuid4().hex[:8]
    analyst, marketer = f"analyst_{run}", f"marketer_{run}"
    analyst_url = _login(pg_database, analyst, "receiptflow_analyst")
    marketing_url = _login(pg_database, marketer, "receiptflow_marketing")
    try:
        with psycopg.connect(analyst_url, autocommit=True) as con:
            assert _assert_the_analyst_reads_the_analytics_only(con, cards) == cells > 0
        with psycopg.connect(marketing_url, autocommit=True) as con:
            _assert_marketing_reads_neither_store(con)
    finally:
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {analyst}")
            admin.execute(f"DROP ROLE IF EXISTS {marketer}")


def test_the_analyst_reads_the_cells_and_their_views_and_nothing_card_linked(pg_database: str) -> None:
    with PostgresSink(pg_database, erasure_salt=SALT) as sink:
        rids, cards, cells = _direct(sink)
        _assert_not_joinable(sink, True, rids)
        views = {v: int(sink.warehouse.query(f"SELECT count(*) FROM analytics.{v}")[0][0]) for v in ANALYST_VIEWS}
    assert all(views.values()), views  # every view has rows to read
    run = uuid.uuid4().hex[:8]
    analyst, marketer = f"analyst_{run}", f"marketer_{run}"
    analyst_url = _login(pg_database, analyst, "receiptflow_analyst")
    marketing_url = _login(pg_database, marketer, "receiptflow_marketing")
    try:
        with psycopg.connect(analyst_url, autocommit=True) as con:
            assert _assert_the_analyst_reads_the_analytics_only(con, cards) == cells
            for view, n in views.items():
                assert con.execute(f"SELECT count(*) FROM analytics.{view}").fetchone() == (n,)
        with psycopg.connect(marketing_url, autocommit=True) as con:
            _assert_marketing_reads_neither_store(con)
    finally:
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {analyst}")
            admin.execute(f"DROP ROLE IF EXISTS {marketer}")


def test_the_sink_writer_role_inserts_and_nothing_more(pg_database: str) -> None:
    from ..unit.sinks.test_contract import cell_records, records  # noqa: PLC0415 - shared builders

    with PostgresSink(pg_database, erasure_salt=SALT):
        pass  # the owner migrates (creating the schemas and roles) once
    role = f"sink_{uuid.uuid4().hex[:8]}"
    url = _login(pg_database, role, "receiptflow_sink")
    try:
        with PostgresSink(url, erasure_salt=SALT) as sink:
            sink.write([*records(40), *cell_records(40)])
            result = sink.flush()
            assert (result.receipts, result.cells) == (40, len(cell_records(40)))
            assert sink.committed_offsets("purchases.analytics")
        with psycopg.connect(url, autocommit=True) as con:
            for sql in (
                "DELETE FROM receipts",
                "UPDATE receipts SET card_id = NULL",
                "DELETE FROM analytics.cells",
                "UPDATE analytics.cells SET baskets = 1",
                "SELECT * FROM card_pseudonym_key",
                "SELECT * FROM pseudonymous.card_months",
                "CREATE TABLE stolen (x INT)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                    con.execute(sql)
    finally:
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE IF EXISTS {role}")
