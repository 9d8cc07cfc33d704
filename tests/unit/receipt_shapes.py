"""Hypothesis strategies for the receipt shapes of checkout v2, valid by construction.

Each strategy draws one shape a real register writes (a pantti line, a returned item, a refund of an
earlier receipt, a line discount, a loyalty benefit, a void in place or as a ± pair, a zero total,
weighed goods, split tender), with random products, prices and quantities around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from hypothesis import strategies as st

from receiptflow.models import Checkout, CheckoutLine, LineKind, PaymentMethod, ReceiptKind, Unit
from receiptflow.receipt_parts import Adjustment, AdjustmentKind, Payment

from .strategies import GROUPS, NOW

SKUS = ["6410100000000", "6410103779194", "4000000000016", "6415600540016"]


@st.composite
def sales(draw: st.DrawFn, n_min: int = 1) -> list[CheckoutLine]:
    """Plain positive sale lines, numbered from 1."""
    out = []
    for i in range(draw(st.integers(n_min, 6))):
        unit = draw(st.integers(1, 5_000))
        qty = float(draw(st.integers(1, 4)))
        out.append(
            CheckoutLine(
                i + 1, draw(st.sampled_from(SKUS)), draw(st.sampled_from(GROUPS)), qty, unit, unit * round(qty)
            )
        )
    return out


def _next(lines: list[CheckoutLine]) -> int:
    return max((x.line_no for x in lines), default=0) + 1


def _receipt(
    draw: st.DrawFn,
    lines: list[CheckoutLine],
    kind: ReceiptKind = ReceiptKind.SALE,
    original: str | None = None,
    adjustments: tuple[Adjustment, ...] = (),
) -> Checkout:
    total = sum(x.amount_cents for x in lines) + sum(a.amount_cents for a in adjustments)
    return Checkout(
        receipt_id=f"R-{draw(st.integers(1, 10**9))}",
        chain=draw(st.sampled_from(["PRISMA", "K_MARKET", "ALEPA"])),
        store_id="S-1",
        register_id="3",
        card_id=draw(st.sampled_from([None, "6390000000001"])),
        event_time=NOW - timedelta(minutes=draw(st.integers(1, 10_000))),
        payment_method=PaymentMethod.CARD,
        total_cents=total,
        lines=tuple(lines),
        receipt_kind=kind,
        original_receipt_id=original,
        adjustments=adjustments,
    )


@st.composite
def pantti(draw: st.DrawFn) -> Checkout:
    """Drinks with their deposit lines, and often the reverse vending machine's slip."""
    lines = draw(sales())
    bottles = draw(st.integers(1, 6))
    lines.append(
        CheckoutLine(_next(lines), "PANTTI-040", "deposit", float(bottles), 40, 40 * bottles, LineKind.DEPOSIT)
    )
    if draw(st.booleans()):
        slip = draw(st.integers(10, 3_000))
        lines.append(CheckoutLine(_next(lines), "PANTTI-SLIP", "deposit", -1.0, slip, -slip, LineKind.DEPOSIT_REFUND))
    return _receipt(draw, lines)


@st.composite
def returned_item(draw: st.DrawFn) -> Checkout:
    lines = draw(sales(n_min=0))
    unit = draw(st.integers(1, 5_000))
    n = draw(st.integers(1, 3))
    lines.append(CheckoutLine(_next(lines), SKUS[0], "dairy", float(-n), unit, -unit * n, LineKind.RETURN))
    return _receipt(draw, lines)


@st.composite
def refund(draw: st.DrawFn) -> Checkout:
    """A refund receipt of an earlier sale: its lines returned, a negative total."""
    sold = draw(sales())
    back = [x.returned(i + 1) for i, x in enumerate(sold)]
    return _receipt(draw, back, ReceiptKind.REFUND, original=f"R-{draw(st.integers(1, 10**9))}-ORIG")


def _minus_line(kind: LineKind, sku: str) -> Callable[[st.DrawFn], Checkout]:
    def build(draw: st.DrawFn) -> Checkout:
        lines = draw(sales())
        target = draw(st.sampled_from(lines))
        off = draw(st.integers(1, target.amount_cents))
        lines.append(
            CheckoutLine(_next(lines), sku, target.product_group, 1.0, 0, -off, kind, ref_line_no=target.line_no)
        )
        return _receipt(draw, lines)

    return build


line_discount = st.composite(_minus_line(LineKind.DISCOUNT, "CAMPAIGN-7"))
benefit = st.composite(_minus_line(LineKind.BENEFIT, "PLUSSA-ETU"))


@st.composite
def void_in_place(draw: st.DrawFn) -> Checkout:
    """A line voided by writing quantity 0 (and amount 0), as several registers do."""
    lines = draw(sales())
    target = draw(st.sampled_from(lines))
    lines[lines.index(target)] = replace(target, quantity=0.0, amount_cents=0)
    return _receipt(draw, lines)


@st.composite
def void_pair(draw: st.DrawFn) -> Checkout:
    lines = draw(sales())
    t = draw(st.sampled_from(lines))
    lines.append(
        CheckoutLine(
            _next(lines),
            t.sku,
            t.product_group,
            -t.quantity,
            t.unit_price_cents,
            -t.amount_cents,
            LineKind.VOID,
            ref_line_no=t.line_no,
        )
    )
    return _receipt(draw, lines)


@st.composite
def zero_total(draw: st.DrawFn) -> Checkout:
    """Bought exactly what the deposit slip paid: nothing changes hands."""
    lines = draw(sales())
    paid = sum(x.amount_cents for x in lines)
    lines.append(CheckoutLine(_next(lines), "PANTTI-SLIP", "deposit", -1.0, paid, -paid, LineKind.DEPOSIT_REFUND))
    return _receipt(draw, lines)


@st.composite
def weighed(draw: st.DrawFn) -> Checkout:
    lines = draw(sales(n_min=0))
    kg = draw(st.integers(5, 3_000)) / 1000
    per_kg = draw(st.integers(99, 4_999))
    lines.append(
        CheckoutLine(_next(lines), "2300000000000", "vegetables", kg, per_kg, round(kg * per_kg), unit=Unit.KG)
    )
    return _receipt(draw, lines)


@st.composite
def split_tender_with_adjustments(draw: st.DrawFn) -> Checkout:
    lines = draw(sales())
    paid = sum(x.amount_cents for x in lines)
    off = draw(st.integers(0, paid))
    c = _receipt(draw, lines, adjustments=(Adjustment(AdjustmentKind.BENEFIT, "PLUSSA-5", -off),))
    gift = draw(st.integers(0, c.total_cents))
    return replace(
        c, payments=(Payment(PaymentMethod.GIFT_CARD, gift), Payment(PaymentMethod.CASH, c.total_cents - gift))
    )


SHAPES = {
    "pantti": pantti(),
    "returned_item": returned_item(),
    "refund": refund(),
    "line_discount": line_discount(),
    "benefit": benefit(),
    "void_in_place": void_in_place(),
    "void_pair": void_pair(),
    "zero_total": zero_total(),
    "weighed": weighed(),
    "split_tender": split_tender_with_adjustments(),
}
any_shape = st.one_of(*SHAPES.values())
