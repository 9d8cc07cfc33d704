"""The peer equality check: two processors' outputs compared as multisets, less the fields that may differ."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from receiptflow.codec import Codec
from receiptflow.models import CheckoutLine, ConsentState, Granularity, GroupTotal, Purchase


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "peer_outputs.py"
    spec = importlib.util.spec_from_file_location("peer_outputs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("peer_outputs", module)
    spec.loader.exec_module(module)
    return module


peer = _load()
NOW = datetime(2026, 11, 24, 10, 15, tzinfo=UTC)


def purchase(
    receipt: str, *, processed_at: datetime = NOW, granularity: Granularity = Granularity.ITEM
) -> dict[str, Any]:
    """A purchase as the decoder gives it back (a round trip through the codec, so the shapes are real)."""
    line = CheckoutLine(1, "6410000000001", "dairy", 2.0, 150, 300)
    p = Purchase(
        receipt_id=receipt,
        chain="PRISMA",
        store_id="P-1",
        register_id="R-1",
        card_id="card-1",
        event_time=NOW - timedelta(minutes=5),
        payment_method="CARD",
        currency="EUR",
        total_cents=300,
        granularity=granularity,
        items=(line,) if granularity is Granularity.ITEM else (),
        groups=(GroupTotal("dairy", 2.0, 300, 1),),
        policy_version="prisma-pg-2010",
        consent=ConsentState(True, True, known=True),
        processed_at=processed_at,
    )
    codec = Codec()
    return codec.decode(codec.encode("purchase", p.to_avro()), expect="purchase").value


def dead_letter(reason: str, message: str, processor: str) -> dict[str, Any]:
    return {
        "reason": reason,
        "message": message,
        "field": "total_cents",
        "source_topic": "checkouts",
        "source_partition": 2,
        "source_offset": 41,
        "original_key": b"card-1",
        "original_value": b"\x00\x00\x00\x00\x06garbage",
        "failed_at": NOW,
        "processor": processor,
    }


def test_same_records_in_another_order_and_processing_time_are_equal() -> None:
    router = peer.multiset("customer", [(b"card-1", purchase("r1")), (b"card-1", purchase("r2"))])
    other = peer.multiset(
        "customer",
        [(b"card-1", purchase("r2", processed_at=NOW + timedelta(seconds=3))), (b"card-1", purchase("r1"))],
    )
    assert peer.compare({"customer": router}, {"customer": other}) == []


def test_a_different_granularity_is_reported_with_both_sides() -> None:
    router = peer.multiset("customer", [(b"card-1", purchase("r1"))])
    other = peer.multiset("customer", [(b"card-1", purchase("r1", granularity=Granularity.PRODUCT_GROUP))])
    problems = peer.compare({"customer": router}, {"customer": other}, ("router", "kstreams"))
    assert len(problems) == 1
    assert problems[0].startswith("customer: 1 records from router, 1 from kstreams; 1 only from router, 1 only from")
    assert '"granularity":"PRODUCT_GROUP"' in problems[0]
    assert '"granularity":"ITEM"' in problems[0]


def test_a_record_written_twice_by_one_side_is_a_difference() -> None:
    once = peer.multiset("marketing", [(b"card-1", purchase("r1"))])
    twice = peer.multiset("marketing", [(b"card-1", purchase("r1")), (b"card-1", purchase("r1"))])
    problems = peer.compare({"marketing": once}, {"marketing": twice})
    assert problems and "1 only from peer" in problems[0]


def test_an_output_missing_on_one_side_is_a_difference() -> None:
    router = {"analytics": peer.multiset("analytics", [(b"P-1", {"basket_id": "ab", "lines": []})])}
    assert peer.compare(router, {}) != []


def test_dead_letters_compare_reason_and_source_but_not_the_wording_or_worker() -> None:
    router = peer.multiset("dlq", [(b"card-1", dead_letter("totals_mismatch", "lines add up to 1", "router-0"))])
    same = peer.multiset("dlq", [(b"card-1", dead_letter("totals_mismatch", "other words", "kstreams-app"))])
    other_reason = peer.multiset("dlq", [(b"card-1", dead_letter("negative_amount", "lines add up to 1", "router-0"))])
    assert peer.compare({"dlq": router}, {"dlq": same}) == []
    assert peer.compare({"dlq": router}, {"dlq": other_reason}) != []


def test_the_key_is_compared() -> None:
    a = peer.multiset("customer", [(b"card-1", purchase("r1"))])
    b = peer.multiset("customer", [(b"P-1", purchase("r1"))])
    assert peer.compare({"customer": a}, {"customer": b}) != []
