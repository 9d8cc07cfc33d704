"""Anonymous baskets for the aggregator's tests: one chain, local date and hour each, as the router makes them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from hypothesis import strategies as st

from receiptflow.models import AnalyticsBasket, BasketLine, ReceiptKind

OFFSET = 120  # minutes east of UTC (Helsinki in winter)
FIRST_DAY = date(2026, 11, 2)
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
SKUS = ("6410100000000", "6410103779194", "4000000000016", "6408430000128")
GROUPS = ("dairy", "bread", "meat")


def basket(
    chain: str = "SOKOS",
    day: int = 0,
    hour: int = 12,
    *,
    store: str = "0001",
    skus: tuple[str, ...] = ("6410100000000",),
    total_cents: int = 500,
    refund: bool = False,
    basket_id: str | None = None,
) -> AnalyticsBasket:
    """A basket of ``chain`` sold at ``hour`` (local) on ``FIRST_DAY + day``."""
    local = datetime.combine(FIRST_DAY + timedelta(days=day), datetime.min.time()) + timedelta(hours=hour)
    lines = tuple(BasketLine(sku, GROUPS[i % len(GROUPS)], 1.0, 250, 250) for i, sku in enumerate(skus))
    return AnalyticsBasket(
        basket_id=basket_id or uuid.uuid4().hex,
        key_period="2026-11",
        chain=chain,
        store_id=f"{chain}-{store}",
        event_hour=(local - timedelta(minutes=OFFSET)).replace(tzinfo=UTC),
        event_tz_offset_minutes=OFFSET,
        payment_method="CARD",
        currency="EUR",
        total_cents=-total_cents if refund else total_cents,
        lines=lines,
        receipt_kind=ReceiptKind.REFUND if refund else ReceiptKind.SALE,
    )


def end_ms(day: int) -> int:
    """The end of the local day ``FIRST_DAY + day`` in epoch ms (local midnight after it)."""
    midnight = datetime.combine(FIRST_DAY + timedelta(days=day + 1), datetime.min.time())
    return int((midnight - timedelta(minutes=OFFSET)).replace(tzinfo=UTC).timestamp() * 1000)


@st.composite
def baskets(draw: st.DrawFn, chains: tuple[str, ...] = ("SOKOS", "PRISMA"), days: int = 3) -> AnalyticsBasket:
    """A basket of one of ``chains`` on one of ``days`` local days: few stores and SKUs, so that cells of at
    least k baskets and suppressed ones both occur. Its id is random: give a list ids of its own."""
    return basket(
        draw(st.sampled_from(chains)),
        draw(st.integers(0, days - 1)),
        draw(st.sampled_from((8, 12, 17, 23))),
        store=draw(st.sampled_from(("0001", "0002"))),
        skus=tuple(draw(st.lists(st.sampled_from(SKUS), min_size=0, max_size=3, unique=True))),
        total_cents=draw(st.integers(1, 5000)),
        refund=draw(st.integers(0, 9)) == 0,  # one in ten
    )
