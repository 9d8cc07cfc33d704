"""The dead-letter topic as an operator sees it: list what was rejected and why; replay it after a fix.

``checkouts.dlq`` holds one ``dead_letter`` record per rejected input and consumer: the reason code, a
message, the culprit field, where the record came from (topic, partition, offset), which consumer
rejected it (``processor`` and ``consumer_group``: one source record rejected by the router, the
profile agent and the sink is three letters), the card's salted hash, and the original key and value
sealed under the card's data key (:mod:`.dlq_write` writes them; docs/privacy.md, Dead letters).
Listing needs no key and shows no card id.

:func:`replay_letters` opens each letter (:class:`LetterOpener`) and sends the original bytes, unchanged
and with their original key, back to their source topic (or another one) so that a fixed processor
sees them again. A letter of an erased card does not open (its data key went with the erasure, or it
kept nothing): it is skipped and counted, never restored. Replay takes only the dead letters that
existed when it started (the topic's end offsets, taken first), so a processor that rejects them again
while the replay runs does not feed the replay its own output. Each replay remembers where it stopped
(the committed offset of a consumer group of its own, per reason), and the next one starts there and
skips letters that the same consumer wrote for the same bytes of the same source topic before it
(:func:`~receiptflow.dlq_seal.replay_identity`: an earlier replay sent them and they were rejected
again, their cause is not fixed yet), so running it twice is harmless. Letters of this replay that
hold the same bytes of the same source topic (one record rejected by several consumers, or a letter
written twice after a crash) send that record once: every consumer of the topic reads it.
``--from-offset`` starts elsewhere on purpose; the router drops a receipt id it has already routed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from .card_hash import CardHasher
from .codec import Codec
from .config import Settings
from .consume import partitions_of, reader
from .dlq_seal import (
    PSEUDONYMOUS_TOPICS,
    Original,
    Payload,
    associated_data,
    card_of,
    open_sealed,
    record_digest,
    replay_identity,
)
from .dlq_vault import INSTALL_SUBJECT, KeyState, RedisVault, Vault
from .dlq_write import DeadLetterProducer, LetterSealer, Rejected
from .errors import BrokerError, SealError
from .kafka_read import ReadToEnd
from .registry import codec_for
from .secrets import erasure_salt
from .topics import TopicNames

__all__ = [
    "DeadLetter",
    "DeadLetterProducer",
    "LetterOpener",
    "LetterSealer",
    "Rejected",
    "ReplayPass",
    "ReplayResult",
    "iter_dead_letters",
    "replay_letters",
]

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
    consumer_group: str | None = None  # None in letters of version 1
    payload: Payload = Payload.CLEAR
    card_hash: str | None = None
    sealed: bytes | None = None
    partition: int = 0  # the dead-letter topic's partition holding it (``offset`` is in that partition)

    @property
    def consumer(self) -> str:
        """Who rejected it, as replay tells consumers apart: the group, else (version 1) the processor."""
        return self.consumer_group or self.processor

    @classmethod
    def from_record(cls, offset: int, d: dict[str, Any], partition: int = 0) -> DeadLetter:
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
            consumer_group=d.get("consumer_group"),
            payload=Payload(d.get("payload") or Payload.CLEAR),
            card_hash=d.get("card_hash"),
            sealed=d.get("sealed"),
            partition=partition,
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
            record = codec.decode(msg.value(), expect="dead_letter").value
            letter = DeadLetter.from_record(msg.offset() or 0, record, msg.partition() or 0)
            if reason is None or letter.reason == reason:
                yield letter
    except KafkaException as exc:
        raise BrokerError(f"reading {topic} failed: {exc}") from exc
    finally:
        consumer.close()


class Closed(StrEnum):
    """Why a letter's original record cannot be restored."""

    ERASED = "erased"  # the card is erased: its key is gone, or the letter kept nothing
    UNREADABLE = "unreadable"  # the key is missing without an erasure, or the envelope does not open


class LetterOpener:
    """Opens dead letters for replay: the original record, or why not. One per replay (it caches keys).

    The vault is read as the ``dlq-vault`` role. A clear letter (version 1) is checked against the
    erased markers too, by the card its bytes name (this needs the install's erasure salt).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        vault: Vault | None = None,
        hasher: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.codec = codec or codec_for(settings)
        self.names = TopicNames(settings.kafka.topic_prefix)
        self._vault = vault
        self._hasher = hasher
        self._keys: dict[str, KeyState] = {}

    def _key(self, subject: str) -> KeyState:
        state = self._keys.get(subject)
        if state is None:
            if self._vault is None:
                self._vault = RedisVault.from_settings(self.settings)
            state = self._keys[subject] = self._vault.key_for_reading(subject)
        return state

    def _clear_card_erased(self, letter: DeadLetter) -> bool:
        if self.names.logical(letter.source_topic) in PSEUDONYMOUS_TOPICS:
            return False
        card = card_of(lambda v: self.codec.decode(v).value, letter.original_key, letter.original_value)
        if card is None:
            return False
        if self._hasher is None:
            self._hasher = CardHasher(erasure_salt(self.settings))
        return self._key(self._hasher(card)).erased

    def open(self, letter: DeadLetter) -> Original | Closed:
        """The letter's original key and value, or why they cannot be had."""
        if letter.payload is Payload.CLEAR:
            if self._clear_card_erased(letter):
                return Closed.ERASED
            return Original(letter.original_key, letter.original_value)
        if letter.payload is Payload.WITHHELD:
            return Closed.ERASED
        subject = letter.card_hash if letter.payload is Payload.CARD else INSTALL_SUBJECT
        if subject is None or letter.sealed is None:
            return Closed.UNREADABLE
        state = self._key(subject)
        if state.erased:
            return Closed.ERASED
        if state.key is None:
            return Closed.UNREADABLE
        aad = associated_data(letter.source_topic, letter.source_partition, letter.source_offset, letter.card_hash)
        try:
            return open_sealed(state.key, letter.sealed, aad)
        except SealError as exc:
            log.warning("dead letter at offset %d does not open: %s", letter.offset, exc)
            return Closed.UNREADABLE


