"""release(): the same cells whatever the order, k baskets behind each, and no difference under k.

The properties are checked against an account of the cells written apart from the module
(:mod:`.cell_account`): which baskets are behind each cell comes from there, never from the
module's internals. The module's output must also equal the plain reference implementation of the
same rules, on drawn baskets and on simulated traffic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiptflow.cells import Cell, CellKey, Family
from receiptflow.models import AnalyticsBasket, BasketLine, ReceiptKind
from receiptflow.suppression import Release, release

from .basket_strategies import basket_lists, baskets
from .cell_account import GOODS_UNDER, PARTITIONS, Account, account, reference_release
from .sales_data import simulated_sales

F = Family
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _published(r: Release) -> dict[CellKey, Cell]:
    return {c.key: c for c in r.cells}


def differences_under_k(acc: Account, r: Release, k: int) -> list[str]:
    """Every way the published cells let one compute a group of 1 to k - 1 baskets (empty: none)."""
    shown = _published(r)
    found = []
    for (parent, family), kids in acc.children.items():
        if parent not in shown or family is F.SKU_PAIR:
            continue
        published = [c for c in kids if c in shown]
        # The parent's baskets behind no published child of this family, by set. With no child published
        # that is the whole parent; else those behind no child at all (no goods) are left out: they are
        # the size bucket "0", which its own relation covers (see without_goods).
        rest = acc.behind(parent).difference(*(acc.behind(c) for c in published))
        if published:
            rest -= acc.behind(parent).difference(*(acc.behind(c) for c in kids))
        if 0 < len(rest) < k:
            found.append(f"{parent} minus its published {family} cells: {len(rest)} baskets")
        if (parent.family, family) in PARTITIONS:
            # What anyone can compute from the figures alone.
            baskets = shown[parent].baskets - sum(shown[c].baskets for c in published)
            cents = shown[parent].amount_cents - sum(shown[c].amount_cents for c in published)
            if 0 < baskets < k or (baskets == 0 and cents != 0):
                found.append(f"{parent} minus its published {family} cells: {baskets} baskets, {cents} cents")
    return found


def without_goods(acc: Account) -> list[str]:
    """Baskets behind a parent and no child of a family are those of the size bucket "0" (empty: so)."""
    found = []
    for (parent, family), kids in acc.children.items():
        if family is F.SKU_PAIR:
            continue
        alone = acc.behind(parent).difference(*(acc.behind(c) for c in kids))
        if family in (F.CHAIN_GROUP, F.STORE_GROUP):
            day = CellKey(F.BASKET_SIZE, parent.chain, parent.local_date, size_bucket="0")
            alone -= acc.cells[day].baskets if day in acc.cells else set()
        if alone:
            found.append(f"{parent}: {len(alone)} baskets behind no {family} cell")
    return found


def broken_rules(acc: Account, r: Release, k: int) -> list[str]:
    """Published cells under k, published without a parent, or with figures other than their baskets'."""
    shown = _published(r)
    found = []
    for key, cell in shown.items():
        f = acc.cells[key]
        if cell.baskets != len(f.baskets) or cell.baskets < k:
            found.append(f"{key}: {cell.baskets} baskets published, {len(f.baskets)} behind it, k = {k}")
        if cell.amount_cents != f.amount_cents or cell.lines != f.lines:
            found.append(f"{key}: figures {cell} are not those of its baskets")
        missing = [p for p in acc.parents[key] if p not in shown]
        if missing:
            found.append(f"{key} is published without {missing}")
        if key.family is F.SKU_PAIR and {p.sku for p in acc.parents[key]} != {key.sku, key.sku_b}:
            found.append(f"{key} has not both SKUs' cells as parents")
    return found


