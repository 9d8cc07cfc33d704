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

4. **No certainty about goods.** Where goods are counted under a wider cell (product groups of a
   store's or a chain's day, SKUs of a group), a child behind all but fewer than ``k`` of its
   parent's baskets is suppressed. Otherwise the cells alone would say that (nearly) everyone who
   shopped there that day took that group or SKU -- and so would tell it of a card whose chain keeps
   only receipt or group totals against it, once its receipt is known to be in the parent.

Product pairs have no additive parent (a basket holds many pairs), so only rules 1 and 2 apply to
them: a pair is published only with both its SKUs' cells.

Which child rule 3 suppresses can depend on what other relations suppressed before, so the order
is part of the rules: each *pass* applies rule 2 to the last generation, then visits every
(parent, child family) relation in the order its first child appears among the cells sorted by
key, applying rule 3 to it until it holds; passes repeat until one changes nothing. Only a relation
a suppression touched since it was last visited can change, so a pass visits only those (in the
same order): the result is that of full sweeps. Windows share no cell, so each is released on its own.

Baskets are taken once per ``basket_id``, and then ordered by what they hold, not by their id: any
order and any repetition of the same baskets, and the same baskets under other pseudonyms (another
key period, another key), give the same cells, figures included (float sums are summed in that one
order).

Pure: no I/O and no clock.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from itertools import combinations
from operator import itemgetter

from .cells import NOT_GOODS, Cell, CellKey, Family, Window, is_refund, local_start, size_bucket, window_of
from .models import AnalyticsBasket

F = Family

# A cell within its window: (family, store, hour, product group, SKU, second SKU, size bucket), None
# where the family has none -- CellKey without chain and date, in CellKey's order of fields.
Key = tuple[Family, str | None, int | None, str | None, str | None, str | None, str | None]
# (parent family, child family) where the child counts goods under a wider cell: rule 4.
_GOODS_UNDER = frozenset(
    {
        (F.CHAIN_DAY, F.CHAIN_GROUP),
        (F.CHAIN_GROUP, F.CHAIN_SKU),
        (F.STORE_DAY, F.STORE_GROUP),
        (F.STORE_GROUP, F.STORE_SKU),
    }
)
# A CellKey's fields as a tuple: what the published cells are sorted by.
_Order = tuple[Family, str, date, str | None, int | None, str | None, str | None, str | None, str | None]
_DAY: Key = (F.CHAIN_DAY, None, None, None, None, None, None)
_REFUNDS: Key = (F.REFUNDS, None, None, None, None, None, None)

# (parent family, child family) whose children split the parent's baskets: each basket of the
# parent is behind exactly one child, so what the suppressed children hold is the sum of their counts.
_PARTITIONS = frozenset(
    {
        (F.CHAIN_DAY, F.STORE_DAY),
        (F.STORE_DAY, F.STORE_HOUR),
        (F.CHAIN_DAY, F.BASKET_SIZE),
        (F.CHAIN_GROUP, F.STORE_GROUP),
        (F.CHAIN_SKU, F.STORE_SKU),
    }
)


class _Acc:
    """One candidate cell: its distinct baskets (window indices, ascending) and its figures."""

    __slots__ = ("amount_cents", "lines", "members", "quantity")

    def __init__(self) -> None:
        self.members: list[int] = []
        self.lines = 0
        self.quantity = 0.0
        self.amount_cents = 0

    def add(self, i: int, lines: int, quantity: float, amount_cents: int) -> None:
        if not self.members or self.members[-1] != i:
            self.members.append(i)
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