@dataclass(frozen=True, slots=True)
class ReplayResult:
    replayed: int  # letters whose record this replay restored (sent, or sent once for several letters)
    skipped_empty: int
    last_offset: int | None
    skipped_repeats: int = 0  # letters the same consumer wrote again for bytes an earlier replay sent
    started_at: int = 0  # the lowest offset this replay started at (each partition starts where its last stopped)
    sent: int = 0  # records sent: one per source topic and bytes
    erased: int = 0  # letters of erased cards: skipped, nothing restored
    unreadable: int = 0  # letters whose key is missing without an erasure, or that do not open


def _replay_group(settings: Settings, reason: str | None) -> str:
    return f"{settings.kafka.topic_prefix}receiptflow-dlq-replay-{reason or 'all'}"


def replay_letters(
    settings: Settings,
    *,
    from_offset: int | None = None,
    reason: str | None = None,
    to_topic: str | None = None,
    progress: Any = None,
    opener: LetterOpener | None = None,
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
        # Where each partition's earlier replay stopped: offsets are per partition.
        stored = {tp.partition: tp.offset for tp in committed if tp.offset != OFFSET_INVALID and tp.offset >= 0}
        starts = {p: from_offset if from_offset is not None else stored.get(p, 0) for p in partitions}
        result = _send_letters(settings, starts, reason, to_topic, progress, ends, opener or LetterOpener(settings))
        try:
            positions.commit(offsets=[TopicPartition(topic, p, end) for p, end in ends.items()], asynchronous=False)
        except KafkaException as exc:
            raise BrokerError(f"replayed, but could not record where it stopped: {exc}") from exc
        return result
    finally:
        positions.close()


@dataclass
class ReplayPass:
    """The decisions, counts and memory of one replay pass over the letters (no I/O)."""

    starts: Mapping[int, int]  # dead-letter partition -> the first offset that is this replay's
    earlier: set[tuple[str, str, bytes]] = field(default_factory=set)
    sent_now: set[tuple[str, bytes]] = field(default_factory=set)
    replayed: int = 0
    sent: int = 0
    skipped: int = 0
    repeats: int = 0
    erased: int = 0
    unreadable: int = 0
    last: int | None = None

    def target(self, letter: DeadLetter, opened: Original | Closed, to_topic: str | None) -> str | None:
        """Where this letter's record goes, or None when it is not sent (counted here)."""
        before = letter.offset < self.starts.get(letter.partition, 0)
        if not before:
            self.last = letter.offset
        if isinstance(opened, Closed):
            if not before:
                if opened is Closed.ERASED:
                    self.erased += 1
                else:
                    self.unreadable += 1
            return None
        identity = replay_identity(letter.source_topic, letter.consumer, opened)
        if before:
            self.earlier.add(identity)  # an earlier replay's: its bytes coming back means rejected again
            return None
        if opened.value is None:
            self.skipped += 1  # a tombstone has nothing to replay
            return None
        if identity in self.earlier:
            self.repeats += 1
            return None
        self.replayed += 1
        target = to_topic or letter.source_topic
        sent = (target, record_digest(opened))
        if sent in self.sent_now:
            return None  # the same record for another consumer's letter (or a repeated letter): sent once
        self.sent_now.add(sent)
        self.sent += 1
        return target

    def result(self) -> ReplayResult:
        return ReplayResult(
            self.replayed,
            self.skipped,
            self.last,
            self.repeats,
            min(self.starts.values(), default=0),
            self.sent,
            self.erased,
            self.unreadable,
        )


def _send_letters(
    settings: Settings,
    starts: Mapping[int, int],
    reason: str | None,
    to_topic: str | None,
    progress: Any,
    ends: Mapping[int, int],
    opener: LetterOpener,
) -> ReplayResult:
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    failures: list[str] = []

    def report(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    # One pass from the beginning: the letters before ``starts`` are what earlier replays sent (their
    # bytes coming back from the same consumer means rejected again); those from ``starts`` on are this replay's.
    replay = ReplayPass(starts)
    for letter in iter_dead_letters(settings, reason=reason, until=ends):
        opened = opener.open(letter)
        target = replay.target(letter, opened, to_topic)
        if target is None or isinstance(opened, Closed):
            continue
        while True:
            try:
                producer.produce(target, value=opened.value, key=opened.key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        if progress is not None:
            progress(replay.sent)
    remaining = producer.flush(60)
    if remaining or failures:
        raise BrokerError(f"replay: {remaining} not acknowledged, {len(failures)} failed: {failures[:3]}")
    return replay.result()
