"""The dead-letter topic as an operator sees it: list what was rejected and why; replay it after a fix.

``checkouts.dlq`` holds one ``dead_letter`` record per rejected input: the reason code, a message,
the culprit field, the original key and bytes and where they came from (topic, partition, offset).
``replay`` sends the original bytes, unchanged and with their original key, back to their source
topic (or another one) so that a fixed processor sees them again. Replaying is safe to repeat:
the router drops a receipt id it has already routed, and input that is still bad lands in the
dead-letter topic again, with a new offset.

Rejecting: :func:`decode_consent` is how every reader of ``consents`` (router, profile agent, sink)
reads a record, and :class:`DeadLetterProducer` how the profile agent and the sink reject one they
cannot decode, before they go on with the next. A dead letter is written before the reader's
position moves past its record (the agent's offset commit, the sink's offsets in the warehouse),
with an idempotent producer and the record's own key: a crash in between writes it again on the
next start, so the dead-letter topic holds every rejected record at least once; a repeat has the
same source topic, partition and offset and is harmless (its replay is rejected again, or applied
once more by the idempotent consent readers after a fix).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from .codec import Codec
from .config import Settings
from .consume import partitions_of, reader
from .errors import BrokerError, DecodeError, ValidationError
from .metrics import Metrics
from .models import ConsentChange
from .processors.core import dead_letter_record
from .topics import TopicNames

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    offset: int
    reason: str
    message: str
    field: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    original_key: bytes | None
    original_value: bytes | None
    processor: str

    @classmethod
    def from_record(cls, offset: int, d: dict[str, Any]) -> DeadLetter:
        return cls(
            offset=offset,
            reason=d["reason"],
            message=d["message"],
            field=d["field"],
            source_topic=d["source_topic"],
            source_partition=d["source_partition"],
            source_offset=d["source_offset"],
            original_key=d["original_key"],
            original_value=d["original_value"],
            processor=d["processor"],
        )


def iter_dead_letters(
    settings: Settings, *, from_offset: int = 0, reason: str | None = None, idle: float = 5.0
) -> Iterator[DeadLetter]:
    """Dead letters from ``from_offset`` to the end of the topic (read-committed), optionally of one reason."""
    topic = TopicNames(settings.topic_prefix).checkouts_dlq
    codec = Codec()
    consumer = reader(settings, "dlq")
    try:
        partitions = partitions_of(consumer, topic)
        consumer.assign([TopicPartition(topic, p, from_offset) for p in partitions])
        at_end: set[int] = set()
        while len(at_end) < len(partitions):
            msg = consumer.poll(idle)
            if msg is None:
                break
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    continue
                raise BrokerError(f"reading {topic} failed: {err}")
            letter = DeadLetter.from_record(msg.offset() or 0, codec.decode(msg.value(), expect="dead_letter").value)
            if reason is None or letter.reason == reason:
                yield letter
    except KafkaException as exc:
        raise BrokerError(f"reading {topic} failed: {exc}") from exc
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class ReplayResult:
    replayed: int
    skipped_empty: int
    last_offset: int | None


def replay(
    settings: Settings,
    *,
    from_offset: int = 0,
    reason: str | None = None,
    to_topic: str | None = None,
    progress: Any = None,
) -> ReplayResult:
    """Send dead letters' original bytes back to their source topic (or ``to_topic``); waits for acks."""
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    failures: list[str] = []

    def report(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    replayed = skipped = 0
    last: int | None = None
    for letter in iter_dead_letters(settings, from_offset=from_offset, reason=reason):
        last = letter.offset
        if letter.original_value is None:
            skipped += 1  # a tombstone has nothing to replay
            continue
        topic = to_topic or letter.source_topic
        while True:
            try:
                producer.produce(topic, value=letter.original_value, key=letter.original_key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        replayed += 1
        if progress is not None:
            progress(replayed)
    remaining = producer.flush(60)
    if remaining or failures:
        raise BrokerError(f"replay: {remaining} not acknowledged, {len(failures)} failed: {failures[:3]}")
    return ReplayResult(replayed, skipped, last)


# --- rejecting input -----------------------------------------------------------------------------
def decode_consent(codec: Codec, value: bytes | None) -> ConsentChange | None:
    """A ``consents`` record's change; None for a tombstone (an erased card's key).

    Raises :class:`ValidationError` (a :class:`DecodeError`) when the bytes are not a framed
    ``consent_change`` record: the caller dead-letters it.
    """
    if value is None:
        return None
    decoded = codec.decode(value, expect="consent_change")
    try:
        return ConsentChange.from_avro(decoded.value)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError("undecodable", f"not a consent change: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record a reader could not use, where it was read, and why."""

    error: ValidationError
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class DeadLetterProducer:
    """Writes rejected records to the dead-letter topic and waits until the broker has them.

    ``processor`` names the rejecting component in each dead letter. The Kafka producer is created
    on first use (an app that never rejects anything opens no connection for it).
    """

    def __init__(
        self, settings: Settings, processor: str, *, codec: Codec | None = None, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.topic = TopicNames(settings.topic_prefix).checkouts_dlq
        self.codec = codec or Codec()
        self.metrics = metrics
        self._producer: Producer | None = None

    def send(self, rejected: list[Rejected], timeout: float = 30.0) -> None:
        """Dead-letter ``rejected``; returns once every one is acknowledged, else raises BrokerError."""
        if not rejected:
            return
        if self._producer is None:
            try:
                self._producer = Producer(
                    self.settings.kafka_config(
                        **{"enable.idempotence": True, "acks": "all", "client.id": f"{self.processor}-dlq"}
                    )
                )
            except KafkaException as exc:
                raise BrokerError(f"cannot create the dead-letter producer: {exc}") from exc
        failures: list[str] = []

        def report(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        now = datetime.now(UTC)
        try:
            for r in rejected:
                record = dead_letter_record(
                    r.error,
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    key=r.key,
                    value=r.value,
                    now=now,
                    processor=self.processor,
                )
                # The original key, as the router does: a repeat after a crash lands beside the first.
                self._producer.produce(
                    self.topic, key=r.key, value=self.codec.encode("dead_letter", record), on_delivery=report
                )
            remaining = self._producer.flush(timeout)
        except (KafkaException, BufferError) as exc:
            raise BrokerError(f"cannot write to {self.topic}: {exc}") from exc
        if remaining or failures:
            raise BrokerError(f"{self.topic}: {remaining} dead letters not acknowledged, failures: {failures[:3]}")
        for r in rejected:
            log.warning("dead-lettered %s[%d]@%d (%s): %s", r.topic, r.partition, r.offset, self.processor, r.error)
            if self.metrics is not None:
                self.metrics.dead_letters_total.labels(r.error.reason).inc()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
