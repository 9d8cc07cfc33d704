"""Replay a purchases topic into the warehouse from a point in time (``receiptflow sink replay``).

For when the warehouse lacks rows the topic still holds: restored from an older backup, a date
range deleted by hand, a new warehouse next to the old one. The replay reads ``purchases.customer``
(read-committed) from the first record at or after ``from_time`` -- or from the beginning -- up to
the end each partition had when the replay started, and writes through the same sink code as the
live path. Rows are inserted with ``ON CONFLICT DO NOTHING`` on their natural keys, so whatever the
warehouse already holds is left as it is: a replay can be repeated, or overlap the live sink on
PostgreSQL, without duplicating anything.

Its positions are stored under its own consumer name (``<group>-replay``), never under the live
sink's: a replay from a later time must not move the live sink past records it has not written.
DuckDB allows one writing process per file, so on DuckDB stop the live sink first.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ..codec import Codec
from ..config import Settings
from ..errors import BrokerError
from ..topics import TopicNames
from .base import Sink, WriteResult
from .runner import decode_batch

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (records done, records in all)


@dataclass
class ReplayStats:
    records: int = 0  # records read and written
    receipts_inserted: int = 0  # of which new to the warehouse
    items_inserted: int = 0
    groups_inserted: int = 0


def replay_group(live_group: str) -> str:
    return f"{live_group}-replay"


def replay(
    settings: Settings,
    sink: Sink,
    *,
    from_time: datetime | None = None,
    topic: str | None = None,
    batch_size: int = 2000,
    progress: Progress | None = None,
) -> ReplayStats:
    """Write ``topic`` (default ``purchases.customer``) from ``from_time`` (None: the beginning) into ``sink``.

    ``sink`` must have been opened with :func:`replay_group` as its group id. Raises
    :class:`~receiptflow.errors.WarehouseError` on a warehouse failure or an undecodable record
    (the records before it are stored) and :class:`~receiptflow.errors.BrokerError` on a Kafka failure.
    """
    topic = topic or TopicNames(settings.topic_prefix).purchases_customer
    codec = Codec()
    stats = ReplayStats()
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"{sink.group_id}-{uuid.uuid4().hex[:8]}",  # never commits; the name is for logs
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    try:
        starts, ends = _bounds(consumer, topic, from_time)
        todo = {p for p in starts if starts[p] < ends[p]}
        total = sum(ends[p] - starts[p] for p in todo)
        if progress is not None:
            progress(0, total)
        if not todo:
            return stats
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(todo)])
        done = 0
        while todo:
            messages = consumer.consume(batch_size, timeout=1.0)
            wanted = []
            for m in messages:
                err = m.error()
                p = m.partition() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(p)
                        continue
                    if err.fatal():
                        raise BrokerError(f"replay consumer failed: {err}")
                    log.warning("replay consumer: %s", err)
                    continue
                if p not in todo or (m.offset() or 0) >= ends[p]:
                    continue  # past the end the partition had when the replay started
                wanted.append(m)
                if (m.offset() or 0) + 1 >= ends[p]:
                    todo.discard(p)
            batch, bad = decode_batch(codec, wanted)
            if batch:
                sink.write(batch)
                result: WriteResult = sink.flush()
                stats.records += len(batch)
                stats.receipts_inserted += result.receipts
                stats.items_inserted += result.items
                stats.groups_inserted += result.groups
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            if bad is not None:
                raise bad
    except KafkaException as exc:
        raise BrokerError(f"replay of {topic} failed: {exc}") from exc
    finally:
        consumer.close()
    return stats


def _bounds(consumer: Consumer, topic: str, from_time: datetime | None) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition: the first offset to replay and the end (exclusive) at the start of the replay."""
    md = consumer.list_topics(topic, timeout=10)
    if topic not in md.topics or md.topics[topic].error is not None:
        raise BrokerError(f"topic {topic!r} does not exist")
    partitions = sorted(md.topics[topic].partitions)
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        starts[p], ends[p] = low, high
    if from_time is not None:
        ms = int(from_time.timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions], timeout=10)
        for tp in found:
            # -1: no record at or after the time in this partition.
            starts[tp.partition] = ends[tp.partition] if tp.offset < 0 else max(tp.offset, starts[tp.partition])
    return starts, ends
