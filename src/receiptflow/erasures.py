"""The erased-cards record on Kafka: which cards were erased, kept with the consent state.

``receiptflow erase`` writes one record per erased card to the compacted topic ``consents.erased``
before it changes anything else: the key is the card's salted hash (:func:`receiptflow.secrets.erasure_salt`,
never the card id), the value ``{"erased_at": ISO-8601}``. The topic is never tombstoned, so
compaction keeps every erased card's record for as long as the topic exists.

It is the one record every store checks against, whichever store it is: each warehouse sink and
``sink replay`` reads it to its end before writing its first row and copies the hashes into that
warehouse's ``erased_cards`` (``sinks.card_rows.record_erased``), then picks up new records before
each batch with :meth:`ErasureReader.poll` — an assigned reader outside any consumer group, so
polling costs no broker round trip and no rebalance. A warehouse that never saw the erasure (a new
PostgreSQL, a restored backup) therefore learns it before any row of the card could reach it.

The router and the consent writers (``receiptflow produce``, the registers' client) keep the set
as :class:`ErasedCards` and ask it about clear card ids; before the router commits a transaction and
before a consent change is sent they :meth:`ErasureReader.catch_up` to the topic's end as it is at
that moment, so an erasure acknowledged before then is never missed.

A record with a key but a value this code cannot read still counts as an erasure (the stricter
reading): its time is then the record's timestamp.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from .acknowledged import produce_acknowledged
from .card_hash import CardHasher
from .config import Settings
from .errors import BrokerError
from .secrets import erasure_salt
from .topics import TopicNames

log = logging.getLogger(__name__)

# Reading to the end that gets nothing at all for this long fails (the broker is gone).
_STALL_SECONDS = 60.0


def encode_erasure(subject: str, at: datetime) -> tuple[bytes, bytes]:
    """(key, value) of the record for the salted hash ``subject`` erased at ``at`` (pure)."""
    if not subject:
        raise ValueError("an erasure record needs the card's salted hash")
    return subject.encode(), json.dumps({"erased_at": at.astimezone(UTC).isoformat()}).encode()


def decode_erasure(key: bytes | None, value: bytes | None, timestamp_ms: int) -> tuple[str, datetime] | None:
    """(salted hash, erased at) of a record, or None for a record without a key (pure).

    A value that does not parse still erases the key (its time is then the record's timestamp).
    """
    if not key:
        return None
    fallback = datetime.fromtimestamp(max(timestamp_ms, 0) / 1000, UTC)
    try:
        at = datetime.fromisoformat(json.loads(value or b"")["erased_at"])
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    except (ValueError, KeyError, TypeError):
        log.warning("erased-cards record with an unreadable value: counted as erased at its timestamp")
        at = fallback
    return key.decode(errors="replace"), at


def record_erasure(settings: Settings, subject: str, at: datetime, timeout: float = 30.0) -> None:
    """Write the erased-cards record of ``subject`` and wait until every in-sync replica has it."""
    record_erasures(settings, {subject: at}, timeout)


def record_erasures(settings: Settings, erased: Mapping[str, datetime], timeout: float = 30.0) -> None:
    """Write the erased-cards records of ``erased`` (salted hash → erased at) and wait for all of them."""
    topic = TopicNames(settings.kafka.topic_prefix).consents_erased
    records = [encode_erasure(subject, at) for subject, at in sorted(erased.items())]
    produce_acknowledged(settings, topic, records, what="the erased-cards record", timeout=timeout)


class ErasureReader:
    """Reads ``consents.erased``: :meth:`read_to_end` once, then :meth:`poll` for what arrives after.

    Partitions are assigned, not subscribed: no consumer group, no commits, no rebalances.
    """

    def __init__(self, settings: Settings) -> None:
        self.topic = TopicNames(settings.kafka.topic_prefix).consents_erased
        self._settings = settings
        self._consumer = self._client()
        # Asks for the topic's end in catch_up(). Not the reading consumer: its connection to the
        # leader carries a long-polling fetch, and a request behind it waits up to fetch.wait.max.ms.
        self._ends: Consumer | None = None
        self._assigned = False
        self._partitions: list[int] = []

    def _client(self) -> Consumer:
        try:
            return Consumer(
                self._settings.kafka_config(
                    **{
                        "group.id": f"receiptflow-erasures-{uuid.uuid4().hex[:8]}",  # never joins or commits
                        "enable.auto.commit": False,
                        "enable.partition.eof": False,
                        "isolation.level": "read_committed",
                    }
                )
            )
        except KafkaException as exc:
            raise BrokerError(f"cannot create the erased-cards reader: {exc}") from exc

    def read_to_end(self, timeout: float = _STALL_SECONDS) -> dict[str, datetime]:
        """Every erased card (salted hash → erased at) up to the topic's end at the time of the call."""
        try:
            md = self._consumer.list_topics(self.topic, timeout=10)
            meta = md.topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise BrokerError(
                    f"topic {self.topic} (the erased-cards record) does not exist: run `receiptflow topics create`"
                )
            self._partitions = sorted(meta.partitions)
            ends: dict[int, int] = {}
            for p in self._partitions:
                low, high = self._watermarks(p, timeout)
                if high > low:
                    ends[p] = high
            self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self._partitions])
            self._assigned = True
            return self._read_until(ends, timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot read {self.topic}: {exc}") from exc

    def catch_up(self, timeout: float = 10.0) -> dict[str, datetime]:
        """The records that arrived since the last call, up to the topic's end as the broker reports it now.

        Asks the broker for each partition's end (one round trip, never a cached answer): an erasure
        acknowledged before this call is in the answer. BrokerError when the broker does not answer.
        """
        if not self._assigned:
            raise BrokerError("ErasureReader.catch_up() before read_to_end()")
        try:
            out = self._entries(self._consumer.consume(1000, timeout=0))
            if self._ends is None:
                self._ends = self._client()
            ends: dict[int, int] = {}
            for p in self._partitions:
                _low, high = self._ends.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)
                ends[p] = int(high)
            out.update(self._read_until(ends, timeout))
            return out
        except KafkaException as exc:
            raise BrokerError(f"cannot read {self.topic}: {exc}") from exc

    def _read_until(self, ends: dict[int, int], timeout: float) -> dict[str, datetime]:
        """Consume until every partition's position reaches its entry in ``ends`` (offset, exclusive)."""
        out: dict[str, datetime] = {}
        deadline = time.monotonic() + timeout
        while True:
            # Positions, not the last offset seen: compaction leaves gaps, and the end may be one.
            for tp in self._consumer.position([TopicPartition(self.topic, p) for p in list(ends)]):
                if tp.offset >= ends[tp.partition] or ends[tp.partition] <= 0:
                    del ends[tp.partition]
            if not ends:
                return out
            batch = self._consumer.consume(1000, timeout=0.5)
            if batch:
                deadline = time.monotonic() + timeout
            elif time.monotonic() > deadline:
                raise BrokerError(f"reading {self.topic} got nothing for {timeout:.0f} s before its end")
            for subject, at in self._entries(batch).items():
                out[subject] = min(at, out.get(subject, at))

    def _watermarks(self, partition: int, timeout: float) -> tuple[int, int]:
        # A topic created a moment ago may not have a leader known to this client yet: retry a while.
        deadline = time.monotonic() + timeout
        while True:
            try:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10)
                return int(low), int(high)
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def poll(self) -> dict[str, datetime]:
        """Records that arrived since the last call; never waits (what the last fetch brought)."""
        if not self._assigned:
            raise BrokerError("ErasureReader.poll() before read_to_end()")
        try:
            return self._entries(self._consumer.consume(1000, timeout=0))
        except KafkaException as exc:
            raise BrokerError(f"cannot read {self.topic}: {exc}") from exc

    def _entries(self, batch: list[Message]) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for m in batch:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise BrokerError(f"erased-cards reader failed: {err}")
                # Transient (a topic created a moment ago, a leader moving): librdkafka retries.
                log.warning("erased-cards reader: %s", err)
                continue
            found = decode_erasure(m.key(), m.value(), m.timestamp()[1])
            if found is not None:
                subject, at = found
                # The earliest time wins: a card erased again stays erased since the first time.
                out[subject] = min(at, out.get(subject, at))
        return out

    def close(self) -> None:
        self._consumer.close()
        if self._ends is not None:
            self._ends.close()


