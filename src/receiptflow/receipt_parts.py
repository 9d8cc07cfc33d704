"""The parts of a receipt: its lines and, since checkout v2, line and receipt kinds, units, adjustments, tenders.

A register's receipt is not a list of positive sales. Checkout v2 (``schemas/checkout/v2.avsc``) says
what each line is (:class:`LineKind`) and keeps money signed: the kind fixes the sign of a line's
amount and quantity (:data:`AMOUNT_SIGN`), so the signed lines and the receipt-level
:class:`Adjustment` s add up to the total. A v1 record reads as a v2 sale whose lines are all ``SALE``
in pieces (the schema defaults), so everything that worked on v1 means the same on v2.
docs/design.md ("Receipts v2") gives the semantics with examples; :mod:`receiptflow.validation` enforces them
and :mod:`receiptflow.checkout_json` reads them from JSON.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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


def line_values(d: Mapping[str, Any]) -> tuple[str, str, float, int, int, LineKind, Unit]:
    """What a checkout line and an analytics basket line read alike from their Avro dicts, in field order:
    SKU, product group, quantity, unit price, amount, kind and unit.

    Readers resolve to the newest schema, which fills the v2 fields; ``.get`` keeps plain v1 dicts
    working (a SALE line in pieces).
    """
    kind = d.get("kind")
    unit = d.get("unit")
    return (
        d["sku"],
        d["product_group"],
        d["quantity"],
        d["unit_price_cents"],
        d["amount_cents"],
        LINE_KINDS[kind] if kind else LineKind.SALE,
        UNITS[unit] if unit else Unit.PIECE,
    )


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

    def returned(self, line_no: int) -> CheckoutLine:
        """The RETURN line, numbered ``line_no`` on a later receipt, that gives this sold line back whole.

        Quantity and amount change sign; SKU, group, unit price and unit stay (weighed goods go back in
        kg); ``ref_line_no`` names this line on the receipt it was sold on.
        """
        return CheckoutLine(
            line_no,
            self.sku,
            self.product_group,
            -self.quantity,
            self.unit_price_cents,
            -self.amount_cents,
            LineKind.RETURN,
            self.unit,
            self.line_no,
        )

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> CheckoutLine:
        return cls(d["line_no"], *line_values(d), d.get("ref_line_no"))
