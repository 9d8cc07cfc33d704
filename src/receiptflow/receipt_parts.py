"""The parts of a receipt: its lines and, since checkout v2, line and receipt kinds, units, adjustments, tenders.

A register's receipt is not a list of positive sales. Checkout v2 (``schemas/checkout/v2.avsc``) says
what each line is (:class:`LineKind`) and keeps money signed: the kind fixes the sign of a line's
amount and quantity (:data:`AMOUNT_SIGN`), so the signed lines and the receipt-level
:class:`Adjustment` s add up to the total. A v1 record reads as a v2 sale whose lines are all ``SALE``
in pieces (the schema defaults), so everything that worked on v1 means the same on v2.
docs/design.md ("Receipts v2") gives the semantics with examples; :mod:`receiptflow.validation` enforces them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ValidationError
from .field_values import required

E = TypeVar("E", bound=enum.StrEnum)


class PaymentMethod(enum.StrEnum):
    CARD = "CARD"
    CASH = "CASH"
    MOBILE = "MOBILE"
    GIFT_CARD = "GIFT_CARD"
    INVOICE = "INVOICE"
    OTHER = "OTHER"


class LineKind(enum.StrEnum):
    """What a receipt line is."""

    SALE = "SALE"  # goods sold; quantity 0 with amount 0 is a line voided in place
    RETURN = "RETURN"  # goods taken back: negative quantity and amount
    DEPOSIT = "DEPOSIT"  # bottle / can deposit (pantti) charged: money held, not a product
    DEPOSIT_REFUND = "DEPOSIT_REFUND"  # the reverse vending machine's slip paid back: negative
    DISCOUNT = "DISCOUNT"  # a line discount (campaign, red price): negative amount
    BENEFIT = "BENEFIT"  # a loyalty benefit (Plussa-, Bonus-style): negative amount
    VOID = "VOID"  # cancels an earlier line of the same receipt (the "-" of a +/- pair): negative


class Unit(enum.StrEnum):
    PIECE = "PIECE"
    KG = "KG"
    L = "L"


class ReceiptKind(enum.StrEnum):
    SALE = "SALE"  # may contain returns and deposit refunds, so its total may be negative
    REFUND = "REFUND"  # pays back (part of) an earlier receipt, named by original_receipt_id
    CANCEL = "CANCEL"  # aborted at the register: every line voided, total 0


class AdjustmentKind(enum.StrEnum):
    DISCOUNT = "DISCOUNT"
    BENEFIT = "BENEFIT"


# The sign a line's amount takes (+1: >= 0, -1: <= 0); quantity follows it (0 allowed only on a voided SALE).
AMOUNT_SIGN: dict[LineKind, int] = {
    LineKind.SALE: 1,
    LineKind.RETURN: -1,
    LineKind.DEPOSIT: 1,
    LineKind.DEPOSIT_REFUND: -1,
    LineKind.DISCOUNT: -1,
    LineKind.BENEFIT: -1,
    LineKind.VOID: -1,
}
# Lines that are money held for containers, not product purchases: in no product group.
DEPOSIT_KINDS = frozenset({LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND})
# Lines whose quantity says how much of a product changed hands (discounts and benefits carry none).
GOODS_KINDS = frozenset({LineKind.SALE, LineKind.RETURN, LineKind.VOID})

# Decoding looks kinds up here: cheaper than calling the enum for every line of every receipt.
LINE_KINDS: dict[str, LineKind] = {k.value: k for k in LineKind}
UNITS: dict[str, Unit] = {u.value: u for u in Unit}
RECEIPT_KINDS: dict[str, ReceiptKind] = {k.value: k for k in ReceiptKind}


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A receipt-level discount or benefit (not tied to one line); ``amount_cents`` <= 0."""

    kind: AdjustmentKind
    code: str
    amount_cents: int

    def to_avro(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "code": self.code, "amount_cents": self.amount_cents}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Adjustment:
        return cls(AdjustmentKind(d["kind"]), d["code"], d["amount_cents"])

    @classmethod
    def from_json(cls, d: Any, where: str) -> Adjustment:
        if not isinstance(d, dict):
            raise ValidationError("schema", "an adjustment must be an object", where)
        return cls(
            kind=enum_value(AdjustmentKind, required(d, "kind", str, f"{where}."), f"{where}.kind"),
            code=required(d, "code", str, f"{where}."),
            amount_cents=required(d, "amount_cents", int, f"{where}."),
        )


