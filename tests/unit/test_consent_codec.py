"""Reading ``consents`` as every reader does: a change, a tombstone, or a record to reject."""

from __future__ import annotations

import io
import json
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.codec import Codec
from receiptflow.consent_codec import WrittenConsent, decode_consent, millis, newest_written, written_at
from receiptflow.errors import ValidationError
from receiptflow.models import ConsentChange
from receiptflow.validation import CONSENT_MAX_AGE, EARLIEST_EVENT, MAX_FUTURE, check_consent_time, validate_consent

CODEC = Codec()
CHANGE = ConsentChange("6390000000001", datetime(2026, 5, 1, 12, tzinfo=UTC), False, True, "app")
_V1_FIELDS = ("card_id", "event_time", "product_data_marketing", "electronic_marketing", "source")
WRITTEN = CHANGE.event_time + timedelta(seconds=3)  # when the broker appended it


def test_a_consent_change_decodes_and_a_tombstone_is_none() -> None:
    assert decode_consent(CODEC, CODEC.encode("consent_change", CHANGE.to_avro()), WRITTEN) == CHANGE
    assert decode_consent(CODEC, None, WRITTEN) is None


def test_a_v1_record_decodes_with_the_proof_empty_and_a_v2_record_keeps_it() -> None:
    v1 = CODEC.catalog.versions("consent_change")[0]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1.parsed, {k: v for k, v in CHANGE.to_avro().items() if k in _V1_FIELDS})
    framed_v1 = struct.pack(">bI", 0, v1.schema_id) + body.getvalue()  # as a register of before v2 writes it
    assert decode_consent(CODEC, framed_v1, WRITTEN) == CHANGE  # principal, channel, text version: ""
    proved = replace(CHANGE, principal="consent-app", channel="app", text_version="2026-01")
    assert decode_consent(CODEC, CODEC.encode("consent_change", proved.to_avro()), WRITTEN) == proved


def test_a_change_is_judged_at_the_time_it_was_written_not_when_it_is_read() -> None:
    value = CODEC.encode("consent_change", CHANGE.to_avro())
    # Read a year later (a restore, a replay): still good, judged at its append time.
    assert decode_consent(CODEC, value, written_at(millis(WRITTEN), WRITTEN + timedelta(days=365))) == CHANGE
    # Appended long before its date: dated ahead of the registers' drift, refused however late it is read.
    early = written_at(millis(CHANGE.event_time - MAX_FUTURE - timedelta(seconds=1)), datetime.now(UTC))
    with pytest.raises(ValidationError) as caught:
        decode_consent(CODEC, value, early)
    assert (caught.value.reason, caught.value.field) == ("future_event_time", "event_time")
    # Appended more than the horizon after its date: stale.
    late = CHANGE.event_time + timedelta(days=31)
    with pytest.raises(ValidationError) as caught:
        decode_consent(CODEC, value, late, timedelta(days=30))
    assert caught.value.reason == "stale_consent_time"
    # No append time: the reader's clock.
    assert written_at(0, WRITTEN) == WRITTEN and written_at(None, WRITTEN) == WRITTEN


@given(
    st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.integers(1, 3650),
)
def test_consent_time_bounds(event: datetime, now: datetime, days: int) -> None:
    """Accepted exactly when inside [now - horizon, now + drift] and not before EARLIEST_EVENT."""
    horizon = timedelta(days=days)
    inside = max(now - horizon, EARLIEST_EVENT) <= event <= now + MAX_FUTURE
    try:
        check_consent_time(event, now, horizon)
    except ValidationError as exc:
        assert not inside
        expected = (
            "future_event_time"
            if event > now + MAX_FUTURE
            else "absurd_event_time"
            if event < EARLIEST_EVENT
            else "stale_consent_time"
        )
        assert exc.reason == expected
    else:
        assert inside


def test_1970_is_refused_whatever_the_horizon() -> None:
    with pytest.raises(ValidationError) as caught:
        check_consent_time(datetime(1970, 1, 2, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC), timedelta(days=3650))
    assert caught.value.reason == "absurd_event_time"
    assert timedelta(days=30) <= CONSENT_MAX_AGE  # longer than a register's outbox is expected to hold records


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        (replace(CHANGE, principal="p", channel="fax", text_version="1"), "unknown_channel", "channel"),
        (replace(CHANGE, channel="app", text_version="1"), "missing_id", "principal"),
        (replace(CHANGE, principal="p", text_version="1"), "missing_id", "channel"),
        (replace(CHANGE, principal="p", channel="web"), "missing_id", "text_version"),
        (replace(CHANGE, principal="p", channel="web", text_version="v\u200b"), "invalid_characters", "text_version"),
    ],
)
def test_a_writer_must_prove_the_consent(change: ConsentChange, reason: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_consent(change, WRITTEN)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    validate_consent(replace(CHANGE, principal="p", channel="web", text_version="1"), WRITTEN)


def test_a_reader_refuses_an_unknown_channel_but_not_a_missing_proof() -> None:
    validate_consent(CHANGE, WRITTEN, proof=False)  # a v1 record
    with pytest.raises(ValidationError) as caught:
        decode_consent(CODEC, CODEC.encode("consent_change", replace(CHANGE, channel="fax").to_avro()), WRITTEN)
    assert caught.value.reason == "unknown_channel"


@given(st.lists(st.tuples(st.integers(1, 6), st.booleans(), st.booleans(), st.integers(-5, 5)), max_size=8))
def test_the_newest_written_change_wins_and_ties_take_the_stricter(rows: list[tuple[int, bool, bool, int]]) -> None:
    changes = [
        WrittenConsent(replace(CHANGE, event_time=CHANGE.event_time + timedelta(days=d), product_data_marketing=p,
                               electronic_marketing=e), ms)
        for ms, p, e, d in rows
    ]  # fmt: skip
    newest = newest_written(changes)
    if not rows:
        assert newest is None
        return
    last = max(ms for ms, *_ in rows)
    tied = [(p, e) for ms, p, e, _ in rows if ms == last]
    assert newest is not None
    assert newest.product_data_marketing == all(p for p, _ in tied)
    assert newest.electronic_marketing == all(e for _, e in tied)
    assert newest_written(reversed(changes)) == newest  # whatever order they are read in


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
        decode_consent(CODEC, value, WRITTEN)
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
        decode_consent(CODEC, CODEC.encode("dead_letter", dead), WRITTEN)
    assert caught.value.reason == "wrong_subject"
