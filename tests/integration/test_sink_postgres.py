"""The PostgreSQL sink against a real server: the shared sink contract plus PostgreSQL specifics.

Every test gets a database of its own on the session's server (created and dropped here), so each
starts from an empty warehouse and the migrations run from scratch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from receiptflow.errors import WarehouseError
from receiptflow.sinks import DEFAULT_GROUP, PostgresSink, RowCounts, Sink, warehouse_counts
from receiptflow.sinks.card_rows import delete_card
from receiptflow.sinks.migrate import migrations

from ..unit.sinks.test_contract import SALT, TOPIC, OpenSink, SinkContract, records


class TestPostgresSink(SinkContract):
    @pytest.fixture
    def open_sink(self, pg_database: str) -> Iterator[OpenSink]:
        opened: list[Sink] = []

        def make(group_id: str = DEFAULT_GROUP, setup: bool = True) -> Sink:
            sink = PostgresSink(pg_database, group_id, erasure_salt=SALT)
            if setup:  # else only made: a test opens its warehouse by itself
                sink.setup()
            opened.append(sink)
            return sink

        yield make
        for s in opened:
            s.close()

    def execute(self, sink: Sink, sql: str) -> None:
        assert isinstance(sink, PostgresSink)
        sink.conn.execute(sql)
        sink.conn.commit()


def test_concurrent_setups_apply_each_migration_once(pg_database: str) -> None:
    errors: list[BaseException] = []
    sinks = [PostgresSink(pg_database, erasure_salt=SALT) for _ in range(4)]

    def start(s: PostgresSink) -> None:
        try:
            s.setup()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in sinks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        rows = sinks[0].warehouse.query("SELECT version FROM schema_migrations ORDER BY version")
        assert rows == [(m.version,) for m in migrations("postgres")]
    finally:
        for s in sinks:
            s.close()


def test_two_sinks_writing_the_same_records_store_them_once(pg_database: str) -> None:
    # A zombie and its successor after a rebalance: both write the same partition's records at once.
    recs = records(400, partitions=1)
    a, b = PostgresSink(pg_database, erasure_salt=SALT), PostgresSink(pg_database, erasure_salt=SALT)
    a.setup()
    b.setup()
    b_result: list[RowCounts] = []
    b_errors: list[BaseException] = []

    def second() -> None:
        try:
            b.write(recs[100:])  # waits for a's uncommitted keys, then skips them
            b_result.append(b.flush())
        except BaseException as exc:
            b_errors.append(exc)

    try:
        a.write(recs[:300])
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        ra = a.flush()
        t.join(60)
        assert not t.is_alive() and b_errors == []
        assert ra.receipts + b_result[0].receipts == 400
        assert warehouse_counts(a.warehouse)["receipts"] == 400
        assert a.committed_offsets(TOPIC) == {0: 400}
    finally:
        a.close()
        b.close()


def test_an_erasure_waits_for_the_batch_in_flight_and_the_next_batch_skips_the_card(pg_database: str) -> None:
    recs = records(300, partitions=1)
    card = next(r.purchase.card_id for r in recs if r.purchase.card_id is not None)
    mine = [r for r in recs if r.purchase.card_id == card]
    sink, eraser = PostgresSink(pg_database, erasure_salt=SALT), PostgresSink(pg_database, erasure_salt=SALT)
    sink.setup()
    eraser.setup()
    deleted: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def erase() -> None:
        try:
            deleted.append(delete_card(eraser.warehouse, card, eraser.card_hash(card)))
        except BaseException as exc:
            errors.append(exc)

    try:
        sink.write(recs[:200])  # not committed yet: the erasure must not delete around it
        t = threading.Thread(target=erase)
        t.start()
        time.sleep(0.5)
        assert t.is_alive() and not deleted, "the erasure did not wait for the batch in flight"
        sink.flush()
        t.join(60)
        assert not t.is_alive() and errors == []
        assert deleted[0]["receipts"] == sum(1 for r in recs[:200] if r.purchase.card_id == card) > 0
        # The next batch (and a replay of the first) leaves the card out, the offsets move on.
        sink.write(recs)
        sink.flush()
        assert card not in {c for (c,) in sink.warehouse.query("SELECT card_id FROM receipts")}
        assert warehouse_counts(sink.warehouse)["receipts"] == len(recs) - len(mine)
        assert sink.committed_offsets(TOPIC) == {0: 300}
    finally:
        sink.close()
        eraser.close()


def test_a_read_does_not_leave_the_session_idle_in_transaction(pg_database: str) -> None:
    sink = PostgresSink(pg_database, erasure_salt=SALT)
    sink.setup()
    try:
        sink.committed_offsets(TOPIC)
        with psycopg.connect(pg_database, autocommit=True) as other:
            states = other.execute(
                "SELECT state FROM pg_stat_activity "
                "WHERE application_name = 'receiptflow-sink' AND datname = current_database()"
            ).fetchall()
        assert states == [("idle",)]
    finally:
        sink.close()


def test_a_read_outside_a_write_runs_read_only(pg_database: str) -> None:
    """Reads through ``sink.warehouse.query`` cannot change the warehouse; the sink writes on afterwards."""
    with PostgresSink(pg_database, erasure_salt=SALT) as sink:
        insert = "INSERT INTO erased_cards (card_hash, erased_at) VALUES ('not-a-read', now()) RETURNING 1"
        with pytest.raises(WarehouseError, match="read-only transaction"):
            sink.warehouse.query(insert)
        assert sink.warehouse.query("SELECT count(*) FROM erased_cards") == [(0,)]
        sink.write(records(5))
        assert sink.flush().receipts == 5
        assert warehouse_counts(sink.warehouse)["receipts"] == 5
