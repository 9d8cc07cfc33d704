"""The pure part of ``receiptflow erase`` and ``export``: which steps a run does, which are done, and how
long a topic may keep a card's records. No I/O; ``jobs.subject`` is the shell around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# The erasure's steps, in the order they run (see ``jobs.subject`` for why this order).
STEPS = ("record", "retraction", "profile", "warehouse", "consents")

# Kafka's "no limit" for a *.lag.ms setting (Long.MAX_VALUE).
_NO_LIMIT_MS = 9_223_372_036_854_775_807
_DEFAULT_SEGMENT_MS = 7 * 24 * 3600 * 1000
_DEFAULT_DELETE_RETENTION_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class ErasurePlan:
    """What one ``erase`` run does: the time it records and whether the topic record must be written."""

    erased_at: datetime  # the first erasure's time when resuming, else now
    resumed: bool  # the card was already on the erased-cards topic
    steps: tuple[str, ...]  # steps to run, in order


def plan_erasure(recorded_at: datetime | None, now: datetime) -> ErasurePlan:
    """The steps of an ``erase`` run, given when the erased-cards topic recorded the card (None: never).

    Every store step runs on every run, also when an earlier run did it: each is idempotent, and a
    card can have come back in the meantime where nothing checks the record (a consent change sent
    after the erasure needs a new tombstone), so doing a step again is the stricter reading. Only the
    topic record is not written again; its time stays the first erasure's.
    """
    if recorded_at is None:
        return ErasurePlan(now, False, STEPS)
    return ErasurePlan(recorded_at, True, STEPS[1:])


def steps_done(entries: Sequence[Mapping[str, str]], subject: str) -> dict[str, str]:
    """Per step, the time of its newest audit entry for ``subject`` (entries oldest first)."""
    done: dict[str, str] = {}
    for e in entries:
        if e.get("subject") == subject and e.get("step") in STEPS:
            done[e["step"]] = e.get("at", "")
    return done


def topic_retention(topic: str, config: Mapping[str, str], since: datetime, *, erased: bool) -> dict[str, Any]:
    """How long ``topic`` (its effective ``config``) may keep records of a card written up to ``since``.

    ``since`` is the erasure time for an erased card, else now. Kafka deletes whole log segments, so
    a record may outlive ``retention.ms`` by up to ``segment.ms`` (a segment is rolled at the latest
    then, and deleted once its newest record is older than the retention). On a compacted topic the
    records of a key before its tombstone become eligible for compaction ``max.compaction.lag.ms``
    after it (when that is set), and the tombstone itself — whose key is the card id — is kept
    ``delete.retention.ms`` after that; without an erasure, compaction keeps the card's newest record
    for ever. ``may_hold_until`` is None when no time bound exists.
    """
    policy = {p.strip() for p in config.get("cleanup.policy", "delete").split(",") if p.strip()}
    segment = int(config.get("segment.ms", _DEFAULT_SEGMENT_MS))
    retention = int(config.get("retention.ms", -1))
    max_lag = int(config.get("max.compaction.lag.ms", _NO_LIMIT_MS))
    delete_retention = int(config.get("delete.retention.ms", _DEFAULT_DELETE_RETENTION_MS))
    by_retention: datetime | None = None
    by_compaction: datetime | None = None
    why: list[str] = []
    if "delete" in policy:
        if retention >= 0:
            by_retention = since + timedelta(milliseconds=retention + segment)
            why.append("deleted at the latest retention.ms + segment.ms after it was written")
        else:
            why.append("retention.ms is -1: kept until deleted by hand")
    if "compact" in policy:
        if not erased:
            why.append("compacted: the card's newest record is kept until it is erased")
        elif max_lag < _NO_LIMIT_MS:
            by_compaction = since + timedelta(milliseconds=max_lag + delete_retention)
            why.append(
                "compacted after the tombstone within max.compaction.lag.ms; the tombstone (the card id as "
                "key) is kept delete.retention.ms more"
            )
        else:
            why.append("compacted after the tombstone, but max.compaction.lag.ms sets no time bound")
    # Either mechanism removes the records: the first bound that exists ends them.
    bounds = [b for b in (by_retention, by_compaction) if b is not None]
    until = min(bounds) if bounds else None
    return {
        "topic": topic,
        "cleanup_policy": ",".join(sorted(policy)),
        "retention_ms": retention if "delete" in policy else None,
        "segment_ms": segment,
        "max_compaction_lag_ms": max_lag if "compact" in policy and max_lag < _NO_LIMIT_MS else None,
        "written_up_to": since.isoformat(),
        "may_hold_until": None if until is None else until.isoformat(),
        "why": "; ".join(why),
    }


def missing_from_topic(
    on_topic: Mapping[str, datetime],
    in_profiles: Iterable[str],
    in_warehouse: Iterable[tuple[str, datetime | None]],
    now: datetime,
) -> dict[str, datetime]:
    """Hashes the stores record as erased that the erased-cards topic lacks, with their erasure time
    (the warehouse's when it has one, else ``now``; the earliest when both have it) (pure)."""
    found: dict[str, datetime] = {str(h): now for h in in_profiles}
    for h, at in in_warehouse:
        when = now if at is None else (at if at.tzinfo is not None else at.replace(tzinfo=UTC))
        found[str(h)] = min(when, found.get(str(h), when))
    return {h: at for h, at in found.items() if h not in on_topic}
