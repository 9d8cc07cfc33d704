"""JSON Lines parsing: each bad line reported with its line number and reason, good lines parsed."""

from __future__ import annotations

import json
import unicodedata

from receiptflow.checkout_json import checkout_from_json, checkout_to_json
from receiptflow.errors import ValidationError
from receiptflow.models import Checkout, ConsentChange
from receiptflow.producers.jsonl import parse_document, parse_lines

GOOD = {
    "receipt_id": "r1",
    "chain": "K_MARKET",
    "store_id": "K_MARKET-0001",
    "register_id": "1",
    "card_id": None,
    "event_time": "2026-11-24T10:15:00+02:00",
    "payment_method": "CARD",
    "currency": "EUR",
    "total_cents": 218,
    "lines": [
        {
            "line_no": 1,
            "sku": "6410100000000",
            "product_group": "dairy",
            "quantity": 2,
            "unit_price_cents": 109,
            "amount_cents": 218,
        }
    ],
}


def test_good_and_bad_lines() -> None:
    missing = {k: v for k, v in GOOD.items() if k != "store_id"}
    naive = {**GOOD, "event_time": "2026-11-24T10:15:00"}
    text_money = {**GOOD, "total_cents": "2.18"}
    lines = [json.dumps(GOOD), "{not json", "", json.dumps(missing), json.dumps(naive), json.dumps(text_money)]
    out = list(parse_lines(lines, "checkout"))
    assert [n for n, _ in out] == [1, 2, 4, 5, 6]
    assert isinstance(out[0][1], Checkout)
    assert out[0][1].event_time.utcoffset() is not None
    reasons = [(n, x.reason, x.field) for n, x in out[1:] if isinstance(x, ValidationError)]
    assert reasons == [
        (2, "malformed_json", None),
        (4, "missing_field", "store_id"),
        (5, "naive_time", "event_time"),
        (6, "schema", "total_cents"),
    ]


def test_round_trip_json_shape() -> None:
    c = checkout_from_json(GOOD)
    assert checkout_from_json(json.loads(json.dumps(checkout_to_json(c)))) == c


def test_consent_lines() -> None:
    good = {
        "card_id": "6390000000001",
        "event_time": "2026-11-24T10:00:00Z",
        "product_data_marketing": True,
        "electronic_marketing": False,
        "source": "app",
    }
    bad = {**good, "electronic_marketing": "yes"}
    out = list(parse_lines([json.dumps(good), json.dumps(bad)], "consent"))
    assert isinstance(out[0][1], ConsentChange)
    assert isinstance(out[1][1], ValidationError) and out[1][1].field == "electronic_marketing"


def test_a_wrongly_typed_currency_is_a_bad_line_not_a_crash() -> None:
    ((lineno, item),) = parse_lines([json.dumps({**GOOD, "currency": 978})], "checkout")
    assert lineno == 1 and isinstance(item, ValidationError) and item.field == "currency"


def test_strings_are_normalised_to_nfc_and_unknown_fields_are_reported() -> None:
    doc = {**GOOD, "store_id": unicodedata.normalize("NFD", "Kärkkäinen-1"), "loyalty_tier": "gold"}
    parsed = parse_document(json.dumps(doc), "checkout")
    assert isinstance(parsed.record, Checkout)
    assert parsed.record.store_id == unicodedata.normalize("NFC", "Kärkkäinen-1")
    assert parsed.unknown_fields == ("loyalty_tier",)
    line_doc = {**GOOD, "lines": [{**GOOD["lines"][0], "colour": "red"}]}  # type: ignore[index]
    assert parse_document(json.dumps(line_doc), "checkout").unknown_fields == ("lines[0].colour",)
