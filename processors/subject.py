"""Subject access and erasure for one loyalty card: ``receiptflow export`` and ``receiptflow erase``.

``export_card`` gathers everything held about a card: the Redis profile (full view, segments), its
consent history (the warehouse's consent audit and the newest state in the profile) and the
warehouse rows (receipts, their items and groups).

``erase_card`` removes it, in an order that keeps the card erased whatever happens next:

1. Redis, in one transaction: the card's salted hash joins the erased-cards record (``rf:erased``,
   no card id kept) and its profile keys are deleted. The live profile scripts check that record,
   so a replayed old purchase or consent change never brings the card back.
2. The warehouse, in one transaction (``sinks.subject``): the salted hash joins the warehouse's
   ``erased_cards`` and the card's rows are deleted. The sink leaves out rows of the cards listed
   there, so neither the live sink nor ``sink replay`` of a retained topic stores them again.
3. A tombstone (null value) for the card's key on the compacted ``consents`` topic, so compaction
   drops its consent history and the router forgets it on its next restore.
4. An audit entry on the Redis stream ``rf:audit:erasures``: when, the salted hash and how much was
   deleted where — never the card id.

Purchase topics are not compacted; their records of the card expire with the topics' retention
(until then both record checks keep them out of the profile store and the warehouse).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from confluent_kafka import KafkaException, Producer

from ..config import Settings
from ..errors import BrokerError, ProfileStoreError
from ..redis_auth import RedisRole
from ..sinks import open_sink
from ..sinks.subject import delete_card, export_rows
from ..topics import TopicNames
from .profile_views import render
from .profiles import ERASED_KEY, RedisProfileStore, profile_key, seen_key

AUDIT_STREAM = "rf:audit:erasures"


def export_card(settings: Settings, card_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Everything held about ``card_id`` as one JSON-ready document (``held`` False when nothing is)."""
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    profile = store.get(card_id)
    sink = open_sink(settings)
    try:
        rows = export_rows(sink, card_id)
    finally:
        sink.close()
    consents = rows.pop("consent_changes")
    doc: dict[str, Any] = {
        "card_id": card_id,
        "exported_at": (now or datetime.now(UTC)).isoformat(),
        "profile": None,
        "consent_history": consents,
        "warehouse": rows,
    }
    if profile is not None:
        doc["profile"] = render(profile, "full", now or datetime.now(UTC), segments=store.segments(card_id))
    doc["held"] = profile is not None or bool(consents) or any(rows.values())
    return doc


@dataclass(frozen=True, slots=True)
class Erasure:
    subject: str  # the salted hash: what the audit log and the erased-cards record keep
    at: datetime
    redis_keys: int
    warehouse_rows: Mapping[str, int]
    tombstones: int
    audit_id: str


def _tombstone(settings: Settings, card_id: str) -> int:
    topic = TopicNames(settings.topic_prefix).consents
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    failed: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    try:
        producer.produce(topic, key=card_id.encode(), value=None, on_delivery=report)
        if producer.flush(30) or failed:
            raise BrokerError(f"tombstone for {topic} not acknowledged: {failed or 'timeout'}")
    except KafkaException as exc:
        raise BrokerError(f"cannot write tombstone to {topic}: {exc}") from exc
    return 1


def erase_card(settings: Settings, card_id: str, now: datetime | None = None) -> Erasure:
    """Erase ``card_id`` everywhere (see the module docstring for the order and why)."""
    at = now or datetime.now(UTC)
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    subject = store.erased_hash(card_id)
    try:
        pipe = store.client.pipeline(transaction=True)
        pipe.sadd(ERASED_KEY, subject)
        pipe.delete(profile_key(card_id), seen_key(card_id))
        _, removed = pipe.execute()
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot erase profile: {exc}") from exc
    sink = open_sink(settings)
    try:
        rows = delete_card(sink, card_id, subject, at)
    finally:
        sink.close()
    tombstones = _tombstone(settings, card_id)
    entry = {
        "at": at.isoformat(),
        "subject": subject,
        "redis_keys": str(removed),
        "warehouse_rows": ",".join(f"{t}={n}" for t, n in sorted(rows.items())),
        "tombstones": str(tombstones),
    }
    try:
        audit_id = str(store.client.xadd(AUDIT_STREAM, entry))  # type: ignore[arg-type]
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot write the erasure audit entry: {exc}") from exc
    return Erasure(subject, at, int(removed), rows, tombstones, audit_id)


def audit_log(settings: Settings) -> list[dict[str, str]]:
    """Every erasure recorded, oldest first."""
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    try:
        entries = store.client.xrange(AUDIT_STREAM)
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot read the erasure audit log: {exc}") from exc
    return [{"id": str(i), **{str(k): str(v) for k, v in fields.items()}} for i, fields in entries]  # type: ignore[union-attr]


def is_erased(settings: Settings, card_id: str) -> bool:
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    try:
        return bool(store.client.sismember(ERASED_KEY, store.erased_hash(card_id)))
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot read the erased-cards record: {exc}") from exc
