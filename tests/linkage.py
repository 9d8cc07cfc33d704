"""The linkage attack on the published analytics: how many card-linked receipts it pins to one basket.

The attacker holds the card-linked receipts of chains that keep less than every line against a card
(:class:`Receipt`: store, local time, totals, payment, and for chains that keep product groups the
group amounts and their line count) and the published analytics, either

* (a) the old basket rows (:class:`~receiptflow.models.AnalyticsBasket`: store, UTC hour and
  offset, payment, total, deposit, adjustment, lines), or
* (b) cells (:class:`~receiptflow.cells.Cell`).

A receipt is *pinned* when a join on what both sides share narrows it to candidates that together
stand for exactly one basket: then that basket's lines (its SKUs) belong to the card.

(a) The shared columns are :data:`COLUMNS` (place, time at every granularity, money, payment, line
count, group amounts, receipt kind). Each is exact: a receipt's value equals its basket's, so the
receipt's own basket is among the candidates of every join, and a join on more columns has fewer
candidates. Hence a receipt is pinned by some combination of columns exactly when it is pinned by
the combination of all the columns it has (:func:`pinned_by_rows` with ``every_combination`` tries
them all to show it); a receipt with no published basket is never pinned (a candidate that
contradicts a known column is no candidate).

(b) The joins are the cells' own dimensions: each cell a receipt can be placed in (its chain and
day, store, store hour, size buckets its line count allows, its groups and store groups, refunds),
and the *remainders* an analyst can derive: for every published parent of a partition (stores of a
day, hours of a store, size buckets of a day, stores of a group, stores of a SKU) the parent minus
its published children, a group of baskets with its count. A receipt whose cell is not published
falls in its parent's remainder.

Pure functions, no I/O: unit and integration tests feed them what they read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import combinations

from receiptflow.cells import Cell, CellKey, Family, size_bucket
from receiptflow.models import AnalyticsBasket, Granularity, LineKind, Purchase

F = Family
DEPOSITS = (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A card-linked receipt as the attacker holds it (plain values, no card needed)."""

    chain: str
    store_id: str
    local_time: datetime  # aware, in the register's offset
    total_cents: int
    deposit_cents: int
    adjustment_cents: int
    payment_method: str
    line_count: int | None  # goods lines (deposit lines not counted); None: the chain keeps none
    groups: Mapping[str, int] | None  # product group -> amount in cents; None: the chain keeps none
    receipt_kind: str = "SALE"


def receipt_of(p: Purchase) -> Receipt:
    """What a card-linked purchase tells: group amounts and their lines where the chain keeps groups."""
    groups = None if p.granularity is Granularity.RECEIPT else {g.product_group: g.amount_cents for g in p.groups}
    return Receipt(
        p.chain,
        p.store_id,
        p.event_time,
        p.total_cents,
        p.deposit_cents,
        p.adjustment_cents,
        p.payment_method,
        None if groups is None else sum(g.lines for g in p.groups),
        groups,
        p.receipt_kind.value,
    )


# --- (a) basket rows -------------------------------------------------------------------------


def _hour_start(utc_hour: datetime, offset: timedelta) -> datetime:
    """The local hour as the analytics state it: the UTC hour moved by the register's offset."""
    return (utc_hour.astimezone(UTC) + offset).replace(tzinfo=None)


def _receipt_side(r: Receipt) -> tuple[object, ...]:
    utc_hour = r.local_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    local = _hour_start(utc_hour, r.local_time.utcoffset() or timedelta())
    groups = None if r.groups is None else tuple(sorted(r.groups.items()))
    return (r.chain, r.store_id, local.date(), local.hour, utc_hour, r.total_cents, r.deposit_cents,
            r.adjustment_cents, r.payment_method, r.line_count, groups, r.receipt_kind)  # fmt: skip


def _basket_side(b: AnalyticsBasket) -> tuple[object, ...]:
    local = _hour_start(b.event_hour, timedelta(minutes=b.event_tz_offset_minutes))
    groups: dict[str, int] = defaultdict(int)
    goods = [x for x in b.lines if x.kind not in DEPOSITS]
    for x in goods:
        groups[x.product_group] += x.amount_cents + x.adjustment_cents
    return (b.chain, b.store_id, local.date(), local.hour, b.event_hour.astimezone(UTC), b.total_cents,
            b.deposit_cents, b.adjustment_cents, b.payment_method, len(goods), tuple(sorted(groups.items())),
            b.receipt_kind.value)  # fmt: skip


# The columns both sides share, in the order of the tuples above.
COLUMNS = ("chain", "store", "local_date", "local_hour", "utc_hour", "total", "deposit", "adjustment", "payment",
           "line_count", "groups", "kind")  # fmt: skip


