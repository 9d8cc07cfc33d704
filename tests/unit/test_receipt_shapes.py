"""Validation of the receipt shapes of checkout v2: each real shape is accepted, garbage keeps its reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.errors import ValidationError
from receiptflow.models import Checkout, CheckoutLine, LineKind, PaymentMethod, ReceiptKind, Unit
from receiptflow.receipt_parts import Adjustment, AdjustmentKind, Payment
from receiptflow.validation import validate

from .receipt_shapes import SHAPES
from .strategies import NOW

K = LineKind
MILK = CheckoutLine(1, "6410405082657", "dairy", 2.0, 129, 258)
COLA = CheckoutLine(2, "6415600540016", "soft_drinks", 2.0, 199, 398)


def _receipt(*lines: CheckoutLine, kind: ReceiptKind = ReceiptKind.SALE, **extra: object) -> Checkout:
    adjustments: tuple[Adjustment, ...] = extra.pop("adjustments", ())  # type: ignore[assignment]
    total = sum(x.amount_cents for x in lines) + sum(a.amount_cents for a in adjustments)
    c = Checkout(
        "R-1",
        "PRISMA",
        "PRISMA-0042",
        "7",
        "6390010000012345",
        NOW - timedelta(hours=1),
        PaymentMethod.CARD,
        total,
        lines,
        receipt_kind=kind,
        adjustments=adjustments,
    )
    return replace(c, **extra)  # type: ignore[arg-type]


# The shapes the issue lists, written as a register writes them.
EXAMPLES = {
    "pantti line": _receipt(
        MILK, COLA, CheckoutLine(3, "PANTTI-040", "deposit", 2.0, 40, 80, K.DEPOSIT, ref_line_no=2)
    ),
    "deposit slip": _receipt(MILK, CheckoutLine(2, "PANTTI-SLIP", "deposit", -1.0, 160, -160, K.DEPOSIT_REFUND)),
    "slip above the purchase": _receipt(
        CheckoutLine(1, "PANTTI-SLIP", "deposit", -1.0, 500, -500, K.DEPOSIT_REFUND), replace(MILK, line_no=2)
    ),
    "returned item": _receipt(MILK, CheckoutLine(2, "6415712502059", "meat", -1.0, 920, -920, K.RETURN)),
    "refund receipt": _receipt(
        CheckoutLine(1, "6415712502059", "meat", -1.0, 920, -920, K.RETURN, ref_line_no=3),
        kind=ReceiptKind.REFUND,
        original_receipt_id="S-PRISMA-0042-7-000123",
    ),
    "line discount": _receipt(MILK, CheckoutLine(2, "CAMPAIGN-17", "dairy", 1.0, 0, -58, K.DISCOUNT, ref_line_no=1)),
    "benefit line": _receipt(MILK, CheckoutLine(2, "PLUSSA-ETU", "dairy", 1.0, 0, -13, K.BENEFIT, ref_line_no=1)),
    "void as quantity 0": _receipt(MILK, replace(COLA, quantity=0.0, amount_cents=0)),
    "void as a pair": _receipt(
        MILK, COLA, CheckoutLine(3, COLA.sku, "soft_drinks", -2.0, 199, -398, K.VOID, ref_line_no=2)
    ),
    "zero total": _receipt(MILK, CheckoutLine(2, "PANTTI-SLIP", "deposit", -1.0, 258, -258, K.DEPOSIT_REFUND)),
    "cancelled receipt": _receipt(
        MILK, CheckoutLine(2, MILK.sku, "dairy", -2.0, 129, -258, K.VOID), kind=ReceiptKind.CANCEL
    ),
    "weighed goods": _receipt(CheckoutLine(1, "2300000000000", "vegetables", 0.532, 299, 159, unit=Unit.KG)),
    "receipt benefit and split tender": _receipt(
        MILK,
        COLA,
        adjustments=(
            Adjustment(AdjustmentKind.BENEFIT, "PLUSSA-5", -100),
            Adjustment(AdjustmentKind.DISCOUNT, "W", -6),
        ),
        payments=(Payment(PaymentMethod.GIFT_CARD, 500), Payment(PaymentMethod.CASH, 50)),
    ),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_each_real_receipt_shape_is_accepted(name: str) -> None:
    validate(EXAMPLES[name], NOW)


@pytest.mark.parametrize("shape", list(SHAPES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_drawn_receipt_of_each_shape_is_accepted(shape: str, data: st.DataObject) -> None:
    validate(data.draw(SHAPES[shape]), NOW)


def _reason(c: Checkout) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as info:
        validate(c, NOW)
    return info.value.reason, info.value.field


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (CheckoutLine(2, "X", "dairy", 1.0, 100, -100), "negative_amount"),  # a SALE line with a negative amount
        (CheckoutLine(2, "X", "dairy", -1.0, 100, -100), "negative_amount"),
        (CheckoutLine(2, "X", "dairy", 1.0, -100, 100), "negative_amount"),  # negative unit price, any kind
        (CheckoutLine(2, "X", "dairy", 1.0, 100, 100, K.RETURN), "wrong_sign"),  # a return that charges
        (CheckoutLine(2, "X", "dairy", 1.0, 100, -100, K.RETURN), "wrong_sign"),  # quantity of the wrong sign
        (CheckoutLine(2, "X", "dairy", 1.0, 0, 50, K.DISCOUNT), "wrong_sign"),
        (CheckoutLine(2, "X", "deposit", -1.0, 40, -40, K.DEPOSIT), "wrong_sign"),
        (CheckoutLine(2, "X", "deposit", 1.0, 40, 40, K.DEPOSIT_REFUND), "wrong_sign"),
        (CheckoutLine(2, "X", "dairy", 1.0, 100, 100, K.VOID), "wrong_sign"),
        (CheckoutLine(2, "X", "dairy", 0.0, 100, 100), "absurd_amount"),  # quantity 0 that still charges
        (CheckoutLine(2, "X", "dairy", -200_000.0, 1, -200_000, K.RETURN), "absurd_amount"),
        (CheckoutLine(2, "X", "dairy", -1.0, 1, -10_000_001, K.RETURN), "absurd_amount"),
    ],
)
def test_garbage_lines_keep_a_reason(line: CheckoutLine, reason: str) -> None:
    assert _reason(_receipt(MILK, line))[0] == reason


def test_a_refund_names_its_original_receipt() -> None:
    refund = EXAMPLES["refund receipt"]
    assert _reason(replace(refund, original_receipt_id=None)) == ("missing_original", "original_receipt_id")
    assert _reason(replace(refund, original_receipt_id=" ")) == ("missing_id", "original_receipt_id")
    assert _reason(replace(refund, original_receipt_id=refund.receipt_id)) == (
        "missing_original",
        "original_receipt_id",
    )
    # A refund pays back: a positive total is not a refund.
    assert _reason(replace(refund, total_cents=920, lines=())) == ("wrong_sign", "total_cents")
    # Only a refund names an original receipt.
    assert _reason(replace(EXAMPLES["returned item"], original_receipt_id="X-1")) == ("schema", "original_receipt_id")


def test_totals_payments_and_adjustments_must_add_up() -> None:
    assert _reason(replace(EXAMPLES["deposit slip"], total_cents=258)) == ("totals_mismatch", "total_cents")
    split = EXAMPLES["receipt benefit and split tender"]
    assert _reason(replace(split, payments=(Payment(PaymentMethod.CARD, 1),))) == ("totals_mismatch", "payments")
    bad = (Adjustment(AdjustmentKind.DISCOUNT, "W", 100),)
    assert _reason(replace(split, adjustments=bad, total_cents=756, payments=())) == ("wrong_sign", "adjustments[0]")
    cancel = EXAMPLES["cancelled receipt"]
    assert _reason(replace(cancel, lines=cancel.lines[:1], total_cents=258)) == ("totals_mismatch", "total_cents")


def test_a_receipt_without_lines_keeps_the_v1_rules() -> None:
    assert _reason(_receipt(total_cents=-5)) == ("negative_amount", "total_cents")
    validate(_receipt(total_cents=0), NOW)
    validate(_receipt(kind=ReceiptKind.REFUND, original_receipt_id="R-0", total_cents=-500), NOW)
