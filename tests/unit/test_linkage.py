"""The linkage attack (tests/linkage.py) on simulated traffic: old basket rows give cards away, cells do not.

20,000 simulated deliveries over three days in 30 stores of every chain are routed as the router
routes them. The attacker holds the card-linked purchases of the chains whose policy keeps less
than every line at the time of the sale; the attack joins them to (a) one basket row per checkout,
as the analytics were published before, and (b) the cells of ``release(baskets, 10)``. ``pytest -s``
prints both figures.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

from receiptflow.cells import Cell, CellKey, Family
from receiptflow.suppression import release

from ..linkage import Receipt, fraction, pinned_by_cells, pinned_by_rows, receipt_of, remainders
from .sales_data import Sales, simulated_sales

F = Family
EEST = timezone(timedelta(hours=3))


def attacker_receipts(sales: Sales) -> list[Receipt]:
    """The card-linked purchases of chains below ITEM at the time of the sale, each receipt once."""
    seen: set[str] = set()
    out = []
    for c, routed in sales.routed:
        p = routed.customer
        if p.card_id is not None and sales.below_item(c) and p.receipt_id not in seen:
            seen.add(p.receipt_id)
            out.append(receipt_of(p))
    return out


def test_old_basket_rows_pin_most_card_receipts_and_cells_pin_none() -> None:
    sales = simulated_sales(7, 20_000)
    receipts = attacker_receipts(sales)
    # Both kinds of chain below ITEM (groups kept, totals only), sales and refunds, are among the receipts.
    assert {(r.groups is not None, r.receipt_kind) for r in receipts} >= {
        (True, "SALE"),
        (False, "SALE"),
        (True, "REFUND"),
        (False, "REFUND"),
    }
    assert len(receipts) > 10_000

    started = time.perf_counter()
    old = fraction(pinned_by_rows(receipts, sales.baskets))
    rows_seconds = time.perf_counter() - started
    cells = release(sales.baskets, 10).cells
    started = time.perf_counter()
    new = fraction(pinned_by_cells(receipts, cells))
    cells_seconds = time.perf_counter() - started
    print(
        f"\nlinkage attack on {len(receipts)} card-linked receipts of chains below ITEM:"
        f"\n  (a) old basket rows ({len(sales.baskets)} rows): {old:.1%} pinned to one basket ({rows_seconds:.1f} s)"
        f"\n  (b) cells of release(k=10) ({len(cells)} cells): {new:.2%} pinned ({cells_seconds:.1f} s)"
    )
    assert old > 0.5
    assert new <= 0.01


def test_the_finest_join_pins_what_every_combination_of_columns_pins() -> None:
    sales = simulated_sales(3, 600, days=1, stores=6, customers=60)
    receipts = attacker_receipts(sales)
    finest = pinned_by_rows(receipts, sales.baskets)
    assert 0 < sum(finest) < len(receipts)  # some pinned, some not: the comparison means something
    assert pinned_by_rows(receipts, sales.baskets, every_combination=True) == finest


def test_the_attack_on_cells_pins_a_receipt_alone_in_a_published_cell() -> None:
    """Sparse traffic (1,000 deliveries in 30 stores over three days) released with k = 1 and k = 10.

    With k = 1 every cell is published, one-basket cells included, and the attack must find the
    receipts alone in theirs; with k = 10 none is left.
    """
    sales = simulated_sales(7, 1_000)
    receipts = attacker_receipts(sales)
    assert fraction(pinned_by_cells(receipts, release(sales.baskets, 1).cells)) > 0.3
    assert fraction(pinned_by_cells(receipts, release(sales.baskets, 10).cells)) == 0.0


def test_a_parent_minus_its_published_children_is_a_remainder() -> None:
    day = date(2026, 5, 4)
    store = CellKey(F.STORE_DAY, "SIWA", day, "S-1")
    nine = CellKey(F.STORE_HOUR, "SIWA", day, "S-1", 9)
    cells = [Cell(store, 11, 11, 11.0, 1100), Cell(nine, 10, 10, 10.0, 1000)]
    assert remainders(cells) == {(store, F.STORE_HOUR): 1}

    def at(hour: int) -> Receipt:
        return Receipt("SIWA", "S-1", datetime(2026, 5, 4, hour, 20, tzinfo=EEST), 100, 0, 0, "CARD", None, None)

    # The sale at 10 is the only basket of S-1 outside 9 o'clock: pinned. The one at 9 is one of ten.
    assert pinned_by_cells([at(10), at(9)], cells) == [True, False]
