"""Erasure's pure logic: the step plan of a run (fresh or resumed), the steps an audit log shows done,
how long a topic may keep a card's records, the erased-cards record's encoding, and no built-in salt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from receiptflow.card_hash import CardHasher
from receiptflow.erasures import decode_erasure, encode_erasure
from receiptflow.jobs.subject import STEPS, missing_from_topic, plan_erasure, steps_done, topic_retention
from receiptflow.processors.profiles.store import RedisProfileStore

NOW = datetime(2026, 12, 1, 15, tzinfo=UTC)
DAY_MS = 86_400_000


def test_a_first_erasure_records_the_card_before_any_store() -> None:
    plan = plan_erasure(None, NOW)
    assert plan.steps == STEPS and plan.steps[0] == "record"
    assert (plan.erased_at, plan.resumed) == (NOW, False)


def test_a_resumed_erasure_keeps_the_first_time_and_does_every_store_step_again() -> None:
    first = NOW - timedelta(hours=3)
    plan = plan_erasure(first, NOW)
    assert plan.resumed and plan.erased_at == first
    # Stores are done again (idempotent, the stricter reading), the retraction is published again
    # (consumers apply it idempotently); the record is not written twice.
    assert plan.steps == ("retraction", "profile", "warehouse", "consents")


def test_steps_done_reads_only_the_subjects_entries_newest_last() -> None:
    entries = [
        {"subject": "h1", "step": "record", "at": "t1"},
        {"subject": "h2", "step": "profile", "at": "t2"},
        {"subject": "h1", "step": "profile", "at": "t3"},
        {"subject": "h1", "step": "profile", "at": "t4"},
        {"subject": "h1", "step": "unknown", "at": "t5"},
        {"subject": "h1", "at": "t6"},  # an entry of the older one-entry format: no step
    ]
    assert steps_done(entries, "h1") == {"record": "t1", "profile": "t4"}
    assert steps_done(entries, "h3") == {}


def test_a_delete_topic_keeps_records_up_to_retention_plus_a_segment() -> None:
    cfg = {"cleanup.policy": "delete", "retention.ms": str(14 * DAY_MS), "segment.ms": str(7 * DAY_MS)}
    doc = topic_retention("checkouts", cfg, NOW, erased=True)
    assert doc["may_hold_until"] == (NOW + timedelta(days=21)).isoformat()
    assert doc["retention_ms"] == 14 * DAY_MS and doc["cleanup_policy"] == "delete"
    # The same bound for a card still in use, counted from now.
    assert topic_retention("checkouts", cfg, NOW, erased=False)["may_hold_until"] == doc["may_hold_until"]


def test_infinite_retention_has_no_bound() -> None:
    doc = topic_retention("t", {"cleanup.policy": "delete", "retention.ms": "-1"}, NOW, erased=True)
    assert doc["may_hold_until"] is None and "-1" in doc["why"]


def test_a_compacted_topic_keeps_a_live_card_for_ever_and_an_erased_one_until_compaction() -> None:
    cfg = {
        "cleanup.policy": "compact",
        "max.compaction.lag.ms": str(7 * DAY_MS),
        "delete.retention.ms": str(DAY_MS),
    }
    assert topic_retention("consents", cfg, NOW, erased=False)["may_hold_until"] is None
    erased = topic_retention("consents", cfg, NOW, erased=True)
    assert erased["may_hold_until"] == (NOW + timedelta(days=8)).isoformat()
    assert erased["retention_ms"] is None and erased["max_compaction_lag_ms"] == 7 * DAY_MS
    # Without max.compaction.lag.ms nothing bounds when compaction gets to it.
    unbounded = {"cleanup.policy": "compact", "max.compaction.lag.ms": "9223372036854775807"}
    assert topic_retention("consents", unbounded, NOW, erased=True)["may_hold_until"] is None


def test_compact_and_delete_end_at_the_first_bound() -> None:
    cfg = {"cleanup.policy": "compact,delete", "retention.ms": str(14 * DAY_MS), "segment.ms": str(DAY_MS)}
    assert topic_retention("seen", cfg, NOW, erased=False)["may_hold_until"] == (NOW + timedelta(days=15)).isoformat()
    cfg["max.compaction.lag.ms"] = str(2 * DAY_MS)
    cfg["delete.retention.ms"] = str(DAY_MS)
    assert topic_retention("seen", cfg, NOW, erased=True)["may_hold_until"] == (NOW + timedelta(days=3)).isoformat()


def test_erasure_records_round_trip_and_never_carry_a_card_id() -> None:
    key, value = encode_erasure("0f" * 16, NOW)
    assert key == b"0f" * 16 and b"erased_at" in value
    assert decode_erasure(key, value, 0) == ("0f" * 16, NOW)
    # A value this code cannot read still erases its key, at the record's time (the stricter reading).
    ms = int(NOW.timestamp() * 1000)
    assert decode_erasure(b"ab", b"not json", ms) == ("ab", NOW)
    assert decode_erasure(None, value, ms) is None
    with pytest.raises(ValueError, match="salted hash"):
        encode_erasure("", NOW)


def test_no_hasher_or_store_works_without_the_installs_salt() -> None:
    with pytest.raises(ValueError, match="erasure salt"):
        CardHasher(b"")
    with pytest.raises(ValueError, match="erasure salt"):
        RedisProfileStore(redis.Redis(), erasure_salt=b"")
    # Different installs, different hashes: nothing links a hash to a card without the salt.
    assert CardHasher(b"a" * 32)("2710000000001") != CardHasher(b"b" * 32)("2710000000001")


def test_earlier_erasures_missing_from_the_topic_keep_the_warehouse_time() -> None:
    earlier = NOW - timedelta(days=40)
    naive = datetime(2026, 10, 1, 8)  # a warehouse that returns timestamps without a zone: UTC
    missing = missing_from_topic(
        {"on-topic": earlier},
        ["on-topic", "redis-only", "both"],
        [("both", earlier), ("warehouse-only", naive), ("no-time", None)],
        NOW,
    )
    assert missing == {
        "redis-only": NOW,
        "both": earlier,
        "warehouse-only": naive.replace(tzinfo=UTC),
        "no-time": NOW,
    }
    assert missing_from_topic({"a": NOW}, ["a"], [("a", earlier)], NOW) == {}
