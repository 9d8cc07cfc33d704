"""Reading ``consents`` as every reader does: a change, a tombstone, or a record to reject."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from receiptflow.codec import Codec
from receiptflow.consent_codec import decode_consent
from receiptflow.errors import ValidationError
from receiptflow.models import ConsentChange

CODEC = Codec()
CHANGE = ConsentChange("6390000000001", datetime(2026, 5, 1, 12, tzinfo=UTC), False, True, "app")


def test_a_consent_change_decodes_and_a_tombstone_is_none() -> None:
    assert decode_consent(CODEC, CODEC.encode("consent_change", CHANGE.to_avro())) == CHANGE
    assert decode_consent(CODEC, None) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (json.dumps({"card_id": "6390000000001", "product_data_marketing": True}).encode(), "undecodable"),
        (b"\x00\x00\x00\x00\x63not avro at all", "unknown_schema_id"),
        (CODEC.encode("consent_change", CHANGE.to_avro())[:-3], "undecodable"),
    ],
    ids=["json", "unknown-schema", "truncated"],
)
def test_what_cannot_be_decoded_is_a_validation_error_with_its_reason(value: bytes, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_consent(CODEC, value)
    assert caught.value.reason == reason


def test_a_record_of_another_subject_is_rejected() -> None:
    dead = {
        "reason": "x",
        "message": "y",
        "field": None,
        "source_topic": "consents",
        "source_partition": 0,
        "source_offset": 1,
        "original_key": None,
        "original_value": None,
        "failed_at": datetime(2026, 5, 1, tzinfo=UTC),
        "processor": "p",
    }
    with pytest.raises(ValidationError) as caught:
        decode_consent(CODEC, CODEC.encode("dead_letter", dead))
    assert caught.value.reason == "wrong_subject"