def pinned_by_rows(
    receipts: Sequence[Receipt], rows: Iterable[AnalyticsBasket], every_combination: bool = False
) -> list[bool]:
    """For each receipt, whether some join with the basket rows leaves exactly one basket.

    Each combination of columns is one pass: the rows grouped by their values in those columns, then
    one look-up per receipt. By default only the combination of all the columns a receipt has is
    tried (see the module docstring); ``every_combination`` tries every subset of them (slow: for
    small inputs, to show the two agree).
    """
    sides = [_receipt_side(r) for r in receipts]
    baskets = {b.basket_id: _basket_side(b) for b in rows}
    by_columns: dict[tuple[int, ...], list[int]] = defaultdict(list)  # columns -> receipts to try them on
    for n, side in enumerate(sides):
        held = tuple(i for i, v in enumerate(side) if v is not None)
        for cols in _subsets(held) if every_combination else [held]:
            by_columns[cols].append(n)
    pinned = [False] * len(receipts)
    for cols, who in by_columns.items():
        index: dict[tuple[object, ...], set[str]] = defaultdict(set)
        for basket_id, row in baskets.items():
            index[tuple(row[i] for i in cols)].add(basket_id)
        for n in who:
            found = index.get(tuple(sides[n][i] for i in cols), set())
            if len(found) == 1 and _agrees(sides[n], baskets[next(iter(found))]):
                pinned[n] = True
    return pinned


def _subsets(columns: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    for size in range(1, len(columns) + 1):
        yield from combinations(columns, size)


def _agrees(receipt: tuple[object, ...], row: tuple[object, ...]) -> bool:
    return all(v is None or v == w for v, w in zip(receipt, row, strict=True))


# --- (b) cells -------------------------------------------------------------------------------

# Child family -> the parent family it splits (each basket of the parent is behind one child).
PARTITION_PARENT = {
    F.STORE_DAY: F.CHAIN_DAY,
    F.STORE_HOUR: F.STORE_DAY,
    F.BASKET_SIZE: F.CHAIN_DAY,
    F.STORE_GROUP: F.CHAIN_GROUP,
    F.STORE_SKU: F.CHAIN_SKU,
}
_PARENT_DIMS: dict[Family, Callable[[CellKey], dict[str, object]]] = {
    F.CHAIN_DAY: lambda key: {},
    F.STORE_DAY: lambda key: {"store_id": key.store_id},
    F.CHAIN_GROUP: lambda key: {"product_group": key.product_group},
    F.CHAIN_SKU: lambda key: {"product_group": key.product_group, "sku": key.sku},
}


def partition_parent(key: CellKey) -> CellKey | None:
    """The cell ``key`` is one part of, in a partition (None: ``key`` is part of none)."""
    family = PARTITION_PARENT.get(key.family)
    if family is None:
        return None
    return CellKey(family, key.chain, key.local_date, **_PARENT_DIMS[family](key))  # type: ignore[arg-type]


def remainders(cells: Iterable[Cell]) -> dict[tuple[CellKey, Family], int]:
    """(published parent, child family) -> baskets of the parent behind none of its published children."""
    published = {c.key: c for c in cells}
    out: dict[tuple[CellKey, Family], int] = {}
    for family, parent_family in PARTITION_PARENT.items():
        for key, cell in published.items():
            if key.family is parent_family:
                out[(key, family)] = cell.baskets
    for key, cell in published.items():
        parent = partition_parent(key)
        if parent is not None and (parent, key.family) in out:
            out[(parent, key.family)] -= cell.baskets
    return out


def _joins(r: Receipt) -> Iterator[tuple[Family, list[CellKey]]]:
    """The cells a receipt's basket is behind, as far as the receipt tells: (family, possible keys).

    One key: the basket is behind that cell. Several (size buckets): behind exactly one of them.
    """
    utc_hour = r.local_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    local = _hour_start(utc_hour, r.local_time.utcoffset() or timedelta())
    day: date = local.date()
    if r.receipt_kind == "REFUND":
        yield F.REFUNDS, [CellKey(F.REFUNDS, r.chain, day)]
        return
    yield F.CHAIN_DAY, [CellKey(F.CHAIN_DAY, r.chain, day)]
    yield F.STORE_DAY, [CellKey(F.STORE_DAY, r.chain, day, r.store_id)]
    yield F.STORE_HOUR, [CellKey(F.STORE_HOUR, r.chain, day, r.store_id, local.hour)]
    if r.line_count is not None:
        # Distinct SKUs: at most one per goods line, at least one when there is a line.
        counts = range(min(1, r.line_count), r.line_count + 1)
        buckets = sorted({size_bucket(n) for n in counts})
        yield F.BASKET_SIZE, [CellKey(F.BASKET_SIZE, r.chain, day, size_bucket=b) for b in buckets]
    for group in r.groups or {}:
        yield F.CHAIN_GROUP, [CellKey(F.CHAIN_GROUP, r.chain, day, product_group=group)]
        yield F.STORE_GROUP, [CellKey(F.STORE_GROUP, r.chain, day, r.store_id, product_group=group)]


def pinned_by_cells(receipts: Sequence[Receipt], cells: Iterable[Cell]) -> list[bool]:
    """For each receipt, whether a cell or a derived remainder it falls in stands for exactly one basket."""
    cells = list(cells)
    published = {c.key: c.baskets for c in cells}
    rest = remainders(cells)
    pinned = []
    for r in receipts:
        hit = False
        for family, keys in _joins(r):
            total = sum(published.get(key, 0) for key in keys)
            # Keys not published: the basket may be in the parent's remainder, counted once for all of them.
            hidden_parents = {partition_parent(key) for key in keys if key not in published}
            total += sum(rest.get((p, family), 0) for p in hidden_parents if p is not None)
            hit = hit or total == 1
        pinned.append(hit)
    return pinned


def fraction(pinned: Sequence[bool]) -> float:
    """The share of pinned receipts (0 for none given)."""
    return sum(pinned) / len(pinned) if pinned else 0.0
