"""Issue 15's validation findings: every field's range against its Avro type and warehouse column,
ids without control or invisible characters, strings in NFC, sizes far below the broker's limit."""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from receiptflow.errors import ValidationError
from receiptflow.models import Checkout, CheckoutLine, ConsentChange, PaymentMethod
from receiptflow.validation import MAX_STRING_CHARS, validate, validate_consent

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
LINE = CheckoutLine(1, "6410100000000", "dairy", 2.0, 109, 218)
GOOD = Checkout("r1", "K_MARKET", "K_MARKET-0001", "1", "6390000000001", NOW, PaymentMethod.CARD, 218, (LINE,))


def _reason(c: Checkout) -> str:
    with pytest.raises(ValidationError) as info:
        validate(c, NOW)
    return info.value.reason


def test_the_good_checkout_passes() -> None:
    validate(GOOD, NOW)


@pytest.mark.parametrize("line_no", [2**31, 2**40, -1, 0])
def test_line_numbers_outside_the_avro_int_and_column_range_are_rejected(line_no: int) -> None:
    assert _reason(replace(GOOD, lines=(replace(LINE, line_no=line_no),))) == "out_of_range"


def test_unit_prices_beyond_any_sale_are_rejected() -> None:
    line = replace(LINE, unit_price_cents=2**63, amount_cents=218)
    assert _reason(replace(GOOD, lines=(line,))) == "absurd_amount"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("card_id", "6390000000001\u200b"),  # zero-width space: a second card that looks the same
        ("card_id", "6390000000001\x00"),
        ("receipt_id", "r1\n"),
        ("store_id", "K\u2028M"),
        ("chain", "K_MARKET\u202e"),
    ],
)
def test_ids_with_control_or_invisible_characters_are_rejected(field: str, value: str) -> None:
    assert _reason(replace(GOOD, **{field: value})) == "invalid_characters"


def test_strings_must_be_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Kärkkäinen")
    assert _reason(replace(GOOD, store_id=decomposed)) == "not_normalized"
    validate(replace(GOOD, store_id=unicodedata.normalize("NFC", decomposed)), NOW)


@pytest.mark.parametrize("field", ["receipt_id", "store_id", "register_id", "card_id", "chain"])
def test_oversize_ids_are_rejected(field: str) -> None:
    assert _reason(replace(GOOD, **{field: "1" * (MAX_STRING_CHARS + 1)})) == "too_long"


def test_an_oversize_sku_is_rejected_long_before_the_broker_limit() -> None:
    line = replace(LINE, sku="6" * 1_000_000)
    assert _reason(replace(GOOD, lines=(line,))) == "too_long"


def test_consent_changes_are_checked_the_same_way() -> None:
    validate_consent(ConsentChange("6390000000001", NOW, True, False), NOW, proof=False)
    for card, reason in (("6390000000001\u200b", "invalid_characters"), ("", "missing_id"), ("9" * 500, "too_long")):
        with pytest.raises(ValidationError) as info:
            validate_consent(ConsentChange(card, NOW, True, False), NOW, proof=False)
        assert info.value.reason == reason
