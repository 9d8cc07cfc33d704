"""The behaviour every warehouse sink must have, written once and run against each implementation.

:class:`SinkContract` is not collected here (no ``Test`` prefix); ``test_duckdb.py`` runs it
on a DuckDB file and ``tests/integration/test_sink_postgres.py`` on a real PostgreSQL server. A
subclass provides the ``open_sink`` fixture: a callable that opens (and sets up) a new sink on the
same warehouse each time it is called, so reopening is part of what is tested.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from receiptflow.cells import Cell, CellKey, Family, Window, size_bucket, window_of
from receiptflow.dlq import Rejected
from receiptflow.errors import ValidationError, WarehouseError
from receiptflow.models import AnalyticsBasket, ConsentChange, Granularity, Purchase, ReceiptKind
from receiptflow.policy import load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import DEFAULT_GROUP, Sink, SinkConsentRecord, SinkRecord, cell_counts, to_rows, warehouse_counts
from receiptflow.sinks.card_rows import delete_card, is_erased, record_erased
from receiptflow.sinks.migrate import apply_migrations, migrations
from receiptflow.sinks.queries import Connected, sync_chains
from receiptflow.sinks.rows import AnalyticsRejected, CellRecord, chain_dimension_rows
from receiptflow.sinks.tables import CELLS, RECEIPT_ITEMS, RECEIPTS
from receiptflow.suppression import release

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
TOPIC = "purchases.customer"
# The erasure salt the sinks under test hash card ids with (a real install generates its own).
SALT = b"test-erasure-salt-0123456789"

OpenSink = Callable[..., Sink]
BASKETS = BasketPseudonymiser(b"contract-test-analytics-key")
ANALYTICS = "purchases.analytics"
# The threshold the test cells are released under: small, so that a few hundred checkouts publish
# cells of every family (the aggregator's default is receiptflow.cells.DEFAULT_K).
K = 3


def purchases(n: int, seed: int = 5) -> list[Purchase]:
    """``n`` valid purchases of every chain and granularity, as the processor emits them."""
    sim = Simulator(seed, stores=30, customers=50)
    policy = load_policy()
    return [process(c, policy, None, NOW).customer for c in sim.stream(n, datetime(2026, 11, 20, tzinfo=UTC), rate=1)]


def records(n: int, seed: int = 5, topic: str = TOPIC, partitions: int = 3) -> list[SinkRecord]:
    """Purchases spread round-robin over ``partitions`` with consecutive offsets per partition."""
    return [SinkRecord(p, topic, i % partitions, i // partitions) for i, p in enumerate(purchases(n, seed))]


def analytics_baskets(n: int, seed: int = 5) -> list[AnalyticsBasket]:
    """The anonymous baskets the router makes of ``n`` simulated checkouts (what the aggregator reads)."""
    sim = Simulator(seed, stores=30, customers=50)
    policy = load_policy()
    routed = (process(c, policy, None, NOW, BASKETS) for c in sim.stream(n, datetime(2026, 11, 20, tzinfo=UTC), rate=1))
    return [r.analytics for r in routed if r.analytics is not None]


def released(baskets: Sequence[AnalyticsBasket], k: int = K) -> list[tuple[Window, tuple[Cell, ...]]]:
    """Each window of ``baskets`` with the cells the aggregator publishes when it closes."""
    windows: dict[Window, list[AnalyticsBasket]] = defaultdict(list)
    for b in baskets:
        windows[window_of(b)].append(b)
    return [(w, release(bs, k).cells) for w, bs in sorted(windows.items())]


def cell_records(n: int, seed: int = 5, k: int = K, partitions: int = 3) -> list[CellRecord]:
    """The cells on purchases.analytics for the windows of ``n`` checkouts: a window's cells on one
    partition (they are keyed by window id), consecutive offsets per partition."""
    out: list[CellRecord] = []
    offsets = [0] * partitions
    for i, (_window, cells) in enumerate(released(analytics_baskets(n, seed), k)):
        p = i % partitions
        for cell in cells:
            out.append(CellRecord(cell, k, ANALYTICS, p, offsets[p]))
            offsets[p] += 1
    return out


def cells_of(recs: Sequence[CellRecord], family: Family) -> list[Cell]:
    return [r.cell for r in recs if r.cell.key.family is family]


def consent_records(n: int) -> list[SinkConsentRecord]:
    return [
        SinkConsentRecord(ConsentChange(f"card-{i % 7}", NOW, i % 2 == 0, i % 3 == 0, "app"), "consents", i % 3, i // 3)
        for i in range(n)
    ]


def expected_counts(recs: Sequence[SinkRecord]) -> dict[str, Any]:
    unique = {r.purchase.receipt_id: r.purchase for r in recs}.values()
    n: Counter[str] = Counter()
    cents: Counter[str] = Counter()
    for p in unique:
        n[p.chain] += 1
        cents[p.chain] += p.total_cents
    return {
        "receipts": len(unique),
        "total_cents": sum(cents.values()),
        "per_chain": {c: {"receipts": n[c], "total_cents": cents[c]} for c in sorted(n)},
    }


def table_count(sink: Sink, table: str) -> int:
    return int(sink.warehouse.query(f"SELECT count(*) FROM {table}")[0][0])


class SinkContract:
    """Write/flush/offsets/migrations behaviour shared by every sink."""

    @pytest.fixture
    def open_sink(self) -> OpenSink:  # pragma: no cover - overridden by every subclass
        raise NotImplementedError

    def test_write_twice_inserts_once(self, open_sink: OpenSink) -> None:
        recs = records(300)
        rows = to_rows(recs)
        sink = open_sink()
        sink.write(recs)
        first = sink.flush()
        assert (first.receipts, first.items, first.groups) == (300, len(rows.items), len(rows.groups))
        assert rows.items and rows.groups, "the sample must exercise both detail tables"
        sink.write(recs)
        again = sink.flush()
        assert (again.receipts, again.items, again.groups) == (0, 0, 0)
        assert warehouse_counts(sink.warehouse) == expected_counts(recs)
        assert table_count(sink, "receipt_items") == len(rows.items)
        assert table_count(sink, "receipt_groups") == len(rows.groups)

    def test_duplicates_inside_one_batch(self, open_sink: OpenSink) -> None:
        recs = records(40)
        sink = open_sink()
        # A redelivery inside the batch (the same receipt at a later offset).
        redelivered = [dataclasses.replace(r, offset=r.offset + 1000) for r in recs[:10]]
        sink.write(recs + redelivered)
        assert sink.flush().receipts == 40
        assert warehouse_counts(sink.warehouse)["receipts"] == 40

    def test_offsets_round_trip_per_group_and_topic(self, open_sink: OpenSink) -> None:
        sink = open_sink()
        sink.write(records(300))
        sink.flush()
        assert sink.committed_offsets(TOPIC) == {0: 100, 1: 100, 2: 100}
        assert sink.committed_offsets("other.topic") == {}
        assert open_sink(group_id="someone-else").committed_offsets(TOPIC) == {}
        assert open_sink().committed_offsets(TOPIC) == {0: 100, 1: 100, 2: 100}

    def test_offsets_never_move_backwards(self, open_sink: OpenSink) -> None:
        recs = records(60, partitions=1)
        sink = open_sink()
        sink.write(recs[30:])
        sink.flush()
        sink.write(recs[:30])  # a zombie finishing an old batch after a rebalance
        sink.flush()
        assert sink.committed_offsets(TOPIC) == {0: 60}
        assert warehouse_counts(sink.warehouse)["receipts"] == 60

    def test_several_writes_commit_in_one_flush(self, open_sink: OpenSink) -> None:
        recs = records(90)
        sink = open_sink()
        sink.write(recs[:45])
        sink.write(recs[45:])
        result = sink.flush()
        assert result.receipts == 90
        assert warehouse_counts(sink.warehouse) == expected_counts(recs)
        assert sink.committed_offsets(TOPIC) == {0: 30, 1: 30, 2: 30}

    def test_rollback_drops_rows_and_offsets_together(self, open_sink: OpenSink) -> None:
        recs = records(50, partitions=1)
        sink = open_sink()
        sink.write(recs[:20])
        sink.flush()
        sink.write(recs[20:])
        sink.rollback()
        assert warehouse_counts(sink.warehouse)["receipts"] == 20
        assert sink.committed_offsets(TOPIC) == {0: 20}
        # Nothing pending survives into the next flush.
        assert sink.flush().receipts == 0
        assert open_sink().committed_offsets(TOPIC) == {0: 20}

    def test_close_without_flush_keeps_nothing(self, open_sink: OpenSink) -> None:
        recs = records(30, partitions=1)
        sink = open_sink()
        sink.write(recs)
        sink.close()
        again = open_sink()
        assert warehouse_counts(again.warehouse)["receipts"] == 0
        assert again.committed_offsets(TOPIC) == {}

    def test_failed_write_rolls_back_and_the_sink_stays_usable(self, open_sink: OpenSink) -> None:
        recs = records(20, partitions=1)
        sink = open_sink()
        sink.write(recs[:10])
        sink.flush()
        broken = dataclasses.replace(recs[10], purchase=dataclasses.replace(recs[10].purchase, chain=None))  # type: ignore[arg-type]
        sink.write(recs[11:15])
        with pytest.raises(WarehouseError):
            sink.write([broken])  # NOT NULL violation: the whole open transaction is dropped
        assert sink.flush().receipts == 0
        assert warehouse_counts(sink.warehouse)["receipts"] == 10
        assert sink.committed_offsets(TOPIC) == {0: 10}
        sink.write(recs[10:])
        sink.flush()
        assert warehouse_counts(sink.warehouse) == expected_counts(recs)

    def test_empty_batch_is_a_no_op(self, open_sink: OpenSink) -> None:
        sink = open_sink()
        sink.write([])
        assert sink.flush().receipts == 0
        assert sink.committed_offsets(TOPIC) == {}

    def test_migrations_apply_once_and_reopen_keeps_data(self, open_sink: OpenSink) -> None:
        sink = open_sink()
        sink.write(records(5))
        sink.flush()
        sink.setup()  # setting up an open sink again is harmless
        sink.close()
        sink.close()
        for _ in range(2):
            sink = open_sink()
            rows = sink.warehouse.query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            assert rows == [(m.version, m.name, m.checksum) for m in migrations("duckdb")]
            assert warehouse_counts(sink.warehouse)["receipts"] == 5

    def test_an_edited_migration_is_refused(self, open_sink: OpenSink) -> None:
        sink = open_sink()
        sink.write(records(3))
        sink.flush()
        self.execute(sink, "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        sink.close()
        with pytest.raises(WarehouseError, match="changed after it was applied"):
            open_sink()

    def test_old_warehouses_get_their_checksums_recorded(self, open_sink: OpenSink) -> None:
        sink = open_sink()
        self.execute(sink, "UPDATE schema_migrations SET checksum = NULL")
        sink.close()
        sink = open_sink()
        assert sink.warehouse.query("SELECT checksum FROM schema_migrations WHERE version = 1") == [
            (migrations("duckdb")[0].checksum,)
        ]

    def test_values_are_stored_as_given(self, open_sink: OpenSink) -> None:
        recs = records(120)
        rows = to_rows(recs)
        sink = open_sink()
        sink.write(recs)
        sink.flush()
        stored = sink.warehouse.query(f"SELECT {', '.join(RECEIPTS.columns)} FROM receipts ORDER BY receipt_id")
        assert stored == sorted(rows.receipts)  # datetimes compare as instants, whatever the zone
        items = sink.warehouse.query(
            f"SELECT {', '.join(RECEIPT_ITEMS.columns)} FROM receipt_items ORDER BY receipt_id, line_no"
        )
        assert items == sorted(rows.items)
        groups = sink.warehouse.query(
            "SELECT receipt_id, product_group, quantity, amount_cents, lines FROM receipt_groups "
            "ORDER BY receipt_id, product_group"
        )
        assert groups == sorted(rows.groups)
        # The local date is the register's, not UTC's.
        by_id = {r.purchase.receipt_id: r.purchase for r in recs}
        assert all(row[5] == by_id[row[0]].event_time.date() for row in stored)

    def test_detail_rows_follow_granularity(self, open_sink: OpenSink) -> None:
        recs = records(200)
        sink = open_sink()
        sink.write(recs)
        sink.flush()
        levels = {str(g): n for g, n in sink.warehouse.query("SELECT granularity, count(*) FROM receipts GROUP BY 1")}
        assert set(levels) == {str(g) for g in Granularity}, "the sample must cover every granularity"
        with_items = dict(
            sink.warehouse.query(
                "SELECT r.granularity, count(DISTINCT i.receipt_id) FROM receipts r "
                "JOIN receipt_items i USING (receipt_id) GROUP BY 1"
            )
        )
        with_groups = dict(
            sink.warehouse.query(
                "SELECT r.granularity, count(DISTINCT g.receipt_id) FROM receipts r "
                "JOIN receipt_groups g USING (receipt_id) GROUP BY 1"
            )
        )
        assert set(with_items) == {"ITEM"}
        assert set(with_groups) == {"ITEM", "PRODUCT_GROUP"}

    def test_analyst_views_equal_sums_over_the_purchases(self, open_sink: OpenSink) -> None:
        # The expectation is computed here from the purchases themselves, not from the tables.
        recs = records(400, seed=17)
        ps = [r.purchase for r in recs]
        sink = open_sink()
        sink.write(recs)
        sink.flush()

        daily: dict[tuple[Any, ...], list[int]] = {}
        for p in ps:
            d = daily.setdefault((p.event_time.date(), p.chain, p.store_id), [0, 0, 0, 0])
            d[0] += 1
            d[1] += p.total_cents
            d[2] += p.card_id is not None
            d[3] += p.total_cents if p.card_id is not None else 0
        rows = sink.warehouse.query(
            "SELECT sales_date, chain, store_id, receipts, sales_cents, card_receipts, card_sales_cents "
            "FROM daily_sales"
        )
        assert {(d, c, s): [int(x) for x in rest] for d, c, s, *rest in rows} == daily

        mix: dict[tuple[str, str], int] = Counter()
        for p in ps:
            if p.granularity is not Granularity.RECEIPT:
                for g in p.groups:
                    mix[(p.chain, g.product_group)] += g.amount_cents
        chain_total: Counter[str] = Counter()
        for (chain, _), cents in mix.items():
            chain_total[chain] += cents
        rows = sink.warehouse.query("SELECT chain, product_group, amount_cents, share_of_chain FROM product_group_mix")
        assert {(c, g): int(a) for c, g, a, _ in rows} == mix
        for c, _group, a, share in rows:
            assert share == pytest.approx(int(a) / chain_total[c])
        # Receipt-level chains keep no groups, so they are not in the mix at all.
        receipt_only = {p.chain for p in ps} - {p.chain for p in ps if p.granularity is not Granularity.RECEIPT}
        assert receipt_only and not receipt_only & {c for c, _ in mix}

        basket: dict[tuple[str, Any], list[int]] = {}
        for p in ps:
            b = basket.setdefault((p.chain, p.event_time.date()), [0, 0, 0, 0])
            lines = len(p.items) if p.granularity is Granularity.ITEM else sum(g.lines for g in p.groups)
            b[0] += 1
            b[1] += p.total_cents
            b[2] += lines > 0
            b[3] += lines
        rows = sink.warehouse.query(
            "SELECT chain, sales_date, receipts, avg_basket_cents, receipts_with_lines, avg_lines FROM basket_size"
        )
        assert len(rows) == len(basket)
        for chain, day, n, avg_cents, with_lines, avg_lines in rows:
            want = basket[(chain, day)]
            assert (int(n), int(with_lines)) == (want[0], want[2])
            assert avg_cents == pytest.approx(want[1] / want[0])
            assert avg_lines == (pytest.approx(want[3] / want[2]) if want[2] else None)

        rows = sink.warehouse.query("SELECT chain, sales_date, card_receipt_share, card_sales_share FROM card_share")
        for chain, day, by_receipts, by_money in rows:
            day_ps = [p for p in ps if p.chain == chain and p.event_time.date() == day]
            carded = [p for p in day_ps if p.card_id is not None]
            assert by_receipts == pytest.approx(len(carded) / len(day_ps))
            assert by_money == pytest.approx(sum(p.total_cents for p in carded) / sum(p.total_cents for p in day_ps))

    def test_analytics_cells_and_consent_changes_are_stored_once(self, open_sink: OpenSink) -> None:
        cells, consents = cell_records(300, seed=29), consent_records(40)
        assert {r.cell.key.family for r in cells} >= set(Family) - {Family.REFUNDS}
        sink = open_sink()
        inserted = []
        for _ in range(2):  # the second time is a redelivery: nothing new
            sink.write([*cells, *consents, *records(20)])
            inserted.append(sink.flush().cells)
        assert inserted == [len(cells), 0]
        assert table_count(sink, "consent_changes") == 40
        assert table_count(sink, "receipts") == 20  # analytics records are not receipts of a customer
        # Every cell once, as published: its fields, its threshold and where it was read.
        stored = sink.warehouse.query(f"SELECT {', '.join(CELLS.columns)} FROM analytics.cells")
        assert sorted(stored, key=lambda row: row[-3:]) == sorted(to_rows(cells).cells, key=lambda row: row[-3:])
        named = [dict(zip(CELLS.columns, row, strict=True)) for row in stored]
        assert Counter((Cell.from_avro(r), r["k"]) for r in named) == Counter((r.cell, K) for r in cells)
        assert sink.committed_offsets("consents") == {0: 14, 1: 13, 2: 13}
        last = {p: max(r.offset for r in cells if r.partition == p) + 1 for p in {r.partition for r in cells}}
        assert sink.committed_offsets(ANALYTICS) == last
        # Reopened, the positions of both stores are still there (each committed with its rows).
        sink.close()
        again = open_sink()
        assert again.committed_offsets(ANALYTICS) == last
        assert again.committed_offsets(TOPIC) == {0: 7, 1: 7, 2: 6}

    def test_dead_lettered_analytics_records_keep_their_positions_with_the_cells(self, open_sink: OpenSink) -> None:
        cells = cell_records(40, partitions=1)
        n = len(cells)
        basket = ValidationError("retired_subject", "an anonymous basket of before the analytics cells")
        letter = AnalyticsRejected(basket, ANALYTICS, 0, n, None, b"old basket")
        assert isinstance(letter, Rejected)  # the loop dead-letters it like any other
        sink = open_sink()
        sink.write([*cells, letter, *records(6, partitions=1)])
        assert sink.flush().cells == n
        assert sink.committed_offsets(ANALYTICS) == {0: n + 1}
        # A batch of dead letters only moves the position as well; none is left in the card-linked store,
        # so the analytics store alone says where that topic resumes.
        sink.write([dataclasses.replace(letter, offset=n + 1)])
        sink.flush()
        db = sink.warehouse
        assert db.query(db.sql("SELECT count(*) FROM sink_offsets WHERE topic = {p}"), (ANALYTICS,)) == [(0,)]
        sink.close()
        again = open_sink()
        assert again.committed_offsets(ANALYTICS) == {0: n + 2}
        assert again.committed_offsets(TOPIC) == {0: 6}
        assert table_count(again, "analytics.cells") == n

    def test_analyst_views_are_the_cells(self, open_sink: OpenSink) -> None:
        recs = cell_records(400, seed=31)
        sink = open_sink()
        sink.write(recs)
        sink.flush()
        db = sink.warehouse

        def rows(sql: str) -> Counter[tuple[Any, ...]]:
            return Counter(tuple(row) for row in db.query(sql))

        def goods(c: Cell, *dims: Any) -> tuple[Any, ...]:
            level = "store" if c.key.store_id is not None else "chain"
            k = c.key
            return (level, k.chain, k.store_id, k.local_date, *dims, c.baskets, c.lines, c.quantity, c.amount_cents)

        day = {(c.key.chain, c.key.local_date): c.baskets for c in cells_of(recs, Family.CHAIN_DAY)}
        assert rows(
            "SELECT chain, store_id, sales_date, baskets, lines, sales_cents FROM analytics.daily_sales"
        ) == Counter(
            (c.key.chain, c.key.store_id, c.key.local_date, c.baskets, c.lines, c.amount_cents)
            for c in cells_of(recs, Family.STORE_DAY)
        )
        assert rows(
            "SELECT chain, sales_date, baskets, lines, sales_cents FROM analytics.chain_daily_sales"
        ) == Counter(
            (c.key.chain, c.key.local_date, c.baskets, c.lines, c.amount_cents)
            for c in cells_of(recs, Family.CHAIN_DAY)
        )
        assert rows(
            "SELECT chain, store_id, sales_date, hour, baskets, lines, sales_cents FROM analytics.store_hour_sales"
        ) == Counter(
            (c.key.chain, c.key.store_id, c.key.local_date, c.key.hour, c.baskets, c.lines, c.amount_cents)
            for c in cells_of(recs, Family.STORE_HOUR)
        )
        sizes = db.query("SELECT chain, sales_date, size_bucket, baskets, share_of_day FROM analytics.basket_sizes")
        want_sizes = {
            (c.key.chain, c.key.local_date, c.key.size_bucket): c.baskets / day[(c.key.chain, c.key.local_date)]
            for c in cells_of(recs, Family.BASKET_SIZE)
        }
        assert {(c, d, b): int(n) for c, d, b, n, _ in sizes} == {
            (c.key.chain, c.key.local_date, c.key.size_bucket): c.baskets for c in cells_of(recs, Family.BASKET_SIZE)
        }
        assert {(c, d, b): share for c, d, b, _, share in sizes} == pytest.approx(want_sizes)
        figures = "baskets, lines, quantity, amount_cents"
        assert rows(
            f"SELECT level, chain, store_id, sales_date, product_group, {figures} FROM analytics.group_sales"
        ) == Counter(
            goods(c, c.key.product_group)
            for c in cells_of(recs, Family.CHAIN_GROUP) + cells_of(recs, Family.STORE_GROUP)
        )
        assert rows(
            f"SELECT level, chain, store_id, sales_date, product_group, sku, {figures} FROM analytics.sku_sales"
        ) == Counter(
            goods(c, c.key.product_group, c.key.sku)
            for c in cells_of(recs, Family.CHAIN_SKU) + cells_of(recs, Family.STORE_SKU)
        )

    def test_product_pairs_are_support_confidence_and_lift_of_the_cells(self, open_sink: OpenSink) -> None:
        recs = cell_records(400, seed=31)
        # And a window by hand where SKU X sits in two product groups (as receipt-level lines can).
        day = CellKey(Family.CHAIN_DAY, "HAND", date(2026, 11, 21))
        hand = [
            Cell(day, 40, 90, 90.0, 100_000),
            Cell(dataclasses.replace(day, family=Family.CHAIN_SKU, product_group="g1", sku="X"), 10, 10, 10.0, 900),
            Cell(dataclasses.replace(day, family=Family.CHAIN_SKU, product_group="g2", sku="X"), 12, 12, 12.0, 700),
            Cell(dataclasses.replace(day, family=Family.CHAIN_SKU, product_group="g1", sku="Y"), 20, 20, 20.0, 800),
            Cell(dataclasses.replace(day, family=Family.SKU_PAIR, sku="X", sku_b="Y"), 5, 0, 0.0, 0),
        ]
        recs += [CellRecord(c, K, ANALYTICS, 9, i) for i, c in enumerate(hand)]
        sink = open_sink()
        sink.write(recs)
        sink.flush()
        # The expectation, from the cells: the day's baskets, and each SKU's baskets where the SKU has one
        # chain_sku cell (a SKU in several product groups has no exact count of its own).
        day = {(c.key.chain, c.key.local_date): c.baskets for c in cells_of(recs, Family.CHAIN_DAY)}
        per_sku: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for c in cells_of(recs, Family.CHAIN_SKU):
            per_sku[(c.key.chain, c.key.local_date, c.key.sku)].append(c.baskets)
        want: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for c in cells_of(recs, Family.SKU_PAIR):
            w = (c.key.chain, c.key.local_date)
            a, b = per_sku[(*w, c.key.sku)], per_sku[(*w, c.key.sku_b)]
            n_a = a[0] if len(a) == 1 else None
            n_b = b[0] if len(b) == 1 else None
            want[(*w, c.key.sku, c.key.sku_b)] = (
                c.baskets,
                c.baskets / day[w],
                None if n_a is None else c.baskets / n_a,
                None if n_b is None else c.baskets / n_b,
                None if n_a is None or n_b is None else c.baskets * day[w] / (n_a * n_b),
            )
        rows = sink.warehouse.query(
            "SELECT chain, sales_date, sku_a, sku_b, baskets, support, confidence_a_b, confidence_b_a, lift "
            "FROM analytics.product_pairs"
        )
        got = {(c, d, a, b): (int(n), *figures) for c, d, a, b, n, *figures in rows}
        assert len(rows) == len(got) == len(want) > 0
        assert got.keys() == want.keys()
        for key, figures in want.items():
            assert got[key] == pytest.approx(figures), key
        assert got[("HAND", date(2026, 11, 21), "X", "Y")] == (5, 5 / 40, None, 5 / 20, None)
        lifts = [v[4] for v in want.values() if v[4] is not None]
        assert len(lifts) > 100 and min(lifts) != max(lifts)

    def test_every_published_figure_equals_the_truth_of_its_baskets(self, open_sink: OpenSink) -> None:
        # Under k = 2 (the least a cell may have) nearly every figure is published, refunds included.
        baskets = analytics_baskets(1500, seed=37)
        recs = cell_records(1500, seed=37, k=2)
        sink = open_sink()
        sink.write(recs)
        sink.flush()
        db = sink.warehouse
        sales: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
        stores: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
        refunds: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
        groups: Counter[tuple[Any, ...]] = Counter()
        sizes: Counter[tuple[Any, ...]] = Counter()
        for b in baskets:
            w = (window_of(b).chain, window_of(b).local_date)
            figures = refunds if b.receipt_kind is ReceiptKind.REFUND else sales
            figures[w][0] += 1
            figures[w][1] += b.total_cents
            if b.receipt_kind is ReceiptKind.REFUND:
                continue
            stores[(*w, b.store_id)][0] += 1
            stores[(*w, b.store_id)][1] += b.total_cents
            goods = [x for x in b.lines if x.kind.value not in ("DEPOSIT", "DEPOSIT_REFUND")]
            sizes[(*w, size_bucket(len({x.sku for x in goods})))] += 1
            for x in goods:
                groups[(*w, x.product_group)] += x.amount_cents + x.adjustment_cents

        def published(sql: str) -> dict[tuple[Any, ...], list[Any]]:
            """Rows of a view: the leading columns → the last two."""
            found = {tuple(r[:-2]): [r[-2], r[-1]] for r in db.query(sql)}
            assert found, sql
            return found

        # A day or refund figure has no parent: published exactly where it has 2 baskets.
        days = published("SELECT chain, sales_date, baskets, sales_cents FROM analytics.chain_daily_sales")
        assert days == {w: v for w, v in sales.items() if v[0] >= 2}
        paid = published("SELECT chain, sales_date, refunds, refunded_cents FROM analytics.refunds")
        assert paid == {w: v for w, v in refunds.items() if v[0] >= 2}
        assert all(cents < 0 for _, cents in paid.values())
        # The others may be suppressed (complementary suppression); what is published is the truth.
        by_store = published("SELECT chain, sales_date, store_id, baskets, sales_cents FROM analytics.daily_sales")
        assert by_store == {key: stores[key] for key in by_store}
        mix = published(
            "SELECT chain, sales_date, product_group, baskets, amount_cents FROM analytics.group_sales "
            "WHERE level = 'chain'"
        )
        assert {k: v[1] for k, v in mix.items()} == {k: groups[k] for k in mix}
        buckets = published("SELECT chain, sales_date, size_bucket, baskets, share_of_day FROM analytics.basket_sizes")
        for (chain, day, bucket), (n, share) in buckets.items():
            assert n == sizes[(chain, day, bucket)]
            assert share == pytest.approx(n / sales[(chain, day)][0])
        per_chain: dict[str, dict[str, int]] = defaultdict(lambda: {"baskets": 0, "sales_cents": 0})
        for (chain, _day), (n, cents) in days.items():
            per_chain[chain]["baskets"] += n
            per_chain[chain]["sales_cents"] += cents
        windows = {Window(r.cell.key.chain, r.cell.key.local_date) for r in recs}
        assert cell_counts(db) == {
            "cells": len(recs),
            "windows": len(windows),
            "per_chain": dict(sorted(per_chain.items())),
        }

    def test_the_upgrade_to_cells_drops_the_baskets_and_every_view_on_them(
        self, open_sink: OpenSink, tmp_path: Path
    ) -> None:
        before = tmp_path / "migrations-before-cells"
        before.mkdir()
        for entry in resources.files("receiptflow.sinks").joinpath("migrations").iterdir():
            if entry.name.endswith(".sql") and int(entry.name.split("_", 1)[0]) < 13:
                (before / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
        # A warehouse the previous release migrated, with a basket and its line as its sink wrote them:
        # the rows that re-identified.
        db = open_sink(setup=False).warehouse
        assert isinstance(db, Connected)
        db.open()
        apply_migrations(db, "a warehouse before the cells", before)
        basket = "'" + "ab" * 16 + "'"
        db.transaction(
            [
                (
                    "INSERT INTO analytics.baskets (basket_id, key_period, chain, store_id, event_hour, local_hour, "
                    f"payment_method, currency, total_cents, line_count) VALUES ({basket}, '2026-11', 'PRISMA', 'S1', "
                    "TIMESTAMPTZ '2026-11-20 10:00:00+00', TIMESTAMP '2026-11-20 12:00:00', 'CARD', 'EUR', 1234, 1)",
                    (),
                ),
                (
                    "INSERT INTO analytics.basket_lines (basket_id, line_seq, sku, product_group, quantity, "
                    f"unit_price_cents, amount_cents) VALUES ({basket}, 1, '6410000000001', 'dairy', 1, 1234, 1234)",
                    (),
                ),
            ]
        )
        assert db.query("SELECT count(*) FROM analytics.product_group_mix") == [(1,)]
        db.close()

        sink = open_sink()
        for gone in ("baskets", "basket_lines", "daily_sales_net", "product_group_mix", "basket_size"):
            with pytest.raises(WarehouseError):
                sink.warehouse.query(f"SELECT count(*) FROM analytics.{gone}")
        # The names analysts know are views of the cells now, empty until cells arrive.
        assert table_count(sink, "analytics.daily_sales") == table_count(sink, "analytics.store_hour_sales") == 0
        cells = cell_records(150, seed=29)
        sink.write(cells)
        sink.flush()
        assert table_count(sink, "analytics.daily_sales") == len(cells_of(cells, Family.STORE_DAY)) > 0
        rows = sink.warehouse.query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        assert rows == [(m.version, m.name, m.checksum) for m in migrations("duckdb")]

    def test_an_erased_card_is_not_stored_again(self, open_sink: OpenSink) -> None:
        recs = records(300, seed=41)
        cards = Counter(r.purchase.card_id for r in recs if r.purchase.card_id is not None)
        lines = Counter(r.purchase.card_id for r in recs if r.purchase.card_id is not None for _ in r.purchase.items)
        card = max(cards, key=lambda c: (lines[c] > 0, cards[c]))  # a busy card with item lines too
        mine = [r for r in recs if r.purchase.card_id == card]
        items = sum(len(r.purchase.items) for r in mine if r.purchase.granularity is Granularity.ITEM)
        consent = SinkConsentRecord(ConsentChange(card, NOW, True, True, "app"), "consents", 0, 0)
        others = [SinkConsentRecord(ConsentChange("someone-else", NOW, True, True, "app"), "consents", 0, 1)]
        sink = open_sink()
        sink.write([*recs[:150], consent])
        sink.flush()
        deleted = delete_card(sink.warehouse, card, sink.card_hash(card))
        assert deleted["receipts"] == sum(1 for r in recs[:150] if r.purchase.card_id == card) > 0
        assert deleted["consent_changes"] == 1
        hashed = sink.card_hash(card)
        assert is_erased(sink.warehouse, hashed) and not is_erased(sink.warehouse, card)
        assert [r[0] for r in sink.warehouse.query("SELECT card_hash FROM erased_cards")] == [hashed]  # no card id

        # The whole topic again (a replay) and the rest: every row but the erased card's is stored.
        sink.write([*recs, consent, *others])
        result = sink.flush()
        kept = [r for r in recs if r.purchase.card_id != card]
        assert result.receipts == len(kept) - (150 - deleted["receipts"])
        assert warehouse_counts(sink.warehouse) == expected_counts(kept)
        assert table_count(sink, "consent_changes") == 1
        assert card not in {r[0] for r in sink.warehouse.query("SELECT card_id FROM receipts")}
        assert card not in {r[0] for r in sink.warehouse.query("SELECT card_id FROM consent_changes")}
        for table in ("receipt_items", "receipt_groups"):
            orphans = f"SELECT count(*) FROM {table} WHERE receipt_id NOT IN (SELECT receipt_id FROM receipts)"
            assert sink.warehouse.query(orphans) == [(0,)]
        assert items > 0 and table_count(sink, "receipt_items") == sum(
            len(r.purchase.items) for r in kept if r.purchase.granularity is Granularity.ITEM
        )
        # The positions moved past the erased card's records all the same.
        assert sink.committed_offsets(TOPIC) == {0: 100, 1: 100, 2: 100}
        assert sink.committed_offsets("consents") == {0: 2}

    def test_erasures_from_the_topic_delete_held_rows_and_keep_the_card_out(self, open_sink: OpenSink) -> None:
        # A warehouse that stored a card before it learnt of its erasure (a second warehouse, a backup).
        recs = records(300, seed=43)
        cards = Counter(r.purchase.card_id for r in recs if r.purchase.card_id is not None)
        card, other = (c for c, _ in cards.most_common(2))
        consent = SinkConsentRecord(ConsentChange(card, NOW, True, True, "app"), "consents", 0, 0)
        sink = open_sink()
        sink.write([*recs[:200], consent])
        sink.flush()
        held = sum(1 for r in recs[:200] if r.purchase.card_id == card)
        assert held > 0
        before = warehouse_counts(sink.warehouse)["receipts"]

        erased = {sink.card_hash(card): NOW, "0" * 32: NOW}  # a hash of a card this warehouse never saw
        deleted = record_erased(sink.warehouse, erased)
        assert deleted["receipts"] == held and deleted["consent_changes"] == 1
        assert warehouse_counts(sink.warehouse)["receipts"] == before - held
        assert sorted(r[0] for r in sink.warehouse.query("SELECT card_hash FROM erased_cards")) == sorted(erased)
        assert other in {r[0] for r in sink.warehouse.query("SELECT card_id FROM receipts")}
        for table in ("receipt_items", "receipt_groups"):
            orphans = f"SELECT count(*) FROM {table} WHERE receipt_id NOT IN (SELECT receipt_id FROM receipts)"
            assert sink.warehouse.query(orphans) == [(0,)]
        # Again (a sink restarting): nothing left to delete. The rest of the topic: the card stays out.
        assert record_erased(sink.warehouse, erased) == {}
        sink.write(recs)
        sink.flush()
        assert card not in {r[0] for r in sink.warehouse.query("SELECT card_id FROM receipts")}
        assert warehouse_counts(sink.warehouse) == expected_counts([r for r in recs if r.purchase.card_id != card])

    def test_chain_dimension_follows_the_policy_and_the_views_join_it(self, open_sink: OpenSink) -> None:
        policy = load_policy()
        recs = records(300, seed=37)
        sink = open_sink()
        sync_chains(sink.warehouse, chain_dimension_rows(policy, NOW))
        sink.write(recs)
        sink.flush()
        # Upserted again with a renamed group (a policy edit): updated in place, not duplicated.
        renamed = [
            (c, "S-ryhmä" if g == "S Group" else g, lvl, v, t) for c, g, lvl, v, t in chain_dimension_rows(policy, NOW)
        ]
        sync_chains(sink.warehouse, renamed)
        assert table_count(sink, "dim_chains") == len(policy.chains)

        sold: Counter[str] = Counter(r.purchase.chain for r in recs)
        stores: dict[str, set[str]] = {}
        for r in recs:
            stores.setdefault(r.purchase.chain, set()).add(r.purchase.store_id)
        rows = sink.warehouse.query("SELECT chain, chain_group, current_level, stores, receipts FROM chains")
        got = {c: (g, lvl, int(n_stores), int(n)) for c, g, lvl, n_stores, n in rows}
        want = {}
        for chain, cp in policy.chains.items():
            group = "S-ryhmä" if cp.group == "S Group" else cp.group
            level = policy.version_at(chain, NOW).level.value.lower()
            want[chain] = (group, level, len(stores.get(chain, ())), sold[chain])
        assert got == want
        store_rows = sink.warehouse.query("SELECT store_id, chain, chain_group, receipts FROM stores")
        assert {s for s, *_ in store_rows} == {r.purchase.store_id for r in recs}
        for store_id, chain, group, n in store_rows:
            assert store_id in stores[chain]
            assert group == want[chain][0]
            assert int(n) == sum(1 for r in recs if r.purchase.store_id == store_id)

    def test_sales_of_a_chain_the_policy_does_not_know_still_show(self, open_sink: OpenSink) -> None:
        recs = records(20, partitions=1)
        odd = dataclasses.replace(recs[0], purchase=dataclasses.replace(recs[0].purchase, chain="NEW_CHAIN"))
        sink = open_sink()
        sync_chains(sink.warehouse, chain_dimension_rows(load_policy(), NOW))
        sink.write([odd])
        sink.flush()
        assert sink.warehouse.query("SELECT chain_group, receipts FROM chains WHERE chain = 'NEW_CHAIN'") == [(None, 1)]

    def test_query_errors_are_warehouse_errors(self, open_sink: OpenSink) -> None:
        sink = open_sink()
        with pytest.raises(WarehouseError):
            sink.warehouse.query("SELECT no_such_column FROM receipts")
        assert warehouse_counts(sink.warehouse)["receipts"] == 0  # and the sink still works

    def test_default_group(self, open_sink: OpenSink) -> None:
        assert open_sink().group_id == DEFAULT_GROUP

    # A hook: how to run a write statement outside the sink's interface (to simulate old warehouses).
    def execute(self, sink: Sink, sql: str) -> None:  # pragma: no cover - overridden by every subclass
        raise NotImplementedError
