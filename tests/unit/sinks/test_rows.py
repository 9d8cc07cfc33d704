"""Pure parts of the sinks: purchase → rows, resume offsets, migration files, URL → sink choice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from pydantic import SecretStr

from receiptflow.cells import Family
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import Rejected
from receiptflow.errors import BrokerError, ConfigError, WarehouseError
from receiptflow.models import ConsentChange, Granularity
from receiptflow.sinks import DuckDBSink, open_sink, run_sink, to_rows
from receiptflow.sinks.decode import decode_batch, written_stamps
from receiptflow.sinks.migrate import migrations, plan_migrations, split_sql
from receiptflow.sinks.rows import AnalyticsRejected, CellRecord, SinkRecord, item_count, next_offsets
from receiptflow.sinks.runner import duckdb_path
from receiptflow.sinks.tables import CELLS, RECEIPT_GROUPS, RECEIPT_ITEMS, RECEIPTS
from receiptflow.topics import TopicNames

from .test_contract import K, analytics_baskets, cell_records, purchases, records


def test_rows_have_the_table_columns_in_order() -> None:
    recs = records(100)
    rows = to_rows(recs)
    assert {len(r) for r in rows.receipts} == {len(RECEIPTS.columns)}
    assert {len(r) for r in rows.items} == {len(RECEIPT_ITEMS.columns)}
    assert {len(r) for r in rows.groups} == {len(RECEIPT_GROUPS.columns)}
    first, p = rows.receipts[0], recs[0].purchase
    named = dict(zip(RECEIPTS.columns, first, strict=True))
    assert named["receipt_id"] == p.receipt_id
    assert named["event_time"] == p.event_time
    assert named["event_local_date"] == p.event_time.date()
    assert named["granularity"] == str(p.granularity)
    assert named["total_cents"] == p.total_cents
    assert (named["source_topic"], named["source_partition"], named["source_offset"]) == ("purchases.customer", 0, 0)
    assert (named["consent_product_data_marketing"], named["consent_electronic_marketing"], named["consent_known"]) == (
        p.consent.product_data_marketing,
        p.consent.electronic_marketing,
        p.consent.known,
    )


def test_detail_rows_follow_granularity() -> None:
    recs = records(300)
    rows = to_rows(recs)
    item_ids = {r[0] for r in rows.items}
    group_ids = {r[0] for r in rows.groups}
    seen = set()
    for r in recs:
        p = r.purchase
        seen.add(p.granularity)
        assert (p.receipt_id in item_ids) == (p.granularity is Granularity.ITEM and bool(p.items))
        assert (p.receipt_id in group_ids) == (p.granularity is not Granularity.RECEIPT and bool(p.groups))
    assert seen == set(Granularity)


def test_a_receipt_level_record_never_yields_detail_even_if_it_carries_some() -> None:
    # Defence in depth: the processor truncates, but a bug there must not leak lines into the warehouse.
    p = next(p for p in purchases(100) if p.granularity is Granularity.ITEM and p.items)
    leaky = dataclasses.replace(p, granularity=Granularity.RECEIPT)
    rows = to_rows([SinkRecord(leaky, "t", 0, 0)])
    assert rows.items == [] and rows.groups == []
    grouped = to_rows([SinkRecord(dataclasses.replace(p, granularity=Granularity.PRODUCT_GROUP), "t", 0, 0)])
    assert grouped.items == [] and len(grouped.groups) == len(p.groups)


def test_item_count_per_granularity() -> None:
    ps = purchases(300)
    for p in ps:
        if p.granularity is Granularity.ITEM:
            assert item_count(p) == len(p.items)
        elif p.granularity is Granularity.PRODUCT_GROUP:
            assert item_count(p) == sum(g.lines for g in p.groups) > 0
        else:
            assert item_count(p) == 0


def test_duplicates_inside_a_batch_keep_the_first() -> None:
    recs = records(10)
    later = [dataclasses.replace(r, offset=r.offset + 100) for r in recs[:4]]
    rows = to_rows(recs + later)
    assert len(rows.receipts) == 10
    at = RECEIPTS.columns.index("source_offset")
    assert [r[at] for r in rows.receipts] == [r.offset for r in recs]


def test_next_offsets_are_one_past_the_highest_per_partition_and_sorted() -> None:
    recs = records(10, partitions=3)
    shuffled = [*reversed(recs), dataclasses.replace(recs[0], topic="a.topic", offset=41)]
    assert next_offsets(shuffled) == [("a.topic", 0, 42), ("purchases.customer", 0, 4), ("purchases.customer", 1, 3),
                                      ("purchases.customer", 2, 3)]  # fmt: skip
    assert next_offsets([]) == []


def test_migrations_are_numbered_and_rendered_per_dialect() -> None:
    duck, pg = migrations("duckdb"), migrations("postgres")
    assert [m.version for m in duck] == list(range(1, len(duck) + 1))
    assert [(m.name, m.checksum) for m in duck] == [(m.name, m.checksum) for m in pg]
    assert all("{" not in s for m in duck + pg for s in m.statements)
    # Roles and grants are PostgreSQL's: on DuckDB those files are recorded with no statements.
    only_pg = {m.name for m in pg if m.statements} - {m.name for m in duck if m.statements}
    assert only_pg == {
        "0006_roles_and_schemas.sql",
        "0009_role_grants.sql",
        "0012_analytics_net_grants.sql",
        "0014_analytics_cells_grants.sql",
    }
    views = " ".join(s for m in duck + pg if m.name == "0007_analytics_baskets.sql" for s in m.statements)
    assert "FROM baskets" in views and "FROM analytics.baskets" in views
    # The analyst views of the cells read the cells of their own store, and nothing else.
    cells = [s for m in duck + pg if m.name == "0013_analytics_cells.sql" for s in m.statements]
    assert "FROM cells" in " ".join(cells) and "FROM analytics.cells" in " ".join(cells)
    views = [s for s in cells if s.startswith("CREATE OR REPLACE VIEW")]
    assert len(views) == 2 * 8
    assert all("receipts" not in s and "basket_lines" not in s and "FROM baskets" not in s for s in views)
    first = " ".join(duck[0].statements)
    assert "DOUBLE NOT NULL" in first and "DOUBLE PRECISION" in " ".join(pg[0].statements)
    tables = {s.split()[5] for s in duck[0].statements if s.startswith("CREATE TABLE")}
    assert tables == {"receipts", "receipt_items", "receipt_groups", "sink_offsets"}


def test_split_sql_keeps_dollar_quoted_blocks_whole() -> None:
    script = (
        "CREATE SCHEMA a;\nDO $$\nBEGIN\n    CREATE ROLE r;\nEXCEPTION WHEN duplicate_object THEN NULL;\nEND\n$$;\n"
        "SELECT 1"
    )
    assert split_sql(script) == [
        "CREATE SCHEMA a",
        "DO $$\nBEGIN\n    CREATE ROLE r;\nEXCEPTION WHEN duplicate_object THEN NULL;\nEND\n$$",
        "SELECT 1",
    ]


def test_split_sql_drops_comments_and_blank_statements() -> None:
    script = "-- a comment; with a semicolon\nCREATE TABLE a (x INT);\n\n  ;\nCREATE TABLE b (y INT)\n"
    assert split_sql(script) == ["CREATE TABLE a (x INT)", "CREATE TABLE b (y INT)"]


def test_migration_plan() -> None:
    ms = migrations("duckdb")
    fresh = plan_migrations("duckdb", {})
    assert fresh.pending == ms and fresh.unrecorded == []
    done = plan_migrations("duckdb", {m.version: m.checksum for m in ms})
    assert done.pending == [] and done.unrecorded == []
    legacy = plan_migrations("duckdb", {m.version: None for m in ms})
    assert legacy.pending == [] and legacy.unrecorded == ms
    with pytest.raises(WarehouseError, match="changed after it was applied"):
        plan_migrations("duckdb", {1: "0" * 64})
    with pytest.raises(WarehouseError, match="does not know"):
        plan_migrations("duckdb", {m.version: m.checksum for m in ms} | {999: "x"})


@pytest.mark.parametrize(
    "url", ["mysql://x/y", "sqlite:///tmp/x.db", "duckdb:relative.duckdb", "duckdb://host/x", "duckdb:///"]
)
def test_unsupported_warehouse_urls_are_config_errors(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError):
        open_sink(Settings(warehouse={"url": url}, local={"data_dir": tmp_path}))


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("duckdb:///srv/dw/w.duckdb", "/srv/dw/w.duckdb"),
        ("duckdb:////srv/dw/w.duckdb", "/srv/dw/w.duckdb"),  # what Settings.resolved_warehouse_url writes
    ],
)
def test_duckdb_urls_name_absolute_paths(url: str, path: str) -> None:
    assert duckdb_path(url) == Path(path)


def test_duckdb_url_selects_the_duckdb_sink(tmp_path: Path) -> None:
    path = tmp_path / "x" / "dw.duckdb"
    sink = open_sink(Settings(warehouse={"url": f"duckdb:///{path}"}), group_id="g1")
    try:
        assert isinstance(sink, DuckDBSink)
        assert sink.path == path and sink.group_id == "g1"
    finally:
        sink.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls_select_the_postgres_sink(tmp_path: Path, scheme: str) -> None:
    # Nothing listens on port 1: the PostgreSQL sink is chosen and its connection failure is wrapped,
    # without the password it was given.
    settings = Settings(
        warehouse={"url": f"{scheme}://rf@127.0.0.1:1/dw", "password": SecretStr("s3cret")},
        local={"data_dir": tmp_path},
    )
    with pytest.raises(WarehouseError, match="cannot open PostgreSQL warehouse") as info:
        open_sink(settings)
    assert "s3cret" not in str(info.value)


def test_run_sink_refuses_a_group_other_than_the_sinks(tmp_path: Path) -> None:
    settings = Settings(local={"data_dir": tmp_path})
    with open_sink(settings) as sink, pytest.raises(ConfigError, match="same group id"):
        run_sink(settings, sink, group_id="another-group")


def test_a_bad_kafka_property_is_a_broker_error(tmp_path: Path) -> None:
    settings = Settings(local={"data_dir": tmp_path}, kafka={"extra": {"no.such.property": "1"}})
    with open_sink(settings) as sink, pytest.raises(BrokerError, match="cannot create the sink consumer"):
        run_sink(settings, sink, idle_exit_after=0.1)


def test_analytics_cells_become_rows_of_the_cells_table() -> None:
    recs = cell_records(40)
    rows = to_rows(recs)
    assert len(rows.cells) == len(recs) > 0 and {len(r) for r in rows.cells} == {len(CELLS.columns)}
    assert not rows.receipts and not rows.items and not rows.consents  # a cell is not a receipt of a customer
    named = dict(zip(CELLS.columns, rows.cells[0], strict=True))
    cell = recs[0].cell
    assert named["window_id"] == f"{cell.key.chain}/{cell.key.local_date.isoformat()}"
    assert (named["family"], named["baskets"], named["amount_cents"], named["k"]) == (
        cell.key.family.value,
        cell.baskets,
        cell.amount_cents,
        K,
    )
    assert (named["source_topic"], named["source_partition"], named["source_offset"]) == ("purchases.analytics", 0, 0)
    # Their positions are the analytics store's, not the card-linked one's.
    assert next_offsets(recs) == []
    assert next_offsets(recs, analytics=True) == [
        ("purchases.analytics", p, max(r.offset for r in recs if r.partition == p) + 1)
        for p in sorted({r.partition for r in recs})
    ]


def _message(codec: Codec, subject: str, value: dict[str, object], offset: int) -> Message:
    """A record of the analytics topic (partition 0) as the consumer hands it over."""
    return Message(topic="purchases.analytics", partition=0, offset=offset, value=codec.encode(subject, value))


def test_the_sink_decodes_cells_and_dead_letters_everything_else_on_the_analytics_topic() -> None:
    codec = Codec()
    names = TopicNames("")
    cell = cell_records(40)[0].cell
    basket = analytics_baskets(5)[0]  # what the analytics topic carried before the cells
    legacy = purchases(5)[0]  # and before basket pseudonyms: a receipt id
    change = ConsentChange("2710000000001", legacy.event_time, True, True)
    messages = [
        _message(codec, "purchase", legacy.to_avro(), 0),
        _message(codec, "analytics_cell", cell.to_avro(K), 1),
        _message(codec, "analytics_basket", basket.to_avro(), 2),
        _message(codec, "consent_change", change.to_avro(), 3),
        Message(topic=names.purchases_analytics, partition=0, offset=4, value=b"\x00\x00\x00\x00\x63not avro"),
    ]
    batch = decode_batch(codec, messages, names)
    # The record with a receipt id is skipped (never stored nor copied); the cell is stored.
    assert [type(r).__name__ for r in batch] == ["CellRecord", *["AnalyticsRejected"] * 3]
    assert isinstance(batch[0], CellRecord) and (batch[0].cell, batch[0].k, batch[0].offset) == (cell, K, 1)
    letters = [r for r in batch if isinstance(r, AnalyticsRejected)]
    assert [(r.offset, r.error.reason) for r in letters] == [
        (2, "retired_subject"),
        (3, "wrong_subject"),
        (4, "unknown_schema_id"),
    ]
    assert "before the analytics became cells" in str(letters[0].error) and letters[0].value == messages[2].value()
    assert "analytics_cell" in str(letters[1].error)
    assert all(isinstance(r, Rejected) for r in letters)  # the loop dead-letters them
    # No basket row and no receipt anywhere; every position is the analytics store's, past all five.
    rows = to_rows(batch)
    assert len(rows.cells) == 1 and not rows.receipts and not rows.consents
    assert not any(legacy.receipt_id in str(v) or basket.basket_id in str(v) for row in rows.cells for v in row)
    assert next_offsets(batch) == []
    assert next_offsets(batch, analytics=True) == [(names.purchases_analytics, 0, 5)]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"baskets": K - 1}, "below_k"),
        ({"k": 1, "baskets": 1}, "below_k"),  # one basket is never a cell, whatever its k
        ({"k": 0, "baskets": 0}, "out_of_range"),
        ({"window_id": "SOMEONE_ELSE/2026-11-20"}, "wrong_window"),
        ({"family": "store_hour", "store_id": "S1", "hour": 24}, "out_of_range"),
    ],
)
def test_a_cell_the_analytics_store_must_not_hold_is_dead_lettered(change: dict[str, object], reason: str) -> None:
    codec = Codec()
    names = TopicNames("")
    good = cell_records(40)[0].cell.to_avro(K)
    [rejected] = decode_batch(codec, [_message(codec, "analytics_cell", {**good, **change}, 7)], names)
    assert isinstance(rejected, AnalyticsRejected) and rejected.error.reason == reason
    assert to_rows([rejected]).cells == []
    assert next_offsets([rejected], analytics=True) == [(names.purchases_analytics, 0, 8)]
    # The same cell, sound, is stored.
    [stored] = decode_batch(codec, [_message(codec, "analytics_cell", good, 7)], names)
    assert isinstance(stored, CellRecord) and stored.cell.key.family in Family


def test_end_to_end_time_is_measured_for_the_customer_purchases_the_warehouse_took() -> None:
    codec = Codec()
    names = TopicNames("")
    good, stored_too = purchases(2)
    change = ConsentChange("2710000000001", good.event_time, True, True)

    def message(topic: str, offset: int, value: bytes, at: int) -> Message:
        return Message(topic=topic, partition=0, offset=offset, value=value, timestamp=(TIMESTAMP_CREATE_TIME, at))

    messages = [
        message(names.purchases_customer, 0, codec.encode("purchase", good.to_avro()), 1_000),
        message(names.purchases_customer, 1, b"not avro", 2_000),  # dead-lettered: no row
        message(names.consents, 0, codec.encode("consent_change", change.to_avro()), 3_000),  # not a checkout
        message(names.purchases_customer, 2, codec.encode("purchase", stored_too.to_avro()), 4_000),
    ]
    batch = decode_batch(codec, messages, names)
    assert written_stamps(messages, batch, names.purchases_customer) == [1_000, 4_000]
