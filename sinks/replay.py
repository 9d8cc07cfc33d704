"""Replay the sink's topics into the warehouse from a point in time (``receiptflow sink replay``).

For when the warehouse lacks rows the topics still hold: restored from an older backup, a date
range deleted by hand, a new warehouse next to the old one. The replay reads the live sink's topics
-- ``purchases.customer``, ``purchases.analytics`` and ``consents`` (read-committed), or the ones
named -- from the first record at or after ``from_time``, or from the beginning, up to the end each
partition had when the replay started, and writes through the same sink code as the live path.
Rows are inserted with ``ON CONFLICT DO NOTHING`` on their natural keys, so whatever the warehouse
already holds is left as it is: a replay can be repeated, or overlap the live sink on PostgreSQL,
without duplicating anything.

Its positions are stored under its own consumer name (``<group>-replay``), never under the live
sink's: a replay from a later time must not move the live sink past records it has not written.
DuckDB allows one writing process per file, so on DuckDB stop the live sink first.

Erased cards: before its first row the replay reads the erased-cards topic to its end into the
warehouse (``runner.follow_erasures``), and it polls that topic before every batch, as the live sink
does: a replay into a new warehouse never stores a card erased before or during it.

A record the live sink dead-letters (a consent record that does not decode or whose time was out of
bounds when it was written, an anonymous basket of before the analytics cells on
``purchases.analytics``, ...) is skipped: the live readers dead-lettered it. A consent record is
judged at its append time, so a replay refuses exactly the records the live sink refused.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ..codec import Codec
from ..config import Settings
from ..erasures import ErasureReader
from ..errors import BrokerError
from ..kafka_read import ReadToEnd
from ..registry import codec_for
from ..topics import TopicNames
from .base import Sink
from .decode import decode_batch
from .runner import SinkStats, follow_erasures

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (records done, records in all)

TopicPartitionKey = tuple[str, int]


def replay_group(live_group: str) -> str:
    return f"{live_group}-replay"


def sink_topics(settings: Settings) -> list[str]:
    """The topics the live sink reads, in the order a replay reports them."""
    names = TopicNames(settings.kafka.topic_prefix)
    return [names.purchases_customer, names.purchases_analytics, names.consents]


def replay_warehouse(
    settings: Settings,
    sink: Sink,
    *,
    from_time: datetime | None = None,
    topics: Sequence[str] | None = None,
    batch_size: int = 2000,
    progress: Progress | None = None,
) -> SinkStats:
    """Write ``topics`` (default: the live sink's three) from ``from_time`` (None: the beginning) into ``sink``.

    ``sink`` must have been opened with :func:`replay_group` as its group id. Raises
    :class:`~receiptflow.errors.WarehouseError` on a warehouse failure or an undecodable record
    (the records before it are stored) and :class:`~receiptflow.errors.BrokerError` on a Kafka failure.
    """
    topics = list(topics or sink_topics(settings))
    codec = codec_for(settings)
    erasures = ErasureReader(settings)
    try:
        follow_erasures(sink, erasures.read_to_end())
        consumer = _consumer(settings, sink)
    except BaseException:
        erasures.close()
        raise
    try:
        starts: dict[TopicPartitionKey, int] = {}
        ends: dict[TopicPartitionKey, int] = {}
        for topic in topics:
            s, e = _bounds(consumer, topic, from_time)
            starts.update(s)
            ends.update(e)
        return _replay(
            sink,
            consumer,
            erasures,
            (codec, TopicNames(settings.kafka.topic_prefix), settings.privacy.consent_max_age),
            (starts, ends),
            batch_size,
            progress,
        )
    except KafkaException as exc:
        raise BrokerError(f"replay of {', '.join(topics)} failed: {exc}") from exc
    finally:
        consumer.close()
        erasures.close()


def _consumer(settings: Settings, sink: Sink) -> Consumer:
    try:
        return Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"{sink.group_id}-{uuid.uuid4().hex[:8]}",  # never commits; the name is for logs
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                }
            )
        )
    except KafkaException as exc:
        raise BrokerError(f"cannot create the replay consumer: {exc}") from exc


def _replay(
    sink: Sink,
    consumer: Consumer,
    erasures: ErasureReader,
    decoding: tuple[Codec, TopicNames, timedelta],
    bounds: tuple[dict[TopicPartitionKey, int], dict[TopicPartitionKey, int]],
    batch_size: int,
    progress: Progress | None,
) -> SinkStats:
    """Read each partition from its start to its end (``bounds``) into ``sink``, the erasures first."""
    codec, names, consent_max_age = decoding
    starts, ends = bounds
    stats = SinkStats()
    todo = {tp for tp in starts if starts[tp] < ends[tp]}
    total = sum(ends[tp] - starts[tp] for tp in todo)
    if progress is not None:
        progress(0, total)
    if not todo:
        return stats
    reading = ReadToEnd(
        consumer,
        [TopicPartition(t, p, starts[(t, p)]) for t, p in sorted(todo)],
        what="replay consumer",
        stops=ends,  # what was written after the replay started is the live sink's business
        skip_transient=True,
    )
    todo = reading.pending
    done = 0
    for wanted in reading.batches(batch_size, 1.0):
        batch = decode_batch(codec, wanted, names, consent_max_age=consent_max_age)
        follow_erasures(sink, erasures.poll())
        if batch:
            sink.write(batch)
            stats.add(len(batch), sink.flush())
        # Progress in offsets, not records: transaction markers and aborted records take offsets too,
        # and the bar must reach its total.
        done = total - sum(ends[tp] - _position(consumer, tp, starts) for tp in todo)
        if progress is not None:
            progress(done if todo else total, total)
    return stats


def _position(consumer: Consumer, tp: TopicPartitionKey, starts: dict[TopicPartitionKey, int]) -> int:
    """Where the consumer is in a partition (its start until the first fetch)."""
    [pos] = consumer.position([TopicPartition(tp[0], tp[1])])
    return pos.offset if pos.offset >= 0 else starts[tp]


def _bounds(
    consumer: Consumer, topic: str, from_time: datetime | None
) -> tuple[dict[TopicPartitionKey, int], dict[TopicPartitionKey, int]]:
    """Per partition: the first offset to replay and the end (exclusive) at the start of the replay."""
    md = consumer.list_topics(topic, timeout=10)
    if topic not in md.topics or md.topics[topic].error is not None:
        raise BrokerError(f"topic {topic!r} does not exist")
    partitions = sorted(md.topics[topic].partitions)
    starts: dict[TopicPartitionKey, int] = {}
    ends: dict[TopicPartitionKey, int] = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        starts[(topic, p)], ends[(topic, p)] = low, high
    if from_time is not None:
        ms = int(from_time.timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions], timeout=10)
        for tp in found:
            key = (topic, tp.partition)
            # -1: no record at or after the time in this partition.
            starts[key] = ends[key] if tp.offset < 0 else max(tp.offset, starts[key])
    return starts, ends
