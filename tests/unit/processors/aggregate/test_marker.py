"""The close marker on ``analytics.windows`` and a basket record as the aggregator reads it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.codec import Codec
from receiptflow.dlq import Rejected
from receiptflow.models import ConsentChange
from receiptflow.processors.aggregate.decode import decode_basket
from receiptflow.processors.aggregate.marker import Marker, read_markers

from .baskets import basket

pytestmark = pytest.mark.unit

CODEC = Codec()
MARKER = Marker(
    "K_MARKET/2026-11-02", "K_MARKET", date(2026, 11, 2), 2, 1234, 80, 123_456, 2, -900, 0, 41, 10,
    datetime(2026, 11, 3, 0, 30, tzinfo=UTC),
)  # fmt: skip


def test_a_marker_is_json_with_the_fields_named_and_reads_back() -> None:
    doc = json.loads(MARKER.to_json())
    assert doc == {
        "window_id": "K_MARKET/2026-11-02",
        "chain": "K_MARKET",
        "local_date": "2026-11-02",
        "partition": 2,
        "counted_through": 1234,
        "sale_baskets": 80,
        "sale_cents": 123_456,
        "refund_baskets": 2,
        "refund_cents": -900,
        "late_baskets": 0,
        "cells": 41,
        "k": 10,
        "closed_at": "2026-11-03T00:30:00Z",
    }
    assert Marker.from_json(MARKER.to_json()) == MARKER
    assert MARKER.window.id == MARKER.window_id


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_a_late_basket_counts_once_and_moves_counted_through_past_itself(through: int, offset: int) -> None:
    m = Marker("A/2026-11-02", "A", date(2026, 11, 2), 0, through, 1, 1, 0, 0, 0, 1, 2, MARKER.closed_at)
    late = m.with_late(offset)
    assert late.late_baskets == 1 and late.counted_through == max(through, offset + 1)
    assert late.counted(0, offset) and not late.counted(1, offset)


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"window_id": "A/2026-11-02"}', MARKER.to_json().replace(b'"k":10', b'"k":"10"')],
)
def test_what_is_not_a_marker_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Marker.from_json(raw)


def test_reading_markers_keeps_the_newest_a_tombstone_forgets_and_an_unreadable_one_still_closes() -> None:
    late = MARKER.with_late(2000)
    markers = read_markers(
        [
            (b"K_MARKET/2026-11-02", MARKER.to_json()),
            (b"K_MARKET/2026-11-02", late.to_json()),
            (b"ABC/2026-11-02", MARKER.to_json()),
            (b"ABC/2026-11-02", None),
            (b"SIWA/2026-11-03", b"garbage"),
            (b"not a window", b"garbage"),
            (None, MARKER.to_json()),
        ]
    )
    assert set(markers) == {"K_MARKET/2026-11-02", "SIWA/2026-11-03"}
    assert markers["K_MARKET/2026-11-02"] == late
    unreadable = markers["SIWA/2026-11-03"]
    assert (unreadable.chain, unreadable.local_date) == ("SIWA", date(2026, 11, 3))
    assert not unreadable.counted(0, 0), "every record of it is late: never published twice"


def _message(value: bytes | None, offset: int = 5) -> Message:
    return Message(topic="purchases.baskets", partition=1, offset=offset, key=b"SOKOS", value=value)


def test_a_basket_record_decodes_and_anything_else_is_rejected_with_its_reason_and_bytes() -> None:
    b = basket()
    assert decode_basket(CODEC, _message(CODEC.encode("analytics_basket", b.to_avro()))) == b
    cases = {
        b"\x00garbage": "unknown_schema_id",
        b"garbage": "undecodable",
        CODEC.encode("consent_change", ConsentChange("6390000000001", MARKER.closed_at, True, True).to_avro()): (
            "wrong_subject"
        ),
    }
    for raw, reason in cases.items():
        rejected = decode_basket(CODEC, _message(raw))
        assert isinstance(rejected, Rejected)
        assert (rejected.error.reason, rejected.value, rejected.key) == (reason, raw, b"SOKOS")
        assert (rejected.topic, rejected.partition, rejected.offset) == ("purchases.baskets", 1, 5)
    tombstone = decode_basket(CODEC, _message(None))
    assert isinstance(tombstone, Rejected) and tombstone.error.reason == "undecodable"
