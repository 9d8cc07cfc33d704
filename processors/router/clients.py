"""The Kafka clients a router worker uses, as interfaces, and the factory of the real ones.

:class:`~receiptflow.processors.router.worker.Router` is given its clients (:class:`RouterClients`): the
group consumer of the inputs, the transactional producer, a way to open the reader of a state
restore and one to open the reader of the erased-cards topic. :func:`check_copartitioned`
checks the topics' metadata before it starts, :func:`produce` writes one record into the open
transaction. :func:`kafka_clients` builds them on confluent-kafka (librdkafka) from the settings; tests
pass in-memory stand-ins with the same methods, so the loop runs without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, Message, Producer, TopicPartition

from receiptflow.config import Settings
from receiptflow.erasures import ErasureReader
from receiptflow.errors import BrokerError, ConfigError
from receiptflow.kafka_read import AssignableConsumer

Rebalance = Callable[[Any, list[TopicPartition]], None]
# librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks the partition (by key).
_ANY_PARTITION = -1


class GroupConsumer(Protocol):
    """The read-committed consumer of ``checkouts`` and ``consents`` in the router's group."""

    def subscribe(
        self, topics: list[str], on_assign: Rebalance | None = None, on_revoke: Rebalance | None = None
    ) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def assignment(self) -> list[TopicPartition]: ...

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def consumer_group_metadata(self) -> Any: ...

    def close(self) -> None: ...


class TransactionalProducer(Protocol):
    """The producer whose transactions carry the outputs, the changelog and the consumed offsets."""

    def init_transactions(self, timeout: float = -1) -> None: ...

    def begin_transaction(self) -> None: ...

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        timestamp: int = 0,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None: ...

    def commit_transaction(self, timeout: float = -1) -> None: ...

    def abort_transaction(self, timeout: float = -1) -> None: ...


class RestoreReader(AssignableConsumer, Protocol):
    """A read-committed consumer that reports partition ends (assigned, never subscribed)."""

    def close(self) -> None: ...


class ErasureFeed(Protocol):
    """The reader of the erased-cards topic (:class:`receiptflow.erasures.ErasureReader`): salted hash -> erased at."""

    def read_to_end(self, timeout: float = ...) -> dict[str, datetime]: ...

    def poll(self) -> dict[str, datetime]: ...

    def catch_up(self, timeout: float = ...) -> dict[str, datetime]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RouterClients:
    consumer: GroupConsumer
    producer: TransactionalProducer
    restore_reader: Callable[[], RestoreReader]  # a new reader for each state restore
    erasures: Callable[[], ErasureFeed]  # the reader of the erased-cards topic, opened once per run


def check_copartitioned(consumer: GroupConsumer, topics: tuple[str, ...]) -> None:
    """BrokerError unless every topic exists; ConfigError unless they have the same number of partitions."""
    try:
        md = consumer.list_topics(timeout=30)
    except KafkaException as exc:
        raise BrokerError(f"cannot read topic metadata: {exc}") from exc
    counts = {}
    for t in topics:
        if t not in md.topics or md.topics[t].error is not None:
            raise BrokerError(f"topic {t!r} does not exist (run `receiptflow topics create`)")
        counts[t] = len(md.topics[t].partitions)
    if len(set(counts.values())) != 1:
        raise ConfigError(f"{', '.join(topics)} must have the same number of partitions (co-partitioned): {counts}")


def produce(
    producer: TransactionalProducer,
    topic: str,
    key: bytes | None,
    value: bytes,
    partition: int | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    timestamp: int = 0,
) -> None:
    """Write one record into the open transaction, waiting for room when the local queue is full."""
    at = _ANY_PARTITION if partition is None else partition
    while True:
        try:
            producer.produce(topic, value=value, key=key, partition=at, headers=headers, timestamp=timestamp)
            return
        except BufferError:
            producer.poll(0.05)


def kafka_clients(settings: Settings, transactional_id: str) -> RouterClients:
    """The confluent-kafka clients of the worker with this ``transactional.id``."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": settings.router.id,
                "client.id": f"{transactional_id}-consumer",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # Range keeps partition p of checkouts and of consents on the same worker.
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
            }
        )
    )
    producer = Producer(
        settings.kafka_config(
            **{
                "transactional.id": transactional_id,
                "client.id": transactional_id,
                # Records wait for their batch; commit_transaction flushes at once regardless of
                # linger, so this costs no latency. A long linger means fewer, larger produce
                # requests and far fewer wake-ups of librdkafka's threads: measured 20-70 % more
                # receipts/s than 5 ms on a 2-core machine (benchmarks/processor_throughput.py).
                "linger.ms": 100,
                "compression.type": "lz4",
                # An open transaction of a crashed worker blocks read-committed readers until the
                # worker restarts (and fences it) or this timeout aborts it.
                "transaction.timeout.ms": 30_000,
            }
        )
    )

    def restore_reader() -> RestoreReader:
        return Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"{settings.router.id}-restore",
                    "client.id": f"{transactional_id}-restore",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                }
            )
        )

    return RouterClients(consumer, producer, restore_reader, lambda: ErasureReader(settings))


def read_to_end(
    consumer: GroupConsumer, topic: str, partition: int, start_offsets: Mapping[tuple[str, int], int]
) -> bool | None:
    """Whether the consumer has read an input partition to its (read-committed) end: True; False: records
    on the broker not delivered yet; None: not known. ``start_offsets``: where each assigned partition
    started (its committed offset), for a partition nothing was read from since the assignment."""
    tp = TopicPartition(topic, partition)
    try:
        low, high = consumer.get_watermark_offsets(tp, cached=True)
        position = consumer.position([tp])[0].offset
    except KafkaException:
        return None  # unknown: wait (bounded by processor_order_wait_ms)
    if position < 0:
        # Nothing read from it since the assignment: it starts at the committed offset, or at the
        # beginning of what the partition still holds.
        position = start_offsets.get((topic, partition), OFFSET_INVALID)
        if position < 0:
            position = low
    # The cached end comes from the latest fetch response (the last stable offset for this
    # read-committed consumer); unknown (negative) until the first fetch answers.
    if high < 0:
        return None
    return position >= high
