"""Hypothesis strategies for checkouts (valid by construction unless asked otherwise)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from receiptflow.models import Checkout, CheckoutLine, PaymentMethod

CHAINS = ["SOKOS", "PRISMA", "K_MARKET", "SIWA", "TEBOIL", "UNKNOWN_CHAIN"]
GROUPS = ["dairy", "bread", "meat", "fish", "pet_food", "baby_products", "alcohol"]
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)

ids = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20)


@st.composite
def lines(draw: st.DrawFn) -> tuple[CheckoutLine, ...]:
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        unit = draw(st.integers(0, 50_000))
        qty = draw(st.sampled_from([1.0, 2.0, 3.0, 0.25, 1.5]))
        out.append(
            CheckoutLine(
                line_no=i + 1,
                sku=draw(st.sampled_from(["6410100000000", "6410103779194", "4000000000016"])),
                product_group=draw(st.sampled_from(GROUPS)),
                quantity=qty,
                unit_price_cents=unit,
                amount_cents=round(unit * qty),
            )
        )
    return tuple(out)


@st.composite
def checkouts(draw: st.DrawFn, chains: list[str] | None = None) -> Checkout:
    ls = draw(lines())
    offset = timezone(timedelta(minutes=draw(st.sampled_from([0, 120, 180, -300]))))
    when = NOW - timedelta(seconds=draw(st.integers(0, 20 * 365 * 24 * 3600)))
    return Checkout(
        receipt_id=draw(ids),
        chain=draw(st.sampled_from(chains or CHAINS)),
        store_id=draw(ids),
        register_id=draw(st.sampled_from(["1", "2", "17"])),
        card_id=draw(st.one_of(st.none(), st.sampled_from(["6390000000001", "2710000000002"]))),
        event_time=when.astimezone(offset),
        payment_method=draw(st.sampled_from(list(PaymentMethod))),
        total_cents=sum(line.amount_cents for line in ls) if ls else draw(st.integers(0, 100_000)),
        lines=ls,
    )