def accumulate(baskets: list[AnalyticsBasket]) -> tuple[dict[Key, _Acc], Counter[tuple[str, str]]]:
    """The candidate cells of one window's baskets (in id order), in the order they first appear.

    Product pairs only count baskets (a basket holds each of its pairs once): they come apart.
    """
    acc: dict[Key, _Acc] = defaultdict(_Acc)
    pairs: Counter[tuple[str, str]] = Counter()
    for i, b in enumerate(baskets):
        whole = (i, len(b.lines), sum(line.quantity for line in b.lines), b.total_cents)
        if is_refund(b):
            acc[_REFUNDS].add(*whole)
            continue
        store = b.store_id
        goods = [line for line in b.lines if line.kind not in NOT_GOODS]
        skus = sorted({line.sku for line in goods})
        acc[_DAY].add(*whole)
        acc[(F.STORE_DAY, store, None, None, None, None, None)].add(*whole)
        acc[(F.STORE_HOUR, store, local_start(b).hour, None, None, None, None)].add(*whole)
        acc[(F.BASKET_SIZE, None, None, None, None, None, size_bucket(len(skus)))].add(*whole)
        for line in goods:
            g, s, q, net = line.product_group, line.sku, line.quantity, line.amount_cents + line.adjustment_cents
            acc[(F.CHAIN_GROUP, None, None, g, None, None, None)].add(i, 1, q, net)
            acc[(F.CHAIN_SKU, None, None, g, s, None, None)].add(i, 1, q, net)
            acc[(F.STORE_GROUP, store, None, g, None, None, None)].add(i, 1, q, net)
            acc[(F.STORE_SKU, store, None, g, s, None, None)].add(i, 1, q, net)
        pairs.update(combinations(skus, 2))
    return acc, pairs


def parents(key: Key) -> tuple[Key, ...]:
    """The cells ``key`` must not be published without (product pairs: see :func:`_pairs`)."""
    f, store, _, group, sku, _, _ = key
    if f in (F.STORE_DAY, F.BASKET_SIZE, F.CHAIN_GROUP):
        return (_DAY,)
    if f is F.STORE_HOUR:
        return ((F.STORE_DAY, store, None, None, None, None, None),)
    if f is F.CHAIN_SKU:
        return ((F.CHAIN_GROUP, None, None, group, None, None, None),)
    if f is F.STORE_GROUP:
        return (F.STORE_DAY, store, None, None, None, None, None), (F.CHAIN_GROUP, None, None, group, None, None, None)
    if f is F.STORE_SKU:
        return (F.STORE_GROUP, store, None, group, None, None, None), (F.CHAIN_SKU, None, None, group, sku, None, None)
    return ()


class _Relation:
    """A published parent's children of one family, and what they hold beyond the published ones."""

    __slots__ = ("cover", "kids", "parent", "rest", "shown_from")

    def __init__(self, parent: int, partition: bool) -> None:
        self.parent = parent
        self.kids: list[int] = []  # sorted by (baskets, key) once complete: rule 3 suppresses in that order
        self.shown_from = 0  # kids before this index are all suppressed
        self.rest = 0  # baskets behind some kid and no published kid
        # Not a partition: basket -> published kids it is behind (a basket joins `rest` at 0).
        self.cover: dict[int, int] | None = None if partition else {}


class _Suppression:
    """Rules 1 to 3 on one window's cells (by index, in order of first appearance)."""

    def __init__(self, keys: list[Key], acc: dict[Key, _Acc], k: int) -> None:
        self.k = k
        self.members = [acc[key].members for key in keys]
        index = {key: n for n, key in enumerate(keys)}
        self.children: list[list[int]] = [[] for _ in keys]  # for rule 2
        self.kid_of: list[list[int]] = [[] for _ in keys]  # relations a cell is a child in
        self.relations: list[_Relation] = []
        found: dict[tuple[int, Family], int] = {}
        for n, key in enumerate(keys):
            for p in map(index.__getitem__, parents(key)):
                self.children[p].append(n)
                r = found.get((p, key[0]))
                if r is None:
                    r = found[(p, key[0])] = len(self.relations)
                    self.relations.append(_Relation(p, (keys[p][0], key[0]) in _PARTITIONS))
                self.relations[r].kids.append(n)
                self.kid_of[n].append(r)
        for rel in self.relations:
            rel.kids.sort(key=lambda c: (len(self.members[c]), keys[c]))
            if rel.cover is not None:
                rel.cover = Counter(b for c in rel.kids for b in self.members[c])
        # Rule 4: the goods children behind all but fewer than k of their parent's baskets.
        self.certain = [
            n
            for n, key in enumerate(keys)
            for p in map(index.__getitem__, parents(key))
            if (keys[p][0], key[0]) in _GOODS_UNDER and len(self.members[p]) - len(self.members[n]) < k
        ]
        self.hidden = bytearray(len(keys))
        self.fresh: list[int] = []  # suppressed since rule 2 last ran
        self.queue: list[int] = []  # relations to visit in this pass (a heap)
        self.queued: set[int] = set()
        self.later: set[int] = set()  # relations to visit in the next pass
        self.at = -1  # the relation being visited

    def hide(self, c: int) -> None:
        self.hidden[c] = 1
        self.fresh.append(c)
        for r in self.kid_of[c]:
            rel = self.relations[r]
            if rel.cover is None:
                rel.rest += len(self.members[c])
            else:
                cover = rel.cover
                for b in self.members[c]:
                    cover[b] -= 1
                    if not cover[b]:
                        rel.rest += 1
            if r > self.at and r not in self.queued:
                heapq.heappush(self.queue, r)
                self.queued.add(r)
            elif r < self.at:
                self.later.add(r)

    def run(self) -> bytearray:
        """Suppress until nothing changes; returns the suppressed cells (1 at a suppressed index)."""
        self.queue = list(range(len(self.relations)))  # the first pass visits every relation
        self.queued = set(self.queue)
        for c, members in enumerate(self.members):
            if len(members) < self.k:
                self.hide(c)
        for c in self.certain:
            if not self.hidden[c]:
                self.hide(c)
        while self.queue or self.fresh:
            while self.fresh:  # rule 2 to the last generation: the start of a pass
                for child in self.children[self.fresh.pop()]:
                    if not self.hidden[child]:
                        self.hide(child)
            while self.queue:
                self.at = heapq.heappop(self.queue)
                self.queued.discard(self.at)
                self.visit(self.relations[self.at])
            self.at = -1
            self.queue = sorted(self.later)  # a sorted list is a heap
            self.queued, self.later = set(self.queue), set()
        return self.hidden

    def visit(self, rel: _Relation) -> None:
        """Rule 3 on one relation, until it holds."""
        if self.hidden[rel.parent]:
            return
        kids = rel.kids
        while 0 < rel.rest < self.k:
            while rel.shown_from < len(kids) and self.hidden[kids[rel.shown_from]]:
                rel.shown_from += 1
            if rel.shown_from == len(kids):
                return
            self.hide(kids[rel.shown_from])


