"""An account of the analytics cells written apart from :mod:`receiptflow.suppression`, for its tests.

It reads the table of :mod:`receiptflow.cells` afresh: which baskets are behind each cell (as sets
of basket ids), what each basket adds to the cell's figures, which cells are each cell's parents, and
which parent/family relations add up (partitions). :func:`reference_release` applies the rules of
:mod:`receiptflow.suppression` the plain way -- sets, full sweeps, every union recomputed -- so the
module's output can be compared with it. Slow by design: only for tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from receiptflow.cells import Cell, CellKey, Family, Window, size_bucket
from receiptflow.models import AnalyticsBasket, LineKind, ReceiptKind
from receiptflow.suppression import Release, WindowTotals

F = Family
DEPOSITS = (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND)
# Child family -> the families of its parents (sku_pair: the chain_sku cells of both its SKUs).
PARENT_FAMILIES: dict[Family, tuple[Family, ...]] = {
    F.STORE_DAY: (F.CHAIN_DAY,),
    F.STORE_HOUR: (F.STORE_DAY,),
    F.BASKET_SIZE: (F.CHAIN_DAY,),
    F.CHAIN_GROUP: (F.CHAIN_DAY,),
    F.CHAIN_SKU: (F.CHAIN_GROUP,),
    F.STORE_GROUP: (F.STORE_DAY, F.CHAIN_GROUP),
    F.STORE_SKU: (F.STORE_GROUP, F.CHAIN_SKU),
    F.SKU_PAIR: (F.CHAIN_SKU,),
}
# (parent family, child family) whose children split the parent's baskets and amounts without overlap.
PARTITIONS = frozenset(
    {
        (F.CHAIN_DAY, F.STORE_DAY),
        (F.STORE_DAY, F.STORE_HOUR),
        (F.CHAIN_DAY, F.BASKET_SIZE),
        (F.CHAIN_GROUP, F.STORE_GROUP),
        (F.CHAIN_SKU, F.STORE_SKU),
    }
)


# (parent family, child family) where the child counts goods under a wider cell (rule 4).
GOODS_UNDER = frozenset(
    {
        (F.CHAIN_DAY, F.CHAIN_GROUP),
        (F.CHAIN_GROUP, F.CHAIN_SKU),
        (F.STORE_DAY, F.STORE_GROUP),
        (F.STORE_GROUP, F.STORE_SKU),
    }
)


def local_hour_start(b: AnalyticsBasket) -> datetime:
    """The start of the basket's local hour, naive: its UTC hour moved by its offset."""
    return (b.event_hour + timedelta(minutes=b.event_tz_offset_minutes)).replace(tzinfo=None)


def chosen(baskets: Iterable[AnalyticsBasket]) -> dict[str, AnalyticsBasket]:
    """One record per basket id; of different records under one id, the one whose repr sorts first."""
    by_id: dict[str, AnalyticsBasket] = {}
    for b in baskets:
        if b.basket_id not in by_id or repr(b) < repr(by_id[b.basket_id]):
            by_id[b.basket_id] = b
    return by_id


def contributions(b: AnalyticsBasket) -> Iterator[tuple[CellKey, int, float, int]]:
    """(cell, lines, quantity, amount) for each time the basket adds to a cell, in the order it does."""
    local = local_hour_start(b)
    day = CellKey(F.CHAIN_DAY, b.chain, local.date())
    if b.receipt_kind is ReceiptKind.REFUND:
        yield CellKey(F.REFUNDS, b.chain, day.local_date), len(b.lines), sum(x.quantity for x in b.lines), b.total_cents
        return
    goods = [x for x in b.lines if x.kind not in DEPOSITS]
    skus = sorted({x.sku for x in goods})
    whole = (len(b.lines), sum(x.quantity for x in b.lines), b.total_cents)
    yield (day, *whole)
    yield (CellKey(F.STORE_DAY, b.chain, day.local_date, store_id=b.store_id), *whole)
    yield (CellKey(F.STORE_HOUR, b.chain, day.local_date, store_id=b.store_id, hour=local.hour), *whole)
    yield (CellKey(F.BASKET_SIZE, b.chain, day.local_date, size_bucket=size_bucket(len(skus))), *whole)
    for x in goods:
        net = x.amount_cents + x.adjustment_cents
        g, s = x.product_group, x.sku
        yield CellKey(F.CHAIN_GROUP, b.chain, day.local_date, product_group=g), 1, x.quantity, net
        yield CellKey(F.CHAIN_SKU, b.chain, day.local_date, product_group=g, sku=s), 1, x.quantity, net
        yield CellKey(F.STORE_GROUP, b.chain, day.local_date, store_id=b.store_id, product_group=g), 1, x.quantity, net
        yield CellKey(F.STORE_SKU, b.chain, day.local_date, b.store_id, product_group=g, sku=s), 1, x.quantity, net
    for n, a in enumerate(skus):
        for other in skus[n + 1 :]:
            yield CellKey(F.SKU_PAIR, b.chain, day.local_date, sku=a, sku_b=other), 0, 0.0, 0


