"""Kafka records → the sink's records (:mod:`.rows`), or rejected records to dead-letter.

No single record stops the sink: a record it cannot use -- one that does not decode (``consents`` is
input from outside: registers, the customer app), a purchase with a value past its column's type
(:func:`~receiptflow.sinks.rows.warehouse_problem`), or on ``purchases.analytics`` anything but a
sound anonymous cell (:func:`~receiptflow.sinks.rows.cell_problem`), an anonymous basket of before
the analytics cells included -- becomes a :class:`~receiptflow.dlq.Rejected` with its reason,
position and original bytes, for the loop to dead-letter before it stores the offsets past it
(:mod:`.runner`).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from ..cells import Cell
from ..codec import Codec
from ..consent_codec import decode_consent, written_at
from ..dlq import Rejected
from ..errors import BrokerError, ValidationError
from ..models import Purchase
from ..topics import TopicNames
from ..validation import CONSENT_MAX_AGE
from .rows import (
    AnalyticsRejected,
    AnyRecord,
    CellRecord,
    SinkConsentRecord,
    SinkRecord,
    cell_problem,
    warehouse_problem,
)

log = logging.getLogger(__name__)

# What decoding a record that is not what its topic holds raises (anything else is a bug, and stops the sink).
_UNDECODABLE = (ValidationError, KeyError, ValueError, TypeError)


def decode_batch(
    codec: Codec,
    messages: list[Message],
    names: TopicNames | None = None,
    *,
    consent_max_age: timedelta = CONSENT_MAX_AGE,
) -> list[AnyRecord]:
    """The batch's records; a record the warehouse cannot use is a :class:`~receiptflow.dlq.Rejected` to
    dead-letter (no single record stops the sink).

    With ``names``, records of the consents topic are consent changes and records of the analytics
    topic anonymous cells; everything else is a customer purchase. An ``analytics_basket`` record on
    the analytics topic was written before the analytics became cells: it is dead-lettered (reason
    ``retired_subject``), never stored. A ``purchase`` record there is older still (before basket
    pseudonyms): it carries the receipt id, so it is skipped (logged), never stored or copied.
    Neither is a consent tombstone (an erased card). A consent change is judged at its record's
    append time (older than ``consent_max_age`` then, or dated ahead of it: dead-lettered). Broker
    events in the batch are logged, or raised as :class:`BrokerError` when fatal.
    """
    batch: list[AnyRecord] = []
    for m in messages:
        if _is_event(m):
            continue
        record = decode_record(codec, m, names, consent_max_age=consent_max_age)
        if record is not None:
            batch.append(record)
    _log_retired(batch)
    return batch


def decode_record(
    codec: Codec, m: Message, names: TopicNames | None = None, *, consent_max_age: timedelta = CONSENT_MAX_AGE
) -> AnyRecord | None:
    """One record (see :func:`decode_batch`); None for one that is neither stored nor dead-lettered."""
    topic = str(m.topic())
    if names is not None and topic == names.consents:
        return _consent(codec, m, consent_max_age)
    if names is not None and topic == names.purchases_analytics:
        return _cell(codec, m)
    return _purchase(codec, m)


def _is_event(m: Message) -> bool:
    """Whether ``m`` is a broker event rather than a record (raises when the event is fatal)."""
    err = m.error()
    if err is None:
        return False
    if err.fatal():
        raise BrokerError(f"sink consumer failed: {err}")
    # Transient broker/network conditions, reported as events; librdkafka retries by itself.
    log.warning("sink consumer: %s", err)
    return True


def _where(m: Message) -> str:
    return f"{m.topic()}[{m.partition()}]@{m.offset()}"


def _position(m: Message) -> tuple[str, int, int]:
    return str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)


def _rejected(error: ValidationError, m: Message, *, analytics: bool = False) -> Rejected:
    """``m`` rejected for ``error``, with its position and original bytes (``analytics``: a record of
    the analytics topic, whose position the analytics store keeps)."""
    topic, partition, offset = _position(m)
    kind = AnalyticsRejected if analytics else Rejected
    return kind(error, topic, partition, offset, m.key(), m.value())


def _undecodable(exc: Exception, m: Message, *, analytics: bool = False) -> Rejected:
    error = exc if isinstance(exc, ValidationError) else ValidationError("undecodable", str(exc))
    log.error("undecodable record at %s, dead-lettered: %s", _where(m), error)
    return _rejected(error, m, analytics=analytics)


def _consent(codec: Codec, m: Message, max_age: timedelta) -> SinkConsentRecord | Rejected | None:
    if m.value() is None:
        # A tombstone: the card was erased. Its audit rows go with `receiptflow erase`; there is no
        # change to record.
        log.info("consent tombstone at %s (erased card): nothing to audit", _where(m))
        return None
    appended = _appended_ms(m)
    try:
        change = decode_consent(codec, m.value(), written_at(appended, datetime.now(UTC)), max_age)
    except ValidationError as exc:
        log.warning("undecodable consent record at %s, skipped: %s", _where(m), exc)
        return _rejected(exc, m)
    except _UNDECODABLE as exc:
        return _undecodable(exc, m)
    assert change is not None  # tombstones were handled above
    return SinkConsentRecord(change, *_position(m), appended_ms=appended)


def _appended_ms(m: Message) -> int:
    """The record's broker append time (ms; ``consents`` is a LogAppendTime topic); 0 when it has none."""
    kind, at = m.timestamp()
    return at if kind != TIMESTAMP_NOT_AVAILABLE and at > 0 else 0


