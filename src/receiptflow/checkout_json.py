"""The JSON Lines shape of checkouts and consent changes (README, "JSON Lines"): reading and writing it.

The same field names as the Avro contract, event times as ISO-8601 strings with their UTC offset,
money as integer cents; the v2 fields are optional, so a v1 document reads as a plain sale. Reading
raises :class:`~receiptflow.errors.ValidationError` naming the field that is wrong, so an ingest run
can say which line of which file to fix.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import ValidationError
from .field_values import parse_time, required
from .models import Checkout, ConsentChange
from .receipt_parts import (
    Adjustment,
    AdjustmentKind,
    CheckoutLine,
    LineKind,
    Payment,
    PaymentMethod,
    ReceiptKind,
    Unit,
)

E = TypeVar("E", bound=enum.StrEnum)


def checkout_to_json(c: Checkout) -> dict[str, Any]:
    """``c`` as a JSON document (the Avro fields, the event time as ISO-8601 with its offset)."""
    d = c.to_avro()
    d.pop("event_tz_offset_minutes")
    d["event_time"] = c.event_time.isoformat()
    return d


def checkout_from_json(d: Any) -> Checkout:
    """Build a checkout from the documented JSON shape; raises :class:`ValidationError` naming the field."""
    if not isinstance(d, dict):
        raise ValidationError("schema", "a checkout must be a JSON object")
    lines_raw = d.get("lines", [])
    if not isinstance(lines_raw, list):
        raise ValidationError("schema", "lines must be a list", "lines")
    lines = [line_from_json(line, f"lines[{i}]") for i, line in enumerate(lines_raw)]
    original = d.get("original_receipt_id")
    if original is not None and not isinstance(original, str):
        raise ValidationError("schema", "original_receipt_id must be a string or null", "original_receipt_id")
    card = d.get("card_id")
    if card is not None and not isinstance(card, str):
        raise ValidationError("schema", "card_id must be a string or null", "card_id")
    method = required(d, "payment_method", str)
    try:
        payment = PaymentMethod(method)
    except ValueError as exc:
        raise ValidationError("schema", f"unknown payment method {method!r}", "payment_method") from exc
    return Checkout(
        receipt_id=required(d, "receipt_id", str),
        chain=required(d, "chain", str),
        store_id=required(d, "store_id", str),
        register_id=required(d, "register_id", str),
        card_id=card,
        event_time=parse_time(required(d, "event_time", str), "event_time"),
        payment_method=payment,
        currency=required(d, "currency", str) if d.get("currency") is not None else "EUR",
        total_cents=required(d, "total_cents", int),
        lines=tuple(lines),
        receipt_kind=enum_value(ReceiptKind, d.get("receipt_kind") or "SALE", "receipt_kind"),
        original_receipt_id=original,
        adjustments=tuple(
            adjustment_from_json(a, f"adjustments[{i}]") for i, a in enumerate(json_list(d, "adjustments"))
        ),
        payments=tuple(payment_from_json(p, f"payments[{i}]") for i, p in enumerate(json_list(d, "payments"))),
    )


def consent_change_from_json(d: Any) -> ConsentChange:
    """Build a consent change from its JSON shape; raises :class:`ValidationError` naming the field."""
    if not isinstance(d, dict):
        raise ValidationError("schema", "a consent change must be a JSON object")
    return ConsentChange(
        card_id=required(d, "card_id", str),
        event_time=parse_time(required(d, "event_time", str), "event_time"),
        product_data_marketing=required(d, "product_data_marketing", bool),
        electronic_marketing=required(d, "electronic_marketing", bool),
        source=required(d, "source", str),
        channel=_optional_text(d, "channel"),
        text_version=_optional_text(d, "text_version"),
    )


def _optional_text(d: dict[str, Any], key: str) -> str:
    value = d.get(key, "")
    if not isinstance(value, str):
        raise ValidationError("schema", f"{key} must be a string", key)
    return value


def line_from_json(line: Any, where: str) -> CheckoutLine:
    """One receipt line; ``where`` (``lines[3]``) prefixes the field named in an error."""
    if not isinstance(line, dict):
        raise ValidationError("schema", "a line must be an object", where)
    p = f"{where}."
    ref = line.get("ref_line_no")
    if ref is not None and (not isinstance(ref, int) or isinstance(ref, bool)):
        raise ValidationError("schema", "ref_line_no must be an integer or null", f"{p}ref_line_no")
    return CheckoutLine(
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


def adjustment_from_json(d: Any, where: str) -> Adjustment:
    if not isinstance(d, dict):
        raise ValidationError("schema", "an adjustment must be an object", where)
    return Adjustment(
        kind=enum_value(AdjustmentKind, required(d, "kind", str, f"{where}."), f"{where}.kind"),
        code=required(d, "code", str, f"{where}."),
        amount_cents=required(d, "amount_cents", int, f"{where}."),
    )


def payment_from_json(d: Any, where: str) -> Payment:
    if not isinstance(d, dict):
        raise ValidationError("schema", "a payment must be an object", where)
    return Payment(
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
