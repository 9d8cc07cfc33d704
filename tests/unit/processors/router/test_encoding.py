"""Spliced purchase encoding equals the ordinary encoding, byte for byte, for every routed record."""

from __future__ import annotations

import copy
import io
from dataclasses import replace
from datetime import UTC, datetime

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.codec import HEADER_SIZE, Codec, SchemaCatalog, SchemaVersion
from receiptflow.models import Checkout, CheckoutLine, ConsentState, PaymentMethod
from receiptflow.policy import load_policy
from receiptflow.processors.router.encoding import BasketEncoder, PurchaseEncoder
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import analytics_basket, route
from receiptflow.producers.simulator import Simulator

from ...strategies import NOW, checkouts

CODEC = Codec()
POLICY = load_policy()
consents = st.builds(ConsentState, st.booleans(), st.booleans(), st.booleans())


def _routed_bytes(codec: Codec, data: bytes, consent: ConsentState, now: datetime) -> list[tuple[bytes, bytes]]:
    """(spliced, ordinary) encodings of every record the checkout in ``data`` is routed to."""
    decoded, lines_raw = codec.decode_checkout(data)
    c = Checkout.from_avro(decoded.value)
    routed = route(c, POLICY.version_at(c.chain, c.event_time), consent, now)
    enc = PurchaseEncoder(codec).receipt(c.lines, lines_raw)
    records = [p for p in (routed.customer, routed.marketing, routed.analytics) if p is not None]
    return [(enc.encode(p), codec.encode("purchase", p.to_avro())) for p in records]


@settings(max_examples=300, deadline=None)
@given(checkouts(), consents)
def test_spliced_purchases_equal_the_ordinary_encoding(c: Checkout, consent: ConsentState) -> None:
    data = CODEC.encode("checkout", c.to_avro())
    decoded, lines_raw = CODEC.decode_checkout(data)
    assert decoded.value == CODEC.decode(data, expect="checkout").value
    assert lines_raw is not None, "the bundled schemas allow splicing"
    pairs = _routed_bytes(CODEC, data, consent, NOW)
    assert pairs
    for spliced, ordinary in pairs:
        assert spliced == ordinary


def _block_encoded(lines: tuple[CheckoutLine, ...], negative: bool) -> bytes:
    """The lines array written as one block per line, the way other Avro writers may block arrays."""
    item = CODEC.catalog.latest("checkout").raw["fields"][-1]["type"]["items"]
    record = fastavro.parse_schema(copy.deepcopy(item))
    out = io.BytesIO()
    for line in lines:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, record, line.to_avro())
        if negative:  # count -1 followed by the block's byte size
            fastavro.schemaless_writer(out, {"type": "long"}, -1)
            fastavro.schemaless_writer(out, {"type": "long"}, len(body.getvalue()))
        else:
            fastavro.schemaless_writer(out, {"type": "long"}, 1)
        out.write(body.getvalue())
    out.write(b"\x00")
    return out.getvalue()


@pytest.mark.parametrize("negative", [False, True])
@settings(max_examples=60, deadline=None)
@given(c=checkouts(), consent=consents)
def test_lines_in_several_blocks_are_copied_as_they_came_and_decode_the_same(
    negative: bool, c: Checkout, consent: ConsentState
) -> None:
    ordinary = CODEC.encode("checkout", c.to_avro())
    head_len = len(ordinary) - len(CODEC.decode_checkout(ordinary)[1] or b"")
    data = ordinary[:head_len] + _block_encoded(c.lines, negative)
    decoded, lines_raw = CODEC.decode_checkout(data)
    assert Checkout.from_avro(decoded.value) == Checkout.from_avro(CODEC.decode(ordinary).value)
    assert lines_raw == data[head_len:]
    for spliced, plain in _routed_bytes(CODEC, data, consent, NOW):
        assert CODEC.decode(spliced).value == CODEC.decode(plain).value