@dataclass(frozen=True, slots=True)
class Payment:
    """One tender of a split payment; negative when money was paid back."""

    method: PaymentMethod
    amount_cents: int

    def to_avro(self) -> dict[str, Any]:
        return {"method": self.method.value, "amount_cents": self.amount_cents}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Payment:
        return cls(PaymentMethod(d["method"]), d["amount_cents"])

    @classmethod
    def from_json(cls, d: Any, where: str) -> Payment:
        if not isinstance(d, dict):
            raise ValidationError("schema", "a payment must be an object", where)
        return cls(
            method=enum_value(PaymentMethod, required(d, "method", str, f"{where}."), f"{where}.method"),
            amount_cents=required(d, "amount_cents", int, f"{where}."),
        )


def enum_value(kind: type[E], value: str, field: str) -> E:
    """``kind(value)``, or a ValidationError naming the field and the value."""
    try:
        return kind(value)
    except ValueError as exc:
        raise ValidationError("schema", f"unknown {kind.__name__} {value!r}", field) from exc


def json_list(d: Mapping[str, Any], name: str) -> list[Any]:
    """An optional JSON list field (absent or null: empty)."""
    value = d.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError("schema", f"{name} must be a list", name)
    return value


@dataclass(frozen=True, slots=True)
class CheckoutLine:
    """One line of a receipt; v1 lines read as SALE lines in pieces."""

    line_no: int
    sku: str
    product_group: str
    quantity: float
    unit_price_cents: int
    amount_cents: int
    kind: LineKind = LineKind.SALE  # v2; the sign of quantity and amount follows it
    unit: Unit = Unit.PIECE  # v2
    ref_line_no: int | None = None  # v2: the line a discount, benefit or void applies to

    def to_avro(self) -> dict[str, Any]:
        # Spelled out: every line of every checkout a register sends passes here, and the generic
        # form costs three times as much.
        return {
            "line_no": self.line_no,
            "sku": self.sku,
            "product_group": self.product_group,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
            "amount_cents": self.amount_cents,
            "kind": self.kind.value,
            "unit": self.unit.value,
            "ref_line_no": self.ref_line_no,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> CheckoutLine:
        # Readers resolve to the newest schema, which fills the v2 fields; .get keeps plain v1 dicts working.
        kind = d.get("kind")
        unit = d.get("unit")
        return cls(
            d["line_no"],
            d["sku"],
            d["product_group"],
            d["quantity"],
            d["unit_price_cents"],
            d["amount_cents"],
            LINE_KINDS[kind] if kind else LineKind.SALE,
            UNITS[unit] if unit else Unit.PIECE,
            d.get("ref_line_no"),
        )

    @classmethod
    def from_json(cls, line: Any, where: str) -> CheckoutLine:
        if not isinstance(line, dict):
            raise ValidationError("schema", "a line must be an object", where)
        p = f"{where}."
        ref = line.get("ref_line_no")
        if ref is not None and (not isinstance(ref, int) or isinstance(ref, bool)):
            raise ValidationError("schema", "ref_line_no must be an integer or null", f"{p}ref_line_no")
        return cls(
            line_no=required(line, "line_no", int, p),
            sku=required(line, "sku", str, p),
            product_group=required(line, "product_group", str, p),
            quantity=float(required(line, "quantity", (int, float), p)),
            unit_price_cents=required(line, "unit_price_cents", int, p),
            amount_cents=required(line, "amount_cents", int, p),
            kind=enum_value(LineKind, line.get("kind") or "SALE", f"{p}kind"),
            unit=enum_value(Unit, line.get("unit") or "PIECE", f"{p}unit"),
            ref_line_no=ref,
        )
