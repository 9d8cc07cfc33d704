"""What a closed window of baskets may publish: cells of at least ``k`` baskets, no difference under ``k``.

:func:`release` takes every basket of one or more windows and returns the cells that may be
published. The rules, applied until nothing changes (suppression only grows, so it ends):

1. **Threshold.** A cell behind fewer than ``k`` distinct baskets is suppressed.
2. **Top-down.** A cell whose parent (see the table in :mod:`receiptflow.cells`) is suppressed is
   suppressed: a child of a hidden parent could otherwise be subtracted from a grandparent.
3. **Complementary suppression.** For every published parent and each family of its children, the
   baskets behind some child but behind no published child (what the parent holds beyond its
   published children) must be none or at least ``k``. While they are 1 to ``k - 1``, the
   published child with the fewest baskets (then the lowest key) is suppressed too. Where the
   children split the parent (stores of a day, hours of a store, size buckets, stores of a group or
   of a SKU) these are the parent's figures minus its published children's, which anyone can
   compute; where a basket is behind several children (groups, SKUs) it counts only once none of
   its children is published. Baskets behind no child of a family (no goods: only deposits) are
   the size bucket ``0``, which the size buckets' own rule covers.

Product pairs have no additive parent (a basket holds many pairs), so only rules 1 and 2 apply to
them: a pair is published only with both its SKUs' cells.

Baskets are taken once per ``basket_id`` and in id order, so any order and any repetition of the
same baskets give the same cells, figures included (float sums are summed in that one order).

Pure: no I/O and no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .cells import (
    NOT_GOODS,
    Cell,
    CellKey,
    Family,
    Window,
    is_refund,
    local_start,
    size_bucket,
    window_of,
)
from .models import AnalyticsBasket

F = Family


@dataclass
class _Acc:
    baskets: set[int] = field(default_factory=set)
    lines: int = 0
    quantity: float = 0.0
    amount_cents: int = 0

    def add(self, i: int, lines: int, quantity: float, amount_cents: int) -> None:
        self.baskets.add(i)
        self.lines += lines
        self.quantity += quantity
        self.amount_cents += amount_cents


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """What went into a window, published or not (the aggregator's own account, never published)."""

    window: Window
    sale_baskets: int
    sale_cents: int
    refund_baskets: int
    refund_cents: int


@dataclass(frozen=True, slots=True)
class Release:
    """The cells that may be published, sorted by key, and every window's totals."""

    cells: tuple[Cell, ...]
    totals: tuple[WindowTotals, ...]


def distinct_baskets(baskets: Iterable[AnalyticsBasket]) -> list[AnalyticsBasket]:
    """One basket per id, in id order; of two different records under one id, the smaller repr."""
    by_id: dict[str, AnalyticsBasket] = {}
    for b in baskets:
        seen = by_id.get(b.basket_id)
        if seen is None or (seen != b and repr(b) < repr(seen)):
            by_id[b.basket_id] = b
    return [by_id[i] for i in sorted(by_id)]


def accumulate(baskets: list[AnalyticsBasket]) -> dict[CellKey, _Acc]:
    """Every candidate cell of the baskets with the set of basket indices behind it."""
    acc: dict[CellKey, _Acc] = defaultdict(_Acc)
    for i, b in enumerate(baskets):
        w = window_of(b)
        day = CellKey(F.CHAIN_DAY, w.chain, w.local_date)
        quantity = sum(line.quantity for line in b.lines)
        if is_refund(b):
            acc[replace(day, family=F.REFUNDS)].add(i, len(b.lines), quantity, b.total_cents)
            continue
        store = replace(day, family=F.STORE_DAY, store_id=b.store_id)
        hour = replace(store, family=F.STORE_HOUR, hour=local_start(b).hour)
        goods = [line for line in b.lines if line.kind not in NOT_GOODS]
        skus = sorted({line.sku for line in goods})
        size = replace(day, family=F.BASKET_SIZE, size_bucket=size_bucket(len(skus)))
        for key in (day, store, hour, size):
            acc[key].add(i, len(b.lines), quantity, b.total_cents)
        for line in goods:
            net = line.amount_cents + line.adjustment_cents
            group = replace(day, family=F.CHAIN_GROUP, product_group=line.product_group)
            sku = replace(group, family=F.CHAIN_SKU, sku=line.sku)
            store_group = replace(group, family=F.STORE_GROUP, store_id=b.store_id)
            store_sku = replace(sku, family=F.STORE_SKU, store_id=b.store_id)
            for key in (group, sku, store_group, store_sku):
                acc[key].add(i, 1, line.quantity, net)
        for n, a in enumerate(skus):
            for other in skus[n + 1 :]:
                acc[replace(day, family=F.SKU_PAIR, sku=a, sku_b=other)].add(i, 0, 0.0, 0)
    return acc


def parents(key: CellKey, skus: dict[tuple[str, object, str], list[CellKey]]) -> list[CellKey]:
    """The cells ``key`` must not be published without (see :mod:`receiptflow.cells`)."""
    day = CellKey(F.CHAIN_DAY, key.chain, key.local_date)
    store = replace(day, family=F.STORE_DAY, store_id=key.store_id)
    group = replace(day, family=F.CHAIN_GROUP, product_group=key.product_group)
    f = key.family
    if f in (F.STORE_DAY, F.BASKET_SIZE, F.CHAIN_GROUP):
        return [day]
    if f is F.STORE_HOUR:
        return [store]
    if f is F.CHAIN_SKU:
        return [group]
    if f is F.STORE_GROUP:
        return [store, group]
    if f is F.STORE_SKU:
        store_group = replace(group, family=F.STORE_GROUP, store_id=key.store_id)
        return [store_group, replace(key, store_id=None, family=F.CHAIN_SKU)]
    if f is F.SKU_PAIR:
        return [p for s in (key.sku, key.sku_b) for p in skus.get((key.chain, key.local_date, s or ""), [])]
    return []


# Families that add up to their parent (basket sets disjoint or covering): rule 3 applies.
_ADDITIVE = frozenset(F) - {F.SKU_PAIR, F.CHAIN_DAY, F.REFUNDS}


def _suppress(acc: dict[CellKey, _Acc], k: int) -> set[CellKey]:
    skus: dict[tuple[str, object, str], list[CellKey]] = defaultdict(list)
    for key in acc:
        if key.family is F.CHAIN_SKU:
            skus[(key.chain, key.local_date, key.sku or "")].append(key)
    up = {key: parents(key, skus) for key in acc}
    relations: dict[tuple[CellKey, Family], list[CellKey]] = defaultdict(list)
    for key, ps in up.items():
        if key.family in _ADDITIVE:
            for p in ps:
                relations[(p, key.family)].append(key)
    for children in relations.values():
        children.sort(key=lambda c: (len(acc[c].baskets), c))
    hidden = {key for key, a in acc.items() if len(a.baskets) < k}
    changed = True
    while changed:
        changed = False
        for key, ps in up.items():
            if key not in hidden and any(p not in acc or p in hidden for p in ps):
                hidden.add(key)
                changed = True
        for (parent, _family), children in relations.items():
            if parent in hidden or parent not in acc:
                continue
            covered = set().union(*(acc[c].baskets for c in children))
            while True:
                shown = [c for c in children if c not in hidden]
                gone = covered.difference(*(acc[c].baskets for c in shown))
                if not gone or len(gone) >= k or not shown:
                    break
                hidden.add(shown[0])
                changed = True
    return hidden


def release(baskets: Iterable[AnalyticsBasket], k: int) -> Release:
    """The publishable cells of ``baskets`` (any windows, any order, repeats allowed)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    distinct = distinct_baskets(baskets)
    acc = accumulate(distinct)
    hidden = _suppress(acc, k)
    cells = tuple(
        Cell(key, len(a.baskets), a.lines, round(a.quantity, 3), a.amount_cents)
        for key, a in sorted(acc.items())
        if key not in hidden
    )
    return Release(cells, window_totals(distinct))


def window_totals(baskets: list[AnalyticsBasket]) -> tuple[WindowTotals, ...]:
    totals: dict[Window, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for b in baskets:
        t = totals[window_of(b)]
        if is_refund(b):
            t[2] += 1
            t[3] += b.total_cents
        else:
            t[0] += 1
            t[1] += b.total_cents
    return tuple(WindowTotals(w, *t) for w, t in sorted(totals.items()))