def _pairs(
    keys: list[Key], hidden: bytearray, pairs: Counter[tuple[str, str]], k: int
) -> list[tuple[Key, int, int, float, int]]:
    """The publishable product pairs: k baskets and every chain_sku cell of both SKUs published."""
    shown: dict[str | None, bool] = {}
    for n, key in enumerate(keys):
        if key[0] is F.CHAIN_SKU:
            shown[key[4]] = shown.get(key[4], True) and not hidden[n]
    return [
        ((F.SKU_PAIR, None, None, None, a, b, None), count, 0, 0.0, 0)
        for (a, b), count in pairs.items()
        if count >= k and shown[a] and shown[b]
    ]


def _content(b: AnalyticsBasket) -> str:
    """What a basket holds, without its pseudonym: the order baskets are counted in."""
    return repr(replace(b, basket_id="", key_period=""))


def _window_cells(w: Window, baskets: list[AnalyticsBasket], k: int) -> list[tuple[_Order, Cell]]:
    """The publishable cells of one window, each with its key's fields (to sort by)."""
    acc, pairs = accumulate(sorted(baskets, key=_content))
    keys = sorted(acc)  # not in order of appearance: that would make the pseudonyms matter
    hidden = _Suppression(keys, acc, k).run()
    rows = [
        (key, len(a.members), a.lines, round(a.quantity, 3), a.amount_cents)
        for n, key in enumerate(keys)
        if not hidden[n]
        for a in (acc[key],)
    ]
    rows += _pairs(keys, hidden, pairs, k)
    out = []
    for (f, store, hour, group, sku, sku_b, size), behind, lines, quantity, cents in rows:
        order = (f, w.chain, w.local_date, store, hour, group, sku, sku_b, size)
        out.append((order, Cell(CellKey(*order), behind, lines, quantity, cents)))
    return out


def release(baskets: Iterable[AnalyticsBasket], k: int) -> Release:
    """The publishable cells of ``baskets`` (any windows, any order, repeats allowed)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    distinct = distinct_baskets(baskets)
    windows: dict[Window, list[AnalyticsBasket]] = defaultdict(list)
    for b in distinct:
        windows[window_of(b)].append(b)
    rows = [row for w, window_baskets in windows.items() for row in _window_cells(w, window_baskets, k)]
    # Sorted as CellKey sorts (its fields in order), without CellKey's slower comparisons.
    rows.sort(key=itemgetter(0))
    return Release(tuple(cell for _, cell in rows), window_totals(distinct))


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