# The reason of an anonymous basket of before the analytics cells, left on the analytics topic.
RETIRED = "retired_subject"


def _cell(codec: Codec, m: Message) -> CellRecord | Rejected | None:
    try:
        decoded = codec.decode(m.value())
        if decoded.subject == "purchase":
            log.warning("analytics record with a receipt id at %s (written by an older processor): skipped", _where(m))
            return None
        if decoded.subject == "analytics_basket":
            # Logged once per batch (_log_retired): after an upgrade the topic may hold many of them.
            return _rejected(
                ValidationError(
                    RETIRED,
                    "an anonymous basket written before the analytics became cells: the warehouse stores "
                    "cells of at least k baskets only, never a basket",
                ),
                m,
                analytics=True,
            )
        if decoded.subject != "analytics_cell":
            raise ValidationError("wrong_subject", f"expected an 'analytics_cell' record, got {decoded.subject!r}")
        cell, k, window_id = Cell.from_avro(decoded.value), int(decoded.value["k"]), str(decoded.value["window_id"])
    except _UNDECODABLE as exc:
        return _undecodable(exc, m, analytics=True)
    problem = cell_problem(cell, k, window_id)
    if problem is not None:
        log.error("analytics cell at %s cannot be stored, dead-lettered: %s", _where(m), problem[1])
        return _rejected(ValidationError(*problem), m, analytics=True)
    return CellRecord(cell, k, *_position(m))


def _log_retired(batch: list[AnyRecord]) -> None:
    retired = Counter(r.topic for r in batch if isinstance(r, Rejected) and r.error.reason == RETIRED)
    for topic, n in retired.items():
        log.warning("%d anonymous basket(s) of before the analytics cells on %s: dead-lettered, not stored", n, topic)


def _purchase(codec: Codec, m: Message) -> SinkRecord | Rejected:
    try:
        purchase = Purchase.from_avro(codec.decode(m.value(), expect="purchase").value)
    except _UNDECODABLE as exc:
        return _undecodable(exc, m)
    problem = warehouse_problem(purchase)
    if problem is not None:
        log.error("record at %s cannot be stored, dead-lettered: %s", _where(m), problem)
        return _rejected(ValidationError("out_of_range", problem), m)
    return SinkRecord(purchase, *_position(m))


def written_stamps(messages: list[Message], batch: list[AnyRecord], customer_topic: str) -> list[int]:
    """Timestamps (ms) of the batch's customer purchases not dead-lettered: their checkouts' append times."""
    rejected = {(r.partition, r.offset) for r in batch if isinstance(r, Rejected) and r.topic == customer_topic}
    return [
        m.timestamp()[1]
        for m in messages
        if m.error() is None and m.topic() == customer_topic and (m.partition(), m.offset()) not in rejected
    ]