@dataclass
class Figures:
    baskets: set[str] = field(default_factory=set)
    lines: int = 0
    quantity: float = 0.0
    amount_cents: int = 0


@dataclass
class Account:
    """Every candidate cell of some baskets: who is behind it, its figures, its parents and children."""

    cells: dict[CellKey, Figures]  # sorted by key
    parents: dict[CellKey, list[CellKey]]
    children: dict[tuple[CellKey, Family], list[CellKey]]  # (parent, child family) -> children

    def behind(self, key: CellKey) -> set[str]:
        return self.cells[key].baskets


def account(baskets: Iterable[AnalyticsBasket]) -> Account:
    by_id = chosen(baskets)
    found: dict[CellKey, Figures] = {}
    # Counted in order of what the baskets hold, not of their pseudonyms (the float sums follow it).
    for basket_id in sorted(by_id, key=lambda i: (repr(replace(by_id[i], basket_id="", key_period="")), i)):
        for key, lines, quantity, amount in contributions(by_id[basket_id]):
            f = found.setdefault(key, Figures())
            f.baskets.add(basket_id)
            f.lines += lines
            f.quantity += quantity
            f.amount_cents += amount
    cells = {key: found[key] for key in sorted(found)}
    skus: dict[tuple[str, date, str | None], list[CellKey]] = defaultdict(list)
    for key in cells:
        if key.family is F.CHAIN_SKU:
            skus[(key.chain, key.local_date, key.sku)].append(key)
    parents = {key: parent_keys(key, skus) for key in cells}
    children: dict[tuple[CellKey, Family], list[CellKey]] = {}
    for key, ps in parents.items():
        for p in ps:
            children.setdefault((p, key.family), []).append(key)
    return Account(cells, parents, children)


def parent_keys(key: CellKey, skus: dict[tuple[str, date, str | None], list[CellKey]]) -> list[CellKey]:
    """The parents of ``key`` by the table of :mod:`receiptflow.cells`; ``skus``: the chain_sku cells by SKU."""
    if key.family is F.SKU_PAIR:
        return [c for s in (key.sku, key.sku_b) for c in skus[(key.chain, key.local_date, s)]]
    out = []
    for family in PARENT_FAMILIES.get(key.family, ()):
        # A parent keeps the dimensions of its family and drops the rest.
        dims = {
            F.CHAIN_DAY: {},
            F.STORE_DAY: {"store_id": key.store_id},
            F.CHAIN_GROUP: {"product_group": key.product_group},
            F.STORE_GROUP: {"store_id": key.store_id, "product_group": key.product_group},
            F.CHAIN_SKU: {"product_group": key.product_group, "sku": key.sku},
        }[family]
        out.append(CellKey(family, key.chain, key.local_date, **dims))  # type: ignore[arg-type]
    return out


def reference_release(baskets: Iterable[AnalyticsBasket], k: int) -> Release:
    """The rules of :mod:`receiptflow.suppression`, applied the plain way."""
    baskets = list(baskets)
    acc = account(baskets)
    # Rule 3's relations, in the order their first child appears; pairs have no additive parent.
    relations = {rel: kids for rel, kids in acc.children.items() if rel[1] is not F.SKU_PAIR}
    hidden = {key for key, f in acc.cells.items() if len(f.baskets) < k}
    # Rule 4: goods behind all but fewer than k of the baskets of the cell they are counted under.
    hidden |= {
        key
        for key, ps in acc.parents.items()
        for p in ps
        if (p.family, key.family) in GOODS_UNDER and len(acc.behind(p)) - len(acc.behind(key)) < k
    }
    while True:
        before = len(hidden)
        top_down = True
        while top_down:  # rule 2, to the last generation
            top_down = False
            for key, ps in acc.parents.items():
                if key not in hidden and any(p in hidden for p in ps):
                    hidden.add(key)
                    top_down = True
        for (parent, _family), kids in relations.items():  # rule 3
            if parent in hidden:
                continue
            ranked = sorted(kids, key=lambda c: (len(acc.behind(c)), c))
            while True:
                shown = [c for c in ranked if c not in hidden]
                gone = set().union(*(acc.behind(c) for c in kids)).difference(*(acc.behind(c) for c in shown))
                if not gone or len(gone) >= k or not shown:
                    break
                hidden.add(shown[0])
        if len(hidden) == before:
            break
    cells = tuple(
        Cell(key, len(f.baskets), f.lines, round(f.quantity, 3), f.amount_cents)
        for key, f in sorted(acc.cells.items())
        if key not in hidden
    )
    return Release(cells, reference_totals(baskets))


def reference_totals(baskets: Iterable[AnalyticsBasket]) -> tuple[WindowTotals, ...]:
    sums: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for b in chosen(baskets).values():
        t = sums[(b.chain, local_hour_start(b).date())]
        refund = 2 if b.receipt_kind is ReceiptKind.REFUND else 0
        t[refund] += 1
        t[refund + 1] += b.total_cents
    return tuple(WindowTotals(Window(c, d), *t) for (c, d), t in sorted(sums.items()))
