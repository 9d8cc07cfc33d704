"""The peers benchmark's comparison: a peer's outputs against the router's, as multisets per topic."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any


def _compare() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "peer_compare.py"
    spec = importlib.util.spec_from_file_location("peer_compare", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("peer_compare", module)
    spec.loader.exec_module(module)
    return module


compare = _compare()
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def purchase(rid: str, *, pdm: bool = True, processed: int = 0, total: int = 1000) -> dict[str, Any]:
    return {
        "receipt_id": rid,
        "card_id": "6001",
        "total_cents": total,
        "granularity": "line",
        "consent": {"product_data_marketing": pdm, "electronic_marketing": True, "known": True},
        "processed_at": datetime(2026, 12, 1, 11, 0, processed, tzinfo=UTC),
    }


def dead_letter(offset: int, *, reason: str = "future_event_time", now: str = "2026-12-01T23:50:45", by: str = "r-0"):
    return {
        "reason": reason,
        "message": f"event_time 2026-12-03T21:53:16.574000+02:00 is after {now}.028000+00:00",
        "field": "event_time",
        "source_topic": "checkouts",
        "source_partition": 1,
        "source_offset": offset,
        "original_key": b"bad-1",
        "original_value": b"\x00\x01",
        "failed_at": T0,
        "processor": by,
    }


def outputs(customer: list[Any], dlq: list[Any] = (), marketing: list[Any] = ()) -> dict[str, list[Any]]:
    return {
        "purchases.customer": [(b"6001", p) for p in customer],
        "purchases.marketing": [(b"6001", p) for p in marketing],
        "purchases.baskets": [],
        "checkouts.dlq": [(b"bad-1", d) for d in dlq],
    }


def test_same_records_in_another_order_are_equal() -> None:
    router = outputs([purchase("a"), purchase("b"), purchase("c")], [dead_letter(7)])
    peer = outputs([purchase("c"), purchase("a"), purchase("b")], [dead_letter(7)])
    assert compare.first_difference(router, peer) is None


def test_processing_times_and_the_worker_name_are_ignored() -> None:
    router = outputs([purchase("a", processed=1)], [dead_letter(7, now="2026-12-01T23:50:45", by="router-0")])
    peer = outputs([purchase("a", processed=59)], [dead_letter(7, now="2026-12-01T23:51:03", by="quixstreams-peer")])
    assert compare.first_difference(router, peer) is None


def test_a_different_consent_is_found_with_its_receipt_and_field() -> None:
    router = outputs([purchase("a"), purchase("b", pdm=True)])
    peer = outputs([purchase("a"), purchase("b", pdm=False)])
    diff = compare.first_difference(router, peer, "faust")
    assert diff is not None
    assert diff.startswith("purchases.customer: 2 records from the router, 2 from faust")
    assert "(1 only in the router's, 1 only in faust's)" in diff
    assert "b differs: consent" in diff
    assert "'product_data_marketing': True" in diff and "'product_data_marketing': False" in diff


def test_a_missing_record_is_found() -> None:
    router = outputs([purchase("a")], marketing=[purchase("a"), purchase("b")])
    peer = outputs([purchase("a")], marketing=[purchase("a")])
    assert compare.first_difference(router, peer) == (
        "purchases.marketing: 2 records from the router, 1 from peer (1 only in the router's, 0 only in peer's);"
        " e.g. b missing from peer's"
    )


def test_a_repeated_record_counts_as_a_difference() -> None:
    # Multisets, not sets: a duplicate that dedup should have dropped is a difference.
    router = outputs([purchase("a"), purchase("b")])
    peer = outputs([purchase("a"), purchase("b"), purchase("b", processed=30)])
    diff = compare.first_difference(router, peer)
    assert diff is not None and "0 only in the router's, 1 only in peer's" in diff and "e.g. b only in peer's" in diff


def test_a_different_key_is_found() -> None:
    router = outputs([purchase("a")])
    peer = {**outputs([]), "purchases.customer": [(b"S1", purchase("a"))]}
    diff = compare.first_difference(router, peer)
    assert diff is not None and "key b'6001' in the router's, b'S1' in peer's" in diff


def test_a_dead_letter_with_another_reason_is_found() -> None:
    router = outputs([], [dead_letter(7)])
    peer = outputs([], [dead_letter(7, reason="schema")])
    diff = compare.first_difference(router, peer)
    assert diff is not None and "checkouts/1/7 differs: reason 'future_event_time'" in diff


def _undecodable(offset: int, message: str) -> dict[str, Any]:
    return {**dead_letter(offset, reason="undecodable"), "message": message, "field": None}


def test_the_avro_librarys_words_for_a_broken_body_are_ignored_but_not_the_subject() -> None:
    router = outputs([], [_undecodable(3, "cannot decode 'checkout' body: Expected -636598 bytes, read 9")])
    java = "cannot decode 'checkout' body: org.apache.avro.AvroRuntimeException: Malformed data. Length is negative"
    assert compare.first_difference(router, outputs([], [_undecodable(3, java)])) is None
    other = outputs([], [_undecodable(3, "cannot decode 'consent_change' body: Expected -636598 bytes, read 9")])
    diff = compare.first_difference(router, other)
    assert diff is not None and "checkouts/1/3 differs: message" in diff


def test_table_shows_rates_per_worker_ratios_and_the_first_difference() -> None:
    rows = [
        {"path": "router (exactly-once)", "workers": 1, "receipts_per_s": 2000.0, "difference": None},
        {"path": "quixstreams (exactly-once)", "workers": 1, "receipts_per_s": 1000.0, "difference": None},
        {"path": "naive faust agent", "workers": 1, "receipts_per_s": 500.0, "difference": "x differs"},
        {"path": "Kafka Streams (exactly-once)", "workers": 1, "error": "did not start: no jar"},
        {"path": "raw consume→produce", "workers": 1, "receipts_per_s": 40000.0, "compared": False},
    ]
    lines = compare.table(rows).splitlines()
    assert lines[2] == "| router (exactly-once) | 2,000 | 1.00x | (the reference) |"
    assert lines[3] == "| quixstreams (exactly-once) | 1,000 | 0.50x | yes |"
    assert lines[4] == "| naive faust agent | 500 | 0.25x | no: x differs |"
    assert lines[5] == "| Kafka Streams (exactly-once) | - | - | did not start: no jar |"
    assert lines[6] == "| raw consume→produce | 40,000 | 20.00x | (not compared: writes the input unchanged) |"


def test_the_cards_of_differing_records_are_named_so_their_input_can_be_kept() -> None:
    same = [purchase("r1"), purchase("r2")]
    assert compare.differing_cards(outputs(same), outputs([purchase("r1", processed=9), purchase("r2")])) == []
    other = dict(purchase("r3"), card_id="6002")
    peer = dict(purchase("r3", pdm=False), card_id="6002")
    cards = compare.differing_cards(outputs([*same, other]), outputs([*same, peer]))
    assert cards == ["6002"]
    # A record only in the peer's output and one missing from it both count; a limit holds.
    missing = compare.differing_cards(outputs([*same, other]), outputs(same))
    assert missing == ["6002"]
    many = [dict(purchase(f"x{i}"), card_id=f"70{i}") for i in range(8)]
    assert len(compare.differing_cards(outputs(many), outputs([]), limit=3)) == 3
