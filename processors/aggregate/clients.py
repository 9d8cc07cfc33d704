"""The aggregator's Kafka clients, its group and transactional id, and reading the close markers.

:func:`kafka_clients` builds them on confluent-kafka (librdkafka) from the settings: the
read-committed group consumer of ``purchases.baskets`` (static membership, so a restarted aggregator
takes its partitions back at once), the transactional producer (the same ``transactional.id`` across
restarts: a restarted aggregator aborts what its killed self left open in ``init_transactions``) and
a reader of ``analytics.windows``. :func:`read_closed` reads that topic to its end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from receiptflow.config import Settings
from receiptflow.consume import partitions_of, reader
from receiptflow.errors import BrokerError
from receiptflow.kafka_read import ReadToEnd

from .marker import Marker, read_markers

# Reading the close markers to their end that gets nothing at all for this long fails (the broker is gone).
_STALL_SECONDS = 60.0


def group_id(settings: Settings) -> str:
    """The aggregator's consumer group: ``RECEIPTFLOW_ANALYTICS_ID``, else ``<router id>-aggregator``."""
    return settings.aggregate.id or f"{settings.router.id}-aggregator"


def instance(settings: Settings) -> str:
    """This aggregator's name in its group: ``RECEIPTFLOW_ANALYTICS_INSTANCE``, else the router worker's."""
    return settings.aggregate.instance or settings.router.instance


def transactional_id(settings: Settings) -> str:
    """Its ``transactional.id`` and ``group.instance.id``: the same across restarts, unique per running aggregator."""
    return f"{group_id(settings)}-{instance(settings)}"


@dataclass(frozen=True, slots=True)
class AggregateClients:
    consumer: Consumer
    producer: Producer
    windows_reader: Callable[[], Consumer]  # a new reader of analytics.windows for each restore


def kafka_clients(settings: Settings) -> AggregateClients:
    """The confluent-kafka clients of this aggregator (its group and transactional id from the settings)."""
    group, txn = group_id(settings), transactional_id(settings)
    try:
        consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": group,
                    "group.instance.id": txn,
                    "client.id": f"{txn}-consumer",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                }
            )
        )
        producer = Producer(
            settings.kafka_config(
                **{
                    "transactional.id": txn,
                    "client.id": txn,
                    "linger.ms": 100,  # commit_transaction flushes at once: no latency for it
                    "compression.type": "lz4",
                    # An open transaction of a killed aggregator blocks read-committed readers until it
                    # restarts (and aborts it) or this timeout does.
                    "transaction.timeout.ms": 30_000,
                }
            )
        )
    except KafkaException as exc:  # e.g. an invalid librdkafka property in kafka_extra
        raise BrokerError(f"cannot create the aggregator's Kafka clients: {exc}") from exc
    return AggregateClients(consumer, producer, lambda: reader(settings, "aggregate-windows"))


def read_closed(consumer: Consumer, topic: str) -> dict[str, Marker]:
    """Every closed window's newest marker in ``topic`` (read-committed, to its end); closes ``consumer``."""
    try:
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(consumer, topic)]
        read = ReadToEnd(consumer, partitions, what=f"reading {topic}", stall=_STALL_SECONDS)
        return read_markers((m.key(), m.value()) for m in read.records(1000, 0.5))
    except KafkaException as exc:
        raise BrokerError(f"reading {topic} failed: {exc}") from exc
    finally:
        consumer.close()
