"""The dead-letter topic as an operator sees it: list what was rejected and why; replay it after a fix.

``checkouts.dlq`` holds one ``dead_letter`` record per rejected input: the reason code, a message,
the culprit field, the original key and bytes and where they came from (topic, partition, offset).
:func:`replay_letters` sends the original bytes, unchanged and with their original key, back to their source
topic (or another one) so that a fixed processor sees them again. It replays only the dead letters
that existed when it started (the topic's end offsets, taken first), so a processor that rejects
them again while the replay runs does not feed the replay its own output. Each replay remembers
where it stopped (the committed offset of a consumer group of its own, per reason), and the next one
starts there and skips letters whose bytes an earlier replay already sent (rejected again: the cause
is not fixed yet), so running it twice is harmless. ``--from-offset`` starts elsewhere on purpose;
the router drops a receipt id it has already routed.

Rejecting: :class:`DeadLetterProducer` is how the profile agent and the sink reject a record they
cannot decode (a ``consents`` record is read by :func:`receiptflow.consent_codec.decode_consent`, as
every reader of the topic does), before they go on with the next. A dead letter is written before
the reader's position moves past its record (the agent's offset commit, the sink's offsets in the
warehouse), with an idempotent producer and the record's own key: a crash in between writes it again
on the next start, so the dead-letter topic holds every rejected record at least once; a repeat has
the same source topic, partition and offset and is harmless (its replay is rejected again, or
applied once more by the idempotent consent readers after a fix).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from .codec import Codec
from .config import Settings
from .consume import partitions_of, reader
from .errors import BrokerError, ValidationError
from .kafka_read import ReadToEnd
from .metrics import Metrics
from .registry import codec_for
from .topics import TopicNames
from .validation import dead_letter_record

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
    failed_at: datetime | None = None  # when it was rejected (the record's failed_at)

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
            failed_at=d.get("failed_at"),
        )


def iter_dead_letters(
    settings: Settings,
    *,
    from_offset: int = 0,
    reason: str | None = None,
    idle: float = 5.0,
    until: Mapping[int, int] | None = None,
) -> Iterator[DeadLetter]:
    """Dead letters from ``from_offset`` to the end of the topic (read-committed), optionally of one reason.

    With ``until`` (partition -> end offset), each partition is read only up to that offset.
    """
    topic = TopicNames(settings.kafka.topic_prefix).checkouts_dlq
    codec = codec_for(settings)
    consumer = reader(settings, "dlq")
    try:
        partitions = partitions_of(consumer, topic)
        stops = None if until is None else {(topic, p): until.get(p, 0) for p in partitions}
        # A partition whose end is not past ``from_offset`` has nothing to read.
        wanted = [
            TopicPartition(topic, p, from_offset)
            for p in partitions
            if stops is None or stops[(topic, p)] > from_offset
        ]
        letters = ReadToEnd(consumer, wanted, what=f"reading {topic}", stops=stops, stop_when_idle=True)
        for msg in letters.records(1, idle):
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
    skipped_repeats: int = 0  # letters whose bytes an earlier replay already sent (rejected again)
    started_at: int = 0


def _digest(letter: DeadLetter) -> bytes:
    return hashlib.blake2b(
        (letter.original_key or b"") + b"\x00" + (letter.original_value or b""), digest_size=16
    ).digest()


def _replay_group(settings: Settings, reason: str | None) -> str:
    return f"{settings.kafka.topic_prefix}receiptflow-dlq-replay-{reason or 'all'}"


def replay_letters(
    settings: Settings,
    *,
    from_offset: int | None = None,
    reason: str | None = None,
    to_topic: str | None = None,
    progress: Any = None,
) -> ReplayResult:
    """Send dead letters' original bytes back to their source topic (or ``to_topic``); waits for acks.

    Only the letters present when it starts; from ``from_offset``, else from where the last replay of
    this reason stopped (see the module docstring).
    """
    topic = TopicNames(settings.kafka.topic_prefix).checkouts_dlq
    positions = Consumer(
        settings.kafka_config(**{"group.id": _replay_group(settings, reason), "enable.auto.commit": False})
    )
    try:
        try:
            partitions = partitions_of(positions, topic)
            ends = {p: positions.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in partitions}
            committed = positions.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        except KafkaException as exc:
            raise BrokerError(f"cannot read the positions of {topic}: {exc}") from exc
        stored = [tp.offset for tp in committed if tp.offset != OFFSET_INVALID and tp.offset >= 0]
        start = from_offset if from_offset is not None else (min(stored) if stored else 0)
        result = _send_letters(settings, start, reason, to_topic, progress, ends)
        try:
            positions.commit(offsets=[TopicPartition(topic, p, end) for p, end in ends.items()], asynchronous=False)
        except KafkaException as exc:
            raise BrokerError(f"replayed, but could not record where it stopped: {exc}") from exc
        return result
    finally:
        positions.close()


def _send_letters(
    settings: Settings,
    start: int,
    reason: str | None,
    to_topic: str | None,
    progress: Any,
    ends: Mapping[int, int],
) -> ReplayResult:
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    failures: list[str] = []

    def report(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    replayed = skipped = repeats = 0
    last: int | None = None
    # One pass from the beginning: the letters before ``start`` are what earlier replays sent (their
    # bytes coming back means rejected again); those from ``start`` on are this replay's.
    earlier: set[bytes] = set()
    for letter in iter_dead_letters(settings, reason=reason, until=ends):
        if letter.offset < start:
            earlier.add(_digest(letter))
            continue
        last = letter.offset
        if letter.original_value is None:
            skipped += 1  # a tombstone has nothing to replay
            continue
        digest = _digest(letter)
        if digest in earlier:
            repeats += 1
            continue
        earlier.add(digest)  # the same bytes twice in the topic are sent once
        target = to_topic or letter.source_topic
        while True:
            try:
                producer.produce(target, value=letter.original_value, key=letter.original_key, on_delivery=report)
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
    return ReplayResult(replayed, skipped, last, repeats, start)


# --- rejecting input -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rejected:
    """A record a reader could not use, where it was read, and why."""

    error: ValidationError
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def letter(self, now: datetime, processor: str) -> dict[str, Any]:
        """The dead-letter record of this rejection, as ``processor`` writes it at ``now``."""
        return dead_letter_record(
            self.error,
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            key=self.key,
            value=self.value,
            now=now,
            processor=processor,
        )


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
        self.topic = TopicNames(settings.kafka.topic_prefix).checkouts_dlq
        self.codec = codec or codec_for(settings)
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
                record = r.letter(now, self.processor)
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
