"""Fuzzing the edges where outside bytes come in: the checkout and consent decoders with validation (as
the router and every consents reader run them) and the JSON Lines ingest (``receiptflow produce``).

Each input must end in exactly one of two ways: accepted, or rejected with a
:class:`~receiptflow.errors.ValidationError` that carries a reason code (what goes to the
dead-letter topic). Any other exception is a crash: the consumer would stop on one record.

Inputs are mutations of valid records (bytes flipped, cut, inserted, numbers pushed to the edges of
their Avro types) and free-form bytes and text, so they get deep into the decoders rather than
failing at the first byte. The number of inputs per target is ``RECEIPTFLOW_FUZZ_EXAMPLES``
(default 1,500 in the ordinary test run); ``make fuzz`` runs 100,000 per target.
"""

from __future__ import annotations

import json
import os
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiptflow.codec import Codec
from receiptflow.consent_codec import decode_consent
from receiptflow.errors import ValidationError
from receiptflow.models import Checkout, ConsentChange
from receiptflow.producers.jsonl import parse_document
from receiptflow.validation import validate

from .strategies import NOW, checkouts

EXAMPLES = int(os.environ.get("RECEIPTFLOW_FUZZ_EXAMPLES", "1500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # every run explores afresh; a failure prints its input
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CODEC = Codec()
EDGE_INTS = [0, -1, 1, 2**31 - 1, -(2**31), 2**31, 2**63 - 1, -(2**63), 10**30, -(10**30)]


def _route_checkout(data: bytes) -> str:
    """What the router does with a record of ``checkouts``: the reason it rejects it, or 'accepted'."""
    try:
        decoded, _lines = CODEC.decode_checkout(data)
        validate(Checkout.from_avro(decoded.value), NOW)
    except ValidationError as exc:
        assert exc.reason, "a rejection must say why"
        return exc.reason
    return "accepted"


def _read_consent(data: bytes) -> str:
    try:
        decode_consent(CODEC, data, datetime(2026, 11, 24, 12, tzinfo=UTC))
    except ValidationError as exc:
        assert exc.reason
        return exc.reason
    return "accepted"


def _ingest_line(text: str) -> str:
    try:
        record = parse_document(text, "checkout").record
        if isinstance(record, Checkout):
            validate(record, NOW)
    except ValidationError as exc:
        assert exc.reason
        return exc.reason
    return "accepted"


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few bytes flipped, cut out, inserted or the record truncated."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "extend"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del data[at:]
        else:
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _encoded_checkout(c: Checkout) -> bytes:
    return CODEC.encode("checkout", c.to_avro())


valid_checkouts = checkouts().map(_encoded_checkout)
framed_garbage = st.builds(
    lambda schema_id, body: b"\x00" + struct.pack(">I", schema_id) + body,
    st.sampled_from([1, 2, 3, 4, 5, 99, 2**32 - 1]),
    st.binary(max_size=300),
)


@st.composite
def edge_checkouts(draw: st.DrawFn) -> bytes:
    """A valid checkout whose numbers sit at the edges of their Avro types (written without the codec's checks)."""
    c = draw(checkouts())
    record: dict[str, Any] = c.to_avro()
    record["total_cents"] = draw(st.sampled_from(EDGE_INTS[:8]))
    record["event_tz_offset_minutes"] = draw(st.sampled_from([0, 120, -(2**31), 2**31 - 1, 1440, -1441]))
    for line in record["lines"]:
        line["line_no"] = draw(st.sampled_from(EDGE_INTS[:6]))
        line["amount_cents"] = draw(st.sampled_from(EDGE_INTS[:8]))
        line["quantity"] = draw(st.sampled_from([0.0, -1.0, 1e308, float("inf"), float("nan"), 1.5]))
    try:
        return CODEC.encode("checkout", record)
    except Exception:
        return _encoded_checkout(c)


@FUZZ
@given(st.one_of(mutated(valid_checkouts), framed_garbage, edge_checkouts(), st.binary(max_size=64)))
def test_every_checkout_record_is_accepted_or_rejected_with_a_reason(data: bytes) -> None:
    assert _route_checkout(data)


valid_consents = st.builds(
    lambda card, ms, p, e: CODEC.encode(
        "consent_change",
        ConsentChange(card, datetime(2020, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms), p, e).to_avro(),
    ),
    st.text(min_size=1, max_size=20),
    st.integers(0, 10**11),
    st.booleans(),
    st.booleans(),
)


@FUZZ
@given(st.one_of(mutated(valid_consents), framed_garbage, valid_consents, st.binary(max_size=64)))
def test_every_consent_record_is_accepted_or_rejected_with_a_reason(data: bytes) -> None:
    assert _read_consent(data)


json_scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(EDGE_INTS), st.floats(allow_nan=False), st.text(max_size=30)
)


@st.composite
def json_lines(draw: st.DrawFn) -> str:
    """A valid checkout as JSON with fields dropped, retyped or added, or text that is barely JSON."""
    c = draw(checkouts())
    doc: dict[str, Any] = json.loads(json.dumps(c.to_avro(), default=str))
    doc["event_time"] = c.event_time.isoformat()
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from([*doc.keys(), "extra", "lines"]))
        action = draw(st.sampled_from(["drop", "retype", "nest"]))
        if action == "drop":
            doc.pop(key, None)
        elif action == "retype":
            doc[key] = draw(json_scalars)
        else:
            doc[key] = draw(st.lists(st.dictionaries(st.text(max_size=10), json_scalars, max_size=4), max_size=3))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=5)) + text[at + draw(st.integers(0, 3)) :]
    return text


@FUZZ
@given(st.one_of(json_lines(), st.text(max_size=200)))
def test_every_json_line_is_accepted_or_rejected_with_a_reason(text: str) -> None:
    assert _ingest_line(text)
