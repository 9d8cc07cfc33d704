"""Analytics baskets v2: every receipt shape on the anonymous topic, with its kinds, and nothing that joins back."""

from __future__ import annotations

import io
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.codec import Codec
from receiptflow.models import AnalyticsBasket, Checkout, LineKind, ReceiptKind, Unit
from receiptflow.processors.router.encoding import BasketEncoder
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import analytics_basket

from ...receipt_shapes import SHAPES, any_shape
from ...test_receipt_shapes import EXAMPLES

CODEC = Codec()
BASKETS = BasketPseudonymiser(b"basket-v2-test-analytics-key")
SCHEMAS = Path(__file__).resolve().parents[4] / "schemas"
APACHE = avro.schema.parse((SCHEMAS / "analytics_basket" / "v2.avsc").read_text())
# Names of the card-linked records' identifiers and register positions: none may be a basket field.
JOINING = {"receipt_id", "original_receipt_id", "card_id", "register_id", "line_no", "ref_line_no", "processed_at"}


def _field_names(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        names = {f["name"] for f in schema.get("fields", [])}
        for value in schema.values():
            names |= _field_names(value)
        return names
    if isinstance(schema, list):
        return set().union(*(_field_names(v) for v in schema)) if schema else set()
    return set()


def test_the_basket_schema_has_no_field_that_joins_back() -> None:
    for version in CODEC.catalog.versions("analytics_basket"):
        assert not _field_names(dict(version.raw)) & JOINING, version.path
    assert CODEC.catalog.latest("analytics_basket").version == 2


@settings(max_examples=60, deadline=None)
@given(c=any_shape)
def test_every_shape_round_trips_through_fastavro_and_apache_avro(c: Checkout) -> None:
    basket = analytics_basket(c, BASKETS)
    data = CODEC.encode("analytics_basket", basket.to_avro())
    assert AnalyticsBasket.from_avro(CODEC.decode(data, expect="analytics_basket").value) == basket
    # The reference implementation reads the body fastavro wrote to the same record.
    value = avro.io.DatumReader(APACHE).read(avro.io.BinaryDecoder(io.BytesIO(data[5:])))
    assert AnalyticsBasket.from_avro(value) == basket
    # Written in parts (head, then each remembered line) it is the same bytes.
    encoder = BasketEncoder(CODEC)
    assert encoder.encode(basket) == data == encoder.encode(basket)


@settings(max_examples=60, deadline=None)
@given(c=any_shape, seed=st.integers(0, 2**32))
def test_the_lines_come_in_a_canonical_order_whatever_the_register_order(c: Checkout, seed: int) -> None:
    lines = list(c.lines)
    random.Random(seed).shuffle(lines)
    basket = analytics_basket(c, BASKETS)
    assert analytics_basket(replace(c, lines=tuple(lines)), BASKETS) == basket
    keys = [
        (x.product_group, x.sku, x.amount_cents, x.quantity, x.unit_price_cents, x.kind, x.unit, x.adjustment_cents)
        for x in basket.lines
    ]
    assert keys == sorted(keys)


@settings(max_examples=60, deadline=None)
@given(c=any_shape)
def test_no_value_of_the_basket_equals_an_identifier_of_the_receipt(c: Checkout) -> None:
    basket = analytics_basket(c, BASKETS)
    values = json.dumps(basket.to_avro(), default=str)
    for ident in (c.receipt_id, c.card_id, c.original_receipt_id):
        if ident is not None:
            assert json.dumps(ident) not in values
    assert basket.basket_id == BASKETS.basket_id(c.receipt_id, basket.key_period)


def test_each_shape_keeps_its_kinds_units_and_money() -> None:
    for name, c in EXAMPLES.items():
        b = analytics_basket(c, BASKETS)
        assert b.receipt_kind is c.receipt_kind, name
        assert sorted((x.kind, x.unit, x.amount_cents) for x in b.lines) == sorted(
            (x.kind, x.unit, x.amount_cents) for x in c.lines
        ), name
        assert sum(x.amount_cents for x in b.lines) + b.adjustment_cents == b.total_cents == c.total_cents, name
        assert b.deposit_cents == sum(
            x.amount_cents for x in c.lines if x.kind in (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND)
        ), name
    refund = analytics_basket(EXAMPLES["refund receipt"], BASKETS)
    assert (refund.receipt_kind, refund.total_cents) == (ReceiptKind.REFUND, -920)
    weighed = analytics_basket(EXAMPLES["weighed goods"], BASKETS)
    assert [(x.unit, x.quantity) for x in weighed.lines] == [(Unit.KG, 0.532)]


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_receipt_level_adjustments_are_shared_out_over_the_goods_lines(data: st.DataObject) -> None:
    c = data.draw(SHAPES["split_tender"])
    b = analytics_basket(c, BASKETS)
    goods = sum(x.amount_cents for x in b.lines if x.kind not in (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND))
    assert b.adjustment_cents == sum(a.amount_cents for a in c.adjustments)
    if goods > 0:
        assert sum(x.adjustment_cents for x in b.lines) == b.adjustment_cents
    for x in b.lines:
        # A share never exceeds what the line cost, never goes to deposits, and is never positive.
        assert x.adjustment_cents <= 0
        assert x.adjustment_cents == 0 or (x.kind is LineKind.SALE and -x.adjustment_cents <= x.amount_cents)


def test_a_v1_basket_reads_as_a_sale_of_pieces_without_adjustments() -> None:
    v1 = CODEC.catalog.versions("analytics_basket")[0]
    sample = json.loads((SCHEMAS / "analytics_basket" / "v1.samples.json").read_text())[0]
    buf = io.BytesIO()
    buf.write(b"\x00" + v1.schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buf, v1.parsed, sample)
    decoded = CODEC.decode(buf.getvalue(), expect="analytics_basket")
    assert decoded.writer_version == 1
    b = AnalyticsBasket.from_avro(decoded.value)
    assert (b.receipt_kind, b.deposit_cents, b.adjustment_cents) == (ReceiptKind.SALE, 0, 0)
    assert {(x.kind, x.unit, x.adjustment_cents) for x in b.lines} == {(LineKind.SALE, Unit.PIECE, 0)}
    assert [x.amount_cents for x in b.lines] == [258, 920, 159]