@SLOW
@given(basket_lists(), st.integers(1, 6), st.randoms(use_true_random=False))
def test_any_order_and_any_repetition_give_the_same_release(
    bs: list[AnalyticsBasket], k: int, rnd: random.Random
) -> None:
    again = bs + rnd.sample(bs, len(bs) // 2)
    rnd.shuffle(again)
    assert release(again, k) == release(bs, k)


@SLOW
@given(basket_lists(), st.integers(1, 6), st.randoms(use_true_random=False))
def test_the_same_baskets_under_other_pseudonyms_give_the_same_release(
    bs: list[AnalyticsBasket], k: int, rnd: random.Random
) -> None:
    """Another key or key period: every id changes, in another order; the cells do not."""
    ids = sorted({b.basket_id for b in bs})
    other = dict(zip(ids, rnd.sample([f"{n:032x}" for n in range(10_000)], len(ids)), strict=True))
    renamed = [replace(b, basket_id=other[b.basket_id], key_period="2027-01") for b in bs]
    assert release(renamed, k).cells == release(bs, k).cells


@SLOW
@given(st.lists(baskets(ids=8), max_size=30), st.integers(1, 4), st.randoms(use_true_random=False))
def test_different_records_under_one_id_give_the_same_release_in_any_order(
    bs: list[AnalyticsBasket], k: int, rnd: random.Random
) -> None:
    shuffled = list(bs)
    rnd.shuffle(shuffled)
    assert release(shuffled, k) == release(bs, k)


@SLOW
@given(basket_lists(), st.integers(1, 6))
def test_published_cells_have_k_baskets_and_their_parents(bs: list[AnalyticsBasket], k: int) -> None:
    assert broken_rules(account(bs), release(bs, k), k) == []


@SLOW
@given(basket_lists(), st.integers(1, 6))
def test_no_parent_minus_its_published_children_is_under_k(bs: list[AnalyticsBasket], k: int) -> None:
    acc = account(bs)
    assert differences_under_k(acc, release(bs, k), k) == []
    assert without_goods(acc) == []


@SLOW
@given(basket_lists(), st.integers(1, 6))
def test_release_equals_the_reference_implementation(bs: list[AnalyticsBasket], k: int) -> None:
    assert release(bs, k) == reference_release(bs, k)


@given(basket_lists(max_size=25))
@settings(max_examples=100, deadline=None)
def test_partitions_add_up(bs: list[AnalyticsBasket]) -> None:
    """The relations treated as partitions do split their parent's baskets and amounts without overlap."""
    acc = account(bs)
    for (parent, family), kids in acc.children.items():
        if (parent.family, family) in PARTITIONS:
            assert sum(len(acc.behind(c)) for c in kids) == len(acc.behind(parent))
            assert set().union(*(acc.behind(c) for c in kids)) == acc.behind(parent)
            assert sum(acc.cells[c].amount_cents for c in kids) == acc.cells[parent].amount_cents


def test_k_of_one_publishes_every_cell_but_goods_every_basket_of_their_parent_holds() -> None:
    bs = simulated_sales(5, 300, days=1, stores=4).baskets
    acc = account(bs)
    certain = {
        key
        for key, ps in acc.parents.items()
        for p in ps
        if (p.family, key.family) in GOODS_UNDER and acc.behind(p) == acc.behind(key)
    }
    shown = {c.key for c in release(bs, 1).cells}
    assert certain, "the traffic must have a group or SKU in every basket of some store or group"
    # Rule 4 and what rule 2 takes with it: every other cell is published at k = 1.
    assert certain.isdisjoint(shown)
    assert all(key in shown or key in certain or set(acc.parents[key]) - shown for key in acc.cells)
    with pytest.raises(ValueError, match="k must be at least 1"):
        release(bs, 0)


def test_small_cells_and_their_complements_are_suppressed() -> None:
    """Twelve baskets in one store hour and one in the next: that one goes, and the twelve with it."""
    hour = datetime(2026, 5, 4, 9, tzinfo=UTC)
    line = BasketLine("A", "dairy", 1.0, 100, 100)

    def basket(i: int, h: datetime) -> AnalyticsBasket:
        return AnalyticsBasket(f"{i:032x}", "2026-05", "SIWA", "S-1", h, 180, "CARD", "EUR", 100, (line,))

    bs = [basket(i, hour) for i in range(12)] + [basket(99, hour.replace(hour=10))]
    shown = _published(release(bs, 10))
    hours = [k for k in shown if k.family is F.STORE_HOUR]
    # The 10 o'clock hour has 1 basket; publishing 12 o'clock's 12 of the day's 13 would give it away.
    assert hours == []
    assert [c.baskets for k, c in shown.items() if k.family is F.STORE_DAY] == [13]
    assert differences_under_k(account(bs), release(bs, 10), 10) == []


HOUR = datetime(2026, 5, 4, 9, tzinfo=UTC)
G1 = BasketLine("G1", "g", 1.0, 100, 100)
H1 = BasketLine("H1", "h", 1.0, 100, 100)
J1 = BasketLine("J1", "j", 1.0, 100, 100)


def _baskets(spec: Sequence[tuple[str, tuple[BasketLine, ...]]]) -> list[AnalyticsBasket]:
    """One basket per (store, lines), ids in the order given (the id order is the visiting order)."""
    return [
        AnalyticsBasket(f"{i:032x}", "2026-05", "SIWA", store, HOUR, 180, "CARD", "EUR", 100, lines)
        for i, (store, lines) in enumerate(spec)
    ]


def _store_groups(r: Release) -> list[tuple[str | None, str | None, int]]:
    return [(c.key.store_id, c.key.product_group, c.baskets) for c in r.cells if c.key.family is F.STORE_GROUP]


@pytest.mark.parametrize("first", ["S1", "S2", "S3"])
def test_the_pseudonyms_do_not_choose_what_is_suppressed(first: str) -> None:
    """Which child rule 3 suppresses can depend on what was suppressed before; that order follows the
    cells' keys, never the basket ids, so the same baskets under any pseudonyms give the same cells.

    Group g has 3 baskets in S1 (too few), 12 in S2 and 15 in S3; S3 also has 4 baskets of group h
    only (too few) and S1 10 of h. Every basket of S2 holds g, and S1's and S3's days leave fewer
    than 10 baskets without h and without g: rule 4 hides those, rules 1 and 3 the rest. Whichever
    basket has the lowest id, nothing of the stores' groups is published.
    """
    spec = [("S1", (G1,))] * 3 + [("S1", (H1,))] * 10 + [("S2", (G1,))] * 12 + [("S3", (G1,))] * 15
    spec += [("S3", (H1,))] * 4
    spec.insert(0, spec.pop(spec.index((first, (G1,)))))  # the lowest id
    bs = _baskets(spec)
    r = release(bs, 10)
    assert _store_groups(r) == []
    assert r == release(_baskets(list(reversed(spec))), 10)  # the same baskets, other ids
    assert r == reference_release(bs, 10)
    assert differences_under_k(account(bs), r, 10) == []


def test_a_relation_visited_before_a_suppression_is_visited_again() -> None:
    """S1's groups are met first and hold; g's stores then hide S1's g, which leaves 5 g-only baskets in S1.

    (Relations are visited in the order of their first child's key: S1's groups, then g's stores.)
    g's stores must hide more than S2's 3 baskets of g: the smallest published, S1's 11. The next
    pass visits S1's groups again and hides j (10, the smallest): else store_day S1 (30) minus the
    store groups (S1, h) and (S1, j) would be those 5 baskets. S2's h leaves 3 of its day's 13
    baskets without it (rule 4).
    """
    spec = [("S1", (G1,))] * 5 + [("S1", (G1, H1))] * 6 + [("S1", (H1,))] * 9 + [("S1", (J1,))] * 10
    spec += [("S2", (G1,))] * 3 + [("S2", (H1,))] * 10 + [("S3", (G1,))] * 20 + [("S3", (H1,))] * 10
    bs = _baskets(spec)
    r = release(bs, 10)
    assert _store_groups(r) == [("S1", "h", 15), ("S3", "g", 20), ("S3", "h", 10)]
    assert r == reference_release(bs, 10)
    assert differences_under_k(account(bs), r, 10) == []


def test_refunds_are_one_figure_per_chain_and_day() -> None:
    back = (BasketLine("A", "dairy", -1.0, 100, -100),)
    bs = [
        AnalyticsBasket(f"{i:032x}", "2026-05", "SIWA", f"S-{i % 3}", HOUR, 180, "CARD", "EUR", -100, back,
                        ReceiptKind.REFUND)
        for i in range(10)
    ]  # fmt: skip
    r = release(bs, 10)
    assert [(c.key.family, c.baskets, c.amount_cents) for c in r.cells] == [(F.REFUNDS, 10, -1000)]
    assert [(t.refund_baskets, t.refund_cents, t.sale_baskets) for t in r.totals] == [(10, -1000, 0)]


@pytest.mark.parametrize("k", [5, 10])
def test_release_equals_the_reference_on_simulated_traffic(k: int) -> None:
    bs = simulated_sales(17, 3_000, days=2, stores=12, customers=100).baskets
    assert release(bs, k) == reference_release(bs, k)


def test_no_difference_under_k_in_three_days_of_realistic_traffic() -> None:
    """20,000 deliveries over three days in 30 stores of every chain: the published cells give nothing away."""
    bs = simulated_sales(7, 20_000).baskets
    acc = account(bs)
    r = release(bs, 10)
    families = {c.key.family for c in r.cells}
    # The release publishes something of every family, so the checks below have cells to check.
    assert families == set(F), set(F) - families
    assert broken_rules(acc, r, 10) == []
    assert differences_under_k(acc, r, 10) == []
    assert without_goods(acc) == []
