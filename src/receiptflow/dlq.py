"""The dead-letter topic as an operator sees it: list what was rejected and why; replay it after a fix.

``checkouts.dlq`` holds one ``dead_letter`` record per rejected input: the reason code, a message,
the culprit field, the original key and bytes and where they came from (topic, partition, offset).
``replay`` sends the original bytes, unchanged and with their original key, back to their source
topic (or another one) so that a fixed processor sees them again. Replaying is safe to repeat:
the router drops a receipt id it has already routed, and input that is still bad lands in the
dead-letter topic again, with a new offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from .codec import Codec
from .config import Settings
from .consume import partitions_of, reader
from .errors import BrokerError
from .topics import TopicNames


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