@dataclass
class ErasedCards:
    """The erased cards a process knows (salted hash -> erased at), asked about clear card ids.

    ``card_hash`` is the install's keyed hash (:class:`receiptflow.card_hash.CardHasher`). No I/O:
    the owner feeds it what its :class:`ErasureReader` reads (:meth:`learn`).
    """

    card_hash: Callable[[str], str]
    hashes: dict[str, datetime] = field(default_factory=dict)

    def __contains__(self, card_id: object) -> bool:
        # Nothing erased (the common case): no hash computed at all.
        return bool(self.hashes) and isinstance(card_id, str) and self.card_hash(card_id) in self.hashes

    def __len__(self) -> int:
        return len(self.hashes)

    def learn(self, found: Mapping[str, datetime]) -> set[str]:
        """Add what a reader found; returns the hashes that were new."""
        new = {h for h in found if h not in self.hashes}
        for h, at in found.items():
            self.hashes[h] = min(at, self.hashes.get(h, at))
        return new

    def among(self, cards: Iterable[str], hashes: Iterable[str]) -> list[str]:
        """The ``cards`` whose hash is one of ``hashes``."""
        wanted = set(hashes)
        return [c for c in cards if self.card_hash(c) in wanted] if wanted else []


class ErasedCheck:
    """Whether a card is erased, as a consent writer asks before it sends a change for it.

    The topic is read to its end on first use; later asks take what has arrived and, when the last
    look at the topic's end is older than ``fresh_for`` seconds, read up to its end again. The router
    is the gate that keeps every record of an erased card out; this check is the early refusal a
    person or a register sees.
    """

    def __init__(self, settings: Settings, fresh_for: float = 1.0) -> None:
        self.settings = settings
        self.fresh_for = fresh_for
        self._reader: ErasureReader | None = None
        self._cards: ErasedCards | None = None
        self._looked = 0.0

    def __call__(self, card_id: str) -> bool:
        if self._reader is None or self._cards is None:
            self._cards = ErasedCards(CardHasher(erasure_salt(self.settings)))
            self._reader = ErasureReader(self.settings)
            self._cards.learn(self._reader.read_to_end())
            self._looked = time.monotonic()
        elif time.monotonic() - self._looked > self.fresh_for:
            self._cards.learn(self._reader.catch_up())
            self._looked = time.monotonic()
        else:
            self._cards.learn(self._reader.poll())
        return card_id in self._cards

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def erased_cards(settings: Settings) -> dict[str, datetime]:
    """Every erased card on the topic now (salted hash → erased at)."""
    reader = ErasureReader(settings)
    try:
        return reader.read_to_end()
    finally:
        reader.close()


def erased_at(settings: Settings, subject: str) -> datetime | None:
    """When the card with salted hash ``subject`` was erased, or None when it was not."""
    return erased_cards(settings).get(subject)
