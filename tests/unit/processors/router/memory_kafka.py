"""In-memory stand-ins for the router's Kafka clients: a broker with transactions, offsets and partition ends.

Enough of Kafka's contract for the router loop to run on it without a broker:

* a topic is a list of partition logs; a committed transaction appends its records and then a
  control marker (an offset no reader is ever given, as on a real broker); an aborted one leaves
  nothing a read-committed reader can see;
* ``send_offsets_to_transaction`` offsets become the group's committed offsets when, and only when,
  the transaction commits;
* the group consumer is the group's only member: its first ``consume()`` assigns it every partition
  of its topics (``on_assign``) starting at the committed offsets; the restore reader reports
  partition ends (``enable.partition.eof``).

``fail_next_commit`` makes the next ``commit_transaction`` raise a retriable KafkaException, as a
broker that times out would.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

_CREATE_TIME = 1
_LOG_APPEND_TIME = 2


@dataclass(frozen=True)
class Entry:
    """One offset of a partition log: a record, or a transaction marker (``record`` None)."""

    record: Message | None


@dataclass
class MemoryBroker:
    partitions: dict[str, int]  # topic -> number of partitions
    logs: dict[tuple[str, int], list[Entry]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, p) -> offset
    clock_ms: int = (
        1_795_521_600_000  # the tests' NOW (2026-11-24 12:00 UTC): consent changes are judged at their append time
    )
    fail_next_commit: bool = False
    commits: int = 0
    aborts: int = 0

    def log(self, topic: str, partition: int) -> list[Entry]:
        return self.logs.setdefault((topic, partition), [])

    def partition_for(self, topic: str, key: bytes | None) -> int:
        return zlib.crc32(key or b"") % self.partitions[topic]

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int = -1,
        headers: list[tuple[str, Any]] | None = None,
        timestamp: int = 0,
    ) -> int:
        """Write one record outside any transaction (as the registers' idempotent producer does).

        The broker stamps its append time, unless the producer gave the record a ``timestamp`` (ms):
        then it keeps that as the record's create time (a topic with CreateTime, as the purchase topics).
        """
        p = self.partition_for(topic, key) if partition < 0 else partition
        log = self.log(topic, p)
        self.clock_ms += 1
        msg = Message(
            topic=topic,
            partition=p,
            offset=len(log),
            key=key,
            value=value,
            headers=headers,
            timestamp=(_CREATE_TIME, timestamp) if timestamp > 0 else (_LOG_APPEND_TIME, self.clock_ms),
        )
        log.append(Entry(msg))
        return p

    def records(self, topic: str) -> list[Message]:
        """Every record of ``topic`` a read-committed reader sees, partition by partition."""
        out = []
        for p in range(self.partitions[topic]):
            out.extend(e.record for e in self.log(topic, p) if e.record is not None)
        return out

    def end(self, topic: str, partition: int) -> int:
        return len(self.log(topic, partition))

    def metadata(self) -> Any:
        return SimpleNamespace(
            topics={
                t: SimpleNamespace(partitions={p: None for p in range(n)}, error=None)
                for t, n in self.partitions.items()
            }
        )


class MemoryProducer:
    """A transactional producer: records and offsets reach the broker at commit, all together."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.initialised = False
        self._open = False
        self._records: list[tuple[str, bytes | None, bytes | None, int, Any, int]] = []
        self._offsets: list[tuple[str, TopicPartition]] = []

    def init_transactions(self, timeout: float = -1) -> None:
        self.initialised = True

    def begin_transaction(self) -> None:
        assert self.initialised and not self._open
        self._open = True

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        headers: Any = None,
        timestamp: int = 0,
    ) -> None:
        assert self._open, "produce outside a transaction"
        self._records.append((topic, key, value, partition, headers, timestamp))

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None:
        assert self._open
        self._offsets.extend((group_metadata, tp) for tp in positions)

    def commit_transaction(self, timeout: float = -1) -> None:
        assert self._open
        if self.broker.fail_next_commit:
            self.broker.fail_next_commit = False
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out (in-memory broker)"))
        touched = set()
        for topic, key, value, partition, headers, timestamp in self._records:
            touched.add((topic, self.broker.append(topic, key, value, partition, headers, timestamp)))
        for where in sorted(touched):
            self.broker.log(*where).append(Entry(None))  # the commit marker takes an offset
        for group, tp in self._offsets:
            self.broker.committed[(group, tp.topic, tp.partition)] = tp.offset
        self.broker.commits += 1
        self._end()

    def abort_transaction(self, timeout: float = -1) -> None:
        self.broker.aborts += 1
        self._end()

    def _end(self) -> None:
        self._open = False
        self._records.clear()
        self._offsets.clear()


