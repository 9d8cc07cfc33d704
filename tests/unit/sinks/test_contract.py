"""The behaviour every warehouse sink must have, written once and run against each implementation.

:class:`SinkContract` is not collected here (no ``Test`` prefix); ``test_duckdb.py`` runs it
on a DuckDB file and ``tests/integration/test_sink_postgres.py`` on a real PostgreSQL server. A
subclass provides the ``open_sink`` fixture: a callable that opens (and sets up) a new sink on the
same warehouse each time it is called, so reopening is part of what is tested.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from receiptflow.errors import WarehouseError
from receiptflow.models import ConsentChange, Granularity, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import DEFAULT_GROUP, Sink, SinkConsentRecord, SinkRecord, to_rows, warehouse_counts
from receiptflow.sinks.card_rows import delete_card, is_erased, record_erased
from receiptflow.sinks.migrate import migrations
from receiptflow.sinks.queries import sync_chains
from receiptflow.sinks.rows import BasketRecord, chain_dimension_rows
from receiptflow.sinks.tables import RECEIPT_ITEMS, RECEIPTS

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
TOPIC = "purchases.customer"
# The erasure salt the sinks under test hash card ids with (a real install generates its own).
SALT = b"test-erasure-salt-0123456789"

OpenSink = Callable[..., Sink]
BASKETS = BasketPseudonymiser(b"contract-test-analytics-key")


def purchases(n: int, seed: int = 5) -> list[Purchase]:
    """``n`` valid purchases of every chain and granularity, as the processor emits them."""
    sim = Simulator(seed, stores=30, customers=50)
    policy = load_policy()
    return [process(c, policy, None, NOW).customer for c in sim.stream(n, datetime(2026, 11, 20, tzinfo=UTC), rate=1)]


def records(n: int, seed: int = 5, topic: str = TOPIC, partitions: int = 3) -> list[SinkRecord]:
    """Purchases spread round-robin over ``partitions`` with consecutive offsets per partition."""
    return [SinkRecord(p, topic, i % partitions, i // partitions) for i, p in enumerate(purchases(n, seed))]


def analytics_records(n: int, seed: int = 5) -> list[BasketRecord]:
    """The anonymous baskets the processor sends to purchases.analytics for ``n`` checkouts."""
    sim = Simulator(seed, stores=30, customers=50)
    policy = load_policy()
    out = []
    for i, c in enumerate(sim.stream(n, datetime(2026, 11, 20, tzinfo=UTC), rate=1)):
        anonymous = process(c, policy, None, NOW, BASKETS).analytics
        if anonymous is not None:
            out.append(BasketRecord(anonymous, "purchases.analytics", i % 3, i // 3))
    return out


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

    def test_analytics_baskets_and_consent_changes_are_stored_once(self, open_sink: OpenSink) -> None:
        anonymous, consents = analytics_records(150, seed=29), consent_records(40)
        lines = sum(len(r.basket.lines) for r in anonymous)
        assert lines > 0
        sink = open_sink()
        for _ in range(2):  # the second time is a redelivery: nothing new
            sink.write([*anonymous, *consents, *records(20)])
            result = sink.flush()
        assert (result.baskets, result.analytics_lines) == (0, 0)
        assert table_count(sink, "analytics.baskets") == len(anonymous)
        assert table_count(sink, "analytics.basket_lines") == lines
        assert table_count(sink, "consent_changes") == 40
        assert table_count(sink, "receipts") == 20  # analytics records are not receipts of a customer
        cents = sink.warehouse.query("SELECT sum(amount_cents) FROM analytics.basket_lines")[0][0]
        # The lines' money; receipt-level benefits are in the baskets' totals, on no line.
        assert int(cents) == sum(line.amount_cents for r in anonymous for line in r.basket.lines)
        total = sink.warehouse.query("SELECT sum(total_cents), sum(line_count) FROM analytics.baskets")[0]
        assert (int(total[0]), int(total[1])) == (sum(r.basket.total_cents for r in anonymous), lines)
        assert sink.committed_offsets("consents") == {0: 14, 1: 13, 2: 13}
        last = {p: max(r.offset for r in anonymous if r.partition == p) + 1 for p in {r.partition for r in anonymous}}
        assert sink.committed_offsets("purchases.analytics") == last
        # Reopened, the positions of both stores are still there (each committed with its rows).
        sink.close()
        again = open_sink()
        assert again.committed_offsets("purchases.analytics") == last
        assert again.committed_offsets(TOPIC) == {0: 7, 1: 7, 2: 6}

    def test_analyst_views_read_the_anonymous_store(self, open_sink: OpenSink) -> None:
        anonymous = analytics_records(400, seed=31)
        # Three baskets of a quiet hour of one store: a cell below the minimum.
        quiet = [
            dataclasses.replace(
                r,
                offset=1000 + i,
                basket=dataclasses.replace(
                    anonymous[0].basket,
                    basket_id=f"{i:032x}",
                    event_hour=anonymous[0].basket.event_hour.replace(hour=3),
                ),
            )
            for i, r in enumerate(anonymous[:3])
        ]
        anonymous += quiet
        sink = open_sink()
        sink.write(anonymous)
        sink.flush()
        daily = sink.warehouse.query("SELECT sum(baskets), sum(sales_cents) FROM analytics.daily_sales")[0]
        assert (int(daily[0]), int(daily[1])) == (len(anonymous), sum(r.basket.total_cents for r in anonymous))
        mix = sink.warehouse.query("SELECT chain, sum(share_of_chain) FROM analytics.product_group_mix GROUP BY chain")
        assert mix and all(share == pytest.approx(1.0) for _, share in mix)
        # A store's local hour is its UTC hour shifted by the store's offset: the same cells.
        cells = Counter((r.basket.store_id, r.basket.event_hour, r.basket.event_tz_offset_minutes) for r in anonymous)
        assert max(cells.values()) >= 5 and min(cells.values()) < 5  # both kinds of cell are there
        shown = sink.warehouse.query("SELECT store_id, baskets FROM analytics.store_hour_sales")
        # Only cells with at least 5 baskets are shown, and those with all their baskets.
        assert all(int(n) >= 5 for _, n in shown)
        assert sum(int(n) for _, n in shown) == sum(n for n in cells.values() if n >= 5)

    def test_analytics_views_are_net_of_refunds_and_keep_deposits_out(self, open_sink: OpenSink) -> None:
        baskets = [r.basket for r in analytics_records(400, seed=37)]
        kinds = Counter(b.receipt_kind.value for b in baskets)
        line_kinds = {x.kind.value for b in baskets for x in b.lines}
        assert kinds["REFUND"] and {"DEPOSIT", "RETURN"} <= line_kinds and any(b.adjustment_cents for b in baskets)
        sink = open_sink()
        sink.write(analytics_records(400, seed=37))
        sink.flush()
        db = sink.warehouse
        net = db.query(
            "SELECT sum(baskets), sum(refunds), sum(sales_cents), sum(refunded_cents), sum(net_cents), "
            "sum(net_goods_cents) FROM analytics.daily_sales_net"
        )[0]
        refunded = sum(b.total_cents for b in baskets if b.receipt_kind.value == "REFUND")
        total = sum(b.total_cents for b in baskets)
        assert tuple(int(v) for v in net) == (
            kinds["SALE"],
            kinds["REFUND"],
            total - refunded,
            refunded,
            total,
            total - sum(b.deposit_cents for b in baskets),
        )
        # Product groups: goods net of returns, refunds and every discount, deposits in none.
        want: Counter[tuple[str, str]] = Counter()
        for b in baskets:
            for x in b.lines:
                if x.kind.value not in ("DEPOSIT", "DEPOSIT_REFUND"):
                    want[(b.chain, x.product_group)] += x.amount_cents + x.adjustment_cents
        mix = {
            (c, g): int(cents)
            for c, g, cents in db.query("SELECT chain, product_group, amount_cents FROM analytics.product_group_mix")
        }
        assert mix == dict(want)
        # With every adjustment shared out, a chain's groups add up to its baskets' goods, net.
        for chain in {b.chain for b in baskets}:
            mine = [b for b in baskets if b.chain == chain]
            if all(sum(x.adjustment_cents for x in b.lines) == b.adjustment_cents for b in mine):
                goods = sum(b.total_cents - b.deposit_cents for b in mine)
                assert sum(v for (c, _), v in mix.items() if c == chain) == goods
        sizes = db.query("SELECT sum(baskets) FROM analytics.basket_size")[0]
        assert int(sizes[0]) == kinds["SALE"]

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
