"""Checkout v2 in the codec and the models: v1 data reads as a plain sale; v2 shapes round-trip."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime
from pathlib import Path

import fastavro

from receiptflow.checkout_json import checkout_from_json, checkout_to_json
from receiptflow.codec import Codec
from receiptflow.models import Checkout, CheckoutLine, LineKind, Purchase, ReceiptKind, Unit
from receiptflow.receipt_parts import AdjustmentKind, PaymentMethod
from receiptflow.validation import validate

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CODEC = Codec()


def _framed(schema_id: int, subject_file: str, record: dict[str, object]) -> bytes:
    """``record`` written with an older schema version, framed as a producer of that version framed it."""
    schema = fastavro.parse_schema(json.loads((SCHEMAS / subject_file).read_text()))
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def test_a_v1_checkout_reads_as_a_v2_sale_of_pieces() -> None:
    for sample in json.loads((SCHEMAS / "checkout" / "v1.samples.json").read_text()):
        decoded = CODEC.decode(_framed(1, "checkout/v1.avsc", sample), expect="checkout")
        assert decoded.writer_version == 1
        c = Checkout.from_avro(decoded.value)
        assert c.receipt_kind is ReceiptKind.SALE
        assert c.original_receipt_id is None and c.adjustments == () and c.payments == ()
        assert [(line.kind, line.unit, line.ref_line_no) for line in c.lines] == [
            (LineKind.SALE, Unit.PIECE, None)
        ] * len(sample["lines"])
        assert [line.amount_cents for line in c.lines] == [x["amount_cents"] for x in sample["lines"]]
        assert c.total_cents == sample["total_cents"]


def test_a_v1_purchase_reads_as_a_v2_sale() -> None:
    for sample in json.loads((SCHEMAS / "purchase" / "v1.samples.json").read_text()):
        p = Purchase.from_avro(CODEC.decode(_framed(3, "purchase/v1.avsc", sample), expect="purchase").value)
        assert (p.receipt_kind, p.original_receipt_id, p.deposit_cents, p.adjustment_cents) == (
            ReceiptKind.SALE,
            None,
            0,
            0,
        )
        assert all(i.kind is LineKind.SALE for i in p.items)


def test_v2_samples_round_trip_through_the_model_and_json() -> None:
    for sample in json.loads((SCHEMAS / "checkout" / "v2.samples.json").read_text()):
        data = CODEC.encode("checkout", sample)
        c = Checkout.from_avro(CODEC.decode(data).value)
        assert CODEC.encode("checkout", c.to_avro()) == data
        assert checkout_from_json(json.loads(json.dumps(checkout_to_json(c)))) == c


def test_v2_fields_are_read_into_the_model() -> None:
    samples = {s["receipt_id"]: s for s in json.loads((SCHEMAS / "checkout" / "v2.samples.json").read_text())}
    refund = Checkout.from_avro(CODEC.decode(CODEC.encode("checkout", samples["S-PRISMA-0042-7-000310"])).value)
    assert refund.receipt_kind is ReceiptKind.REFUND
    assert refund.original_receipt_id == "S-PRISMA-0042-7-000123"
    assert refund.lines[0].kind is LineKind.RETURN and refund.lines[0].ref_line_no == 3
    split = Checkout.from_avro(CODEC.decode(CODEC.encode("checkout", samples["K-KMARKET-0007-1-000010"])).value)
    assert [(p.method, p.amount_cents) for p in split.payments] == [
        (PaymentMethod.GIFT_CARD, 1000),
        (PaymentMethod.CASH, 100),
    ]
    assert [a.kind for a in split.adjustments] == [AdjustmentKind.BENEFIT, AdjustmentKind.DISCOUNT]
    weighed = Checkout.from_avro(CODEC.decode(CODEC.encode("checkout", samples["S-PRISMA-0042-7-000200"])).value)
    assert weighed.lines[1].unit is Unit.KG


def test_json_without_v2_fields_is_a_v1_sale() -> None:
    sample = json.loads((SCHEMAS / "checkout" / "v1.samples.json").read_text())[0]
    sample["event_time"] = "2026-11-24T10:00:00.123+02:00"
    sample.pop("event_tz_offset_minutes")
    c = checkout_from_json(sample)
    assert c.receipt_kind is ReceiptKind.SALE and all(line.kind is LineKind.SALE for line in c.lines)


def test_a_returned_line_gives_the_sold_line_back_in_its_unit() -> None:
    sold = CheckoutLine(4, "2300000000000", "vegetables", 0.532, 299, 159, unit=Unit.KG)
    back = sold.returned(1)
    assert back == CheckoutLine(1, "2300000000000", "vegetables", -0.532, 299, -159, LineKind.RETURN, Unit.KG, 4)
    # On a refund receipt of its own it is valid, and the sale and its return net to nothing.
    refund = Checkout(
        "R-2", "PRISMA", "P-1", "1", None, datetime(2026, 11, 2, 10, tzinfo=UTC), PaymentMethod.CARD, -159, (back,),
        receipt_kind=ReceiptKind.REFUND, original_receipt_id="R-1",
    )  # fmt: skip
    validate(refund, datetime(2026, 11, 3, tzinfo=UTC))
    assert sold.amount_cents + back.amount_cents == 0 and sold.quantity + back.quantity == 0