def test_records_whose_items_are_not_the_checkout_lines_take_the_ordinary_path() -> None:
    c = Checkout.from_avro(CODEC.decode(CODEC.encode("checkout", _sample()), expect="checkout").value)
    routed = route(c, POLICY.version_at("SOKOS", c.event_time), ConsentState(True, True, True), NOW)
    other = tuple(reversed(c.lines))  # equal content, another tuple: the splice must not assume it
    p = routed.customer.__class__(**{**_fields(routed.customer), "items": other})
    enc = PurchaseEncoder(CODEC).receipt(c.lines, b"\x02garbage")  # would corrupt the record if spliced
    assert enc.encode(p) == CODEC.encode("purchase", p.to_avro())


def test_no_splice_when_the_checkout_lines_differ_from_purchase_items(tmp_path: object) -> None:
    catalog = CODEC.catalog
    old = catalog.latest("checkout")
    versions = [v for s in catalog.subjects() for v in catalog.versions(s) if v is not old]
    raw = copy.deepcopy(dict(old.raw))
    raw["fields"][-1]["type"]["items"]["fields"][3]["type"] = "float"  # quantity: float, not double
    versions.append(SchemaVersion(old.schema_id, "checkout", old.version, old.path, raw))
    codec = Codec(SchemaCatalog(versions))
    data = codec.encode("checkout", _sample())
    decoded, lines_raw = codec.decode_checkout(data)
    assert lines_raw is None
    assert decoded.value == codec.decode(data).value


def test_decode_checkout_reports_the_same_errors_as_decode() -> None:
    data = CODEC.encode("checkout", _sample())
    for bad in (data[:-3], data + b"\x00", data[:HEADER_SIZE] + b"\xff" * 8, None, b"\x01abc"):
        with pytest.raises(Exception) as plain:
            CODEC.decode(bad, expect="checkout")
        with pytest.raises(type(plain.value)):
            CODEC.decode_checkout(bad)
    with pytest.raises(Exception, match="expected a 'checkout' record"):
        CODEC.decode_checkout(CODEC.encode("consent_change", _consent()))


def _sample() -> dict[str, object]:
    return Checkout(
        receipt_id="R-1",
        chain="SOKOS",
        store_id="S1",
        register_id="2",
        card_id="6390000000001",
        event_time=datetime(2026, 11, 20, 10, 30, tzinfo=UTC),
        payment_method=PaymentMethod.CARD,
        total_cents=450,
        lines=(
            CheckoutLine(1, "6410100000000", "dairy", 1.0, 150, 150),
            CheckoutLine(2, "6410103779194", "bread", 2.0, 150, 300),
        ),
    ).to_avro()


def _consent() -> dict[str, object]:
    return {
        "card_id": "6390000000001",
        "event_time": datetime(2026, 11, 20, tzinfo=UTC),
        "product_data_marketing": True,
        "electronic_marketing": False,
        "source": "test",
    }


def _fields(p: object) -> dict[str, object]:
    return {name: getattr(p, name) for name in p.__slots__}  # type: ignore[attr-defined]


BASKETS = BasketPseudonymiser(b"encoding-test-analytics-key")


@settings(max_examples=300, deadline=None)
@given(st.lists(checkouts(), min_size=1, max_size=4))
def test_baskets_written_in_parts_equal_the_ordinary_encoding(cs: list[Checkout]) -> None:
    encoder = BasketEncoder(CODEC)
    assert encoder.layout is not None
    # Several receipts through one encoder: remembered lines are reused across baskets.
    for c in cs + cs:
        if not c.lines:
            continue
        basket = analytics_basket(c, BASKETS)
        data = encoder.encode(basket)
        assert data == CODEC.encode("analytics_basket", basket.to_avro())
        assert CODEC.decode(data, expect="analytics_basket").value["basket_id"] == basket.basket_id


def test_an_empty_basket_and_one_of_many_lines_are_framed_as_fastavro_frames_them() -> None:
    encoder = BasketEncoder(CODEC)
    c = next(c for c in Simulator(4, stores=3, customers=5).stream(50, NOW, rate=1) if c.lines)
    basket = analytics_basket(c, BASKETS)
    many = replace(basket, lines=basket.lines * 40)  # more than 63 lines: a two-byte item count
    for b in (replace(basket, lines=()), many):
        assert encoder.encode(b) == CODEC.encode("analytics_basket", b.to_avro())