class _Reader:
    """What both consumers share: positions in assigned partitions, read-committed reads."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.positions: dict[tuple[str, int], int] = {}
        self.paused: set[tuple[str, int]] = set()
        self.closed = False
        self.eof = False
        self._eof_sent: set[tuple[str, int]] = set()

    def _next(self, limit: int) -> list[Message]:
        out: list[Message] = []
        for where in sorted(self.positions):
            if where in self.paused:
                continue
            log = self.broker.log(*where)
            while len(out) < limit and self.positions[where] < len(log):
                entry = log[self.positions[where]]
                self.positions[where] += 1
                self._eof_sent.discard(where)
                if entry.record is not None:
                    out.append(entry.record)
            if self.eof and self.positions[where] >= len(log) and where not in self._eof_sent and len(out) < limit:
                self._eof_sent.add(where)
                out.append(Message(topic=where[0], partition=where[1], error=KafkaError(KafkaError._PARTITION_EOF)))
        return out

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        assert not self.closed
        out = self._next(num_messages)
        if not out:
            time.sleep(min(max(timeout, 0), 0.005))
        return out

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), OFFSET_INVALID))
            for tp in partitions
        ]

    def close(self) -> None:
        self.closed = True


class MemoryRestoreReader(_Reader):
    """The reader of a state restore: assigned partitions, partition-EOF events."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.eof = True

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions[(tp.topic, tp.partition)] = 0 if tp.offset == OFFSET_BEGINNING else tp.offset


class MemoryGroupConsumer(_Reader):
    """The router group's only member (read-committed, no partition-EOF events)."""

    def __init__(self, broker: MemoryBroker, group: str) -> None:
        super().__init__(broker)
        self.group = group
        self._topics: list[str] = []
        self._on_assign: Callable[[Any, list[TopicPartition]], None] | None = None
        self._assigned = False

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        self._topics, self._on_assign = list(topics), on_assign

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if not self._assigned:
            self._assigned = True
            partitions = [TopicPartition(t, p) for t in self._topics for p in range(self.broker.partitions[t])]
            for tp in partitions:
                self.positions[(tp.topic, tp.partition)] = self.broker.committed.get(
                    (self.group, tp.topic, tp.partition), 0
                )
            if self._on_assign is not None:
                self._on_assign(self, partitions)
        return super().consume(num_messages, timeout)

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.broker.committed.get((self.group, tp.topic, tp.partition), OFFSET_INVALID)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return 0, self.broker.end(partition.topic, partition.partition)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def seek(self, partition: TopicPartition) -> None:
        offset = 0 if partition.offset == OFFSET_BEGINNING else partition.offset
        self.positions[(partition.topic, partition.partition)] = offset

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.positions)]

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        return self.broker.metadata()

    def consumer_group_metadata(self) -> Any:
        return self.group


class MemoryErasureReader:
    """The reader of the erased-cards topic on the in-memory broker (``ErasureReader``'s methods).

    ``before_catch_up``: callables run (and removed) one per ``catch_up`` call, before it reads: a
    test appends an erasure there to record it while a transaction is open.
    """

    def __init__(self, broker: MemoryBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.position = 0
        self.before_catch_up: list[Callable[[], None]] = []
        self.catch_ups = 0
        self.closed = False

    def _read(self) -> dict[str, Any]:
        from receiptflow.erasures import decode_erasure  # noqa: PLC0415 - the stand-in decodes as the real one

        out: dict[str, Any] = {}
        log = self.broker.log(self.topic, 0)
        while self.position < len(log):
            entry = log[self.position]
            self.position += 1
            if entry.record is not None:
                found = decode_erasure(entry.record.key(), entry.record.value(), entry.record.timestamp()[1])
                if found is not None:
                    out[found[0]] = found[1]
        return out

    def read_to_end(self, timeout: float = 60.0) -> dict[str, Any]:
        return self._read()

    def poll(self) -> dict[str, Any]:
        return {}  # nothing fetched in the background: catch_up finds it

    def catch_up(self, timeout: float = 10.0) -> dict[str, Any]:
        self.catch_ups += 1
        if self.before_catch_up:
            self.before_catch_up.pop(0)()
        return self._read()

    def close(self) -> None:
        self.closed = True
