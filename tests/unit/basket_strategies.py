"""Hypothesis strategies for analytics baskets, drawn from small alphabets so that cells collide.

Few chains, stores, days, hours, groups and SKUs: the candidate cells of a few dozen baskets then
hold 1 to ``k`` baskets often enough for every suppression rule to fire. Quantities include
fractions that floats cannot hold exactly, so the order of float sums is exercised too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from receiptflow.models import AnalyticsBasket, BasketLine, LineKind, ReceiptKind, Unit

CHAINS = ["PRISMA", "SIWA"]
STORES = ["S-1", "S-2", "S-3"]
GROUPS = ["dairy", "bread", "meat"]
SKUS = ["A", "B", "C", "D", "E"]
# A UTC day of hours; with the offsets below they fall on two or three local dates.
DAY = datetime(2026, 3, 28, 20, tzinfo=UTC)
OFFSETS = [120, 180, 0]
KINDS = [LineKind.SALE] * 6 + [
    LineKind.RETURN,
    LineKind.DEPOSIT,
    LineKind.DEPOSIT_REFUND,
    LineKind.DISCOUNT,
    LineKind.BENEFIT,
    LineKind.VOID,
]


@st.composite
def basket_lines(draw: st.DrawFn) -> tuple[BasketLine, ...]:
    out = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(KINDS))
        deposit = kind in (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND)
        out.append(
            BasketLine(
                "PANTTI" if deposit else draw(st.sampled_from(SKUS)),
                "deposit" if deposit else draw(st.sampled_from(GROUPS)),
                draw(st.sampled_from([1.0, 2.0, 0.1, 0.347, 1.25, -1.0, 0.0])),
                draw(st.integers(0, 900)),
                draw(st.integers(-900, 900)),
                kind,
                draw(st.sampled_from(list(Unit))),
                draw(st.integers(-50, 0)),
            )
        )
    return tuple(out)


@st.composite
def baskets(draw: st.DrawFn, ids: int = 10**6) -> AnalyticsBasket:
    """One basket; ``ids`` bounds the id space (a small one draws the same id for different records)."""
    lines = draw(basket_lines())
    hour = DAY + timedelta(hours=draw(st.integers(0, 30)))
    return AnalyticsBasket(
        basket_id=f"{draw(st.integers(0, ids)):032x}",
        key_period=f"{hour.year:04d}-{hour.month:02d}",
        chain=draw(st.sampled_from(CHAINS)),
        store_id=draw(st.sampled_from(STORES)),
        event_hour=hour,
        event_tz_offset_minutes=draw(st.sampled_from(OFFSETS)),
        payment_method=draw(st.sampled_from(["CARD", "CASH"])),
        currency="EUR",
        total_cents=sum(x.amount_cents + x.adjustment_cents for x in lines),
        lines=lines,
        receipt_kind=draw(st.sampled_from([ReceiptKind.SALE] * 9 + [ReceiptKind.REFUND])),
        deposit_cents=sum(x.amount_cents for x in lines if x.kind in (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND)),
        adjustment_cents=sum(x.adjustment_cents for x in lines),
    )


def basket_lists(max_size: int = 60) -> st.SearchStrategy[list[AnalyticsBasket]]:
    return st.lists(baskets(), max_size=max_size)
