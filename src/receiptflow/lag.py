"""Consumer lag: per group and partition, as each worker sees it and as the broker records it.

Two views of the same figure:

* in a worker (:class:`LagReporter`): for each partition assigned to it, the partition's end minus
  the worker's position, from what its consumer already knows (the end from the latest fetch, no
  broker call), set on ``receiptflow_consumer_lag_records{group, topic, partition}`` at most once a
  second; the series of partitions the worker no longer holds are removed, so a rebalance leaves no
  stale lag behind;
* from outside (:func:`group_lag`, used by ``receiptflow status``): each group's committed offsets
  against the partitions' ends, as ``kafka-consumer-groups --describe`` shows them.

The readers are read-committed, so a partition's end is its last stable offset. A producer's
transaction leaves a commit marker after its records, which takes an offset but is no record: a
consumer's position moves past it, but a group commits the offset after the last record it read,
so on a transactional topic (``purchases.*``) a group that has read everything has committed one
offset short of the end. From outside, a partition whose committed offset is short of its end is
therefore looked into from that offset (:func:`first_unread`), and the lag counts from the first
record a read-committed reader would get there: none at all when only markers (or aborted records)
are left. Markers between unread records still count, as they do for ``kafka-consumer-groups``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from .config import Settings
from .errors import BrokerError
from .heartbeat import Heartbeat
from .metrics import Metrics


class PositionedConsumer(Protocol):
    """What lag reporting needs of a consumer: a real confluent-kafka one or an in-memory stand-in."""

    def assignment(self) -> list[TopicPartition]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...


log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition)
_REPORT_EVERY = 1.0  # seconds
PROBE_SECONDS = 5.0  # how long `status` looks past the committed offsets at most (then they count)


class LagGauge:
    """One group's lag series on ``receiptflow_consumer_lag_records``, exactly the partitions last reported."""

    def __init__(self, metrics: Metrics, group: str, heartbeat: Heartbeat | None = None) -> None:
        self._gauge = metrics.consumer_lag
        self.group = group
        self.heartbeat = heartbeat  # the process's INFO line every 30 s, fed with the lag reported here
        self._lock = threading.Lock()
        self._shown: set[Partition] = set()

    def update(self, lags: Mapping[Partition, int]) -> None:
        with self._lock:
            for topic, partition in self._shown - set(lags):
                self._gauge.remove(self.group, topic, str(partition))
            for (topic, partition), n in lags.items():
                self._gauge.labels(self.group, topic, str(partition)).set(max(n, 0))
            self._shown = set(lags)
        if self.heartbeat is not None:
            self.heartbeat.beat(sum(lags.values()) if lags else None)


def consumer_lag(
    consumer: PositionedConsumer, starts: Mapping[Partition, int]
) -> tuple[dict[Partition, int], list[Partition]]:
    """Records behind the end per assigned partition, from the consumer's cached ends (no broker call).

    A partition nothing was read from since the assignment has no position yet: it counts from
    ``starts`` (where the consumer begins: the committed offset, or the partition's beginning), and
    when that is not known either it is returned in the second list. A partition whose end is not
    known yet (no fetch answered) is left out.
    """
    lags: dict[Partition, int] = {}
    unknown: list[Partition] = []
    for tp in consumer.position(consumer.assignment()):
        where = (tp.topic, tp.partition)
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            continue
        position = tp.offset if tp.offset >= 0 else starts.get(where)
        if position is None:
            unknown.append(where)
            continue
        lags[where] = max(high - position, 0)
    return lags, unknown


class LagReporter:
    """Reports a confluent-kafka consumer's lag, at most once every ``every`` seconds (cheap to call often)."""

    def __init__(
        self, metrics: Metrics, group: str, every: float = _REPORT_EVERY, heartbeat: Heartbeat | None = None
    ) -> None:
        self.gauge = LagGauge(metrics, group, heartbeat)
        self.every = every
        self._last = 0.0
        self._starts: dict[Partition, int] = {}  # where quiet partitions begin, for the current assignment

    def report(self, consumer: PositionedConsumer, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        try:
            lags, unknown = consumer_lag(consumer, self._starts)
            if unknown:
                # Once per quiet partition and assignment: its committed offset, or its beginning.
                wanted = [TopicPartition(t, p) for t, p in unknown]
                for tp in consumer.committed(wanted, timeout=5):
                    low, high = consumer.get_watermark_offsets(tp, cached=True)
                    start = tp.offset if tp.offset >= 0 else low
                    if start >= 0:
                        self._starts[(tp.topic, tp.partition)] = start
                        lags[(tp.topic, tp.partition)] = max(high - start, 0)
            assigned = set(lags) | set(unknown)
            self._starts = {where: offset for where, offset in self._starts.items() if where in assigned}
            self.gauge.update(lags)
        except (KafkaException, RuntimeError) as exc:  # RuntimeError: the consumer is closed
            log.debug("lag not available: %s", exc)


# --- from outside: the broker's record of each group ----------------------------------------------
@dataclass(frozen=True)
class PartitionLag:
    """One partition of one group: its committed offset (None: nothing committed), end and lag.

    ``unread`` is the offset of the first record the group has not read, when only transaction
    markers or aborted records lie between its committed offset and that record (None: not known,
    the committed offset counts).
    """

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    unread: int | None = None

    @property
    def lag(self) -> int:
        """Offsets from the first unread record to the end (all of the partition's when nothing is committed)."""
        start = self.unread if self.unread is not None else self.committed
        return max(self.end - (start if start is not None else 0), 0)


def group_lag(
    settings: Settings, groups: Mapping[str, Sequence[str]], *, timeout: float = 30
) -> dict[str, list[PartitionLag]]:
    """Each group's lag per partition of the topics it reads (``groups``: group -> topics).

    The committed offsets are asked by a consumer in the group's name that never joins it (the
    admin client's ``list_consumer_group_offsets`` crashes librdkafka 2.16 when the group's
    coordinator is still loading). Raises :class:`BrokerError` when the cluster does not answer.
    """
    committed = {group: _committed(settings, group, topics, timeout) for group, topics in groups.items()}
    ends = _ends(settings, {p for offsets in committed.values() for p in offsets}, timeout)
    # Short of the end: only a commit marker may be left (see the module's docstring).
    short = {
        (where, offset)
        for offsets in committed.values()
        for where, offset in offsets.items()
        if offset is not None and where in ends and offset < ends[where]
    }
    unread = first_unread(settings, short, ends, min(timeout, PROBE_SECONDS))
    return {
        group: [
            PartitionLag(group, *where, offset, ends[where], None if offset is None else unread.get((where, offset)))
            for where, offset in sorted(offsets.items())
            if where in ends
        ]
        for group, offsets in committed.items()
    }


def _committed(settings: Settings, group: str, topics: Sequence[str], timeout: float) -> dict[Partition, int | None]:
    """The group's committed offset of each partition of ``topics`` (None: nothing committed)."""
    reader = Consumer(
        settings.kafka_config(
            **{
                "group.id": group,  # for its committed offsets only: it never subscribes
                "client.id": "receiptflow-status",
                "enable.auto.commit": False,
            }
        )
    )
    try:
        metadata = reader.list_topics(timeout=timeout)
        wanted = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in metadata.topics
            for p in metadata.topics[topic].partitions
        ]
        positions = reader.committed(wanted, timeout=timeout) if wanted else []
    except KafkaException as exc:
        raise BrokerError(
            f"cannot read the offsets of group {group!r} from {settings.kafka.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        reader.close()
    return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in positions}


def first_unread(
    settings: Settings, starts: Iterable[tuple[Partition, int]], ends: Mapping[Partition, int], timeout: float
) -> dict[tuple[Partition, int], int]:
    """For each (partition, offset) of ``starts``: the offset of the first record a read-committed reader
    gets there, or the partition's end in ``ends`` when it gets none before it.

    One reader, from the lowest offset asked of each partition: its own position moves past the
    markers, so a partition that holds nothing more ends its fetch at once. What it cannot tell (a
    higher offset asked of a partition than the record found, no answer within ``timeout`` s) is left out.
    """
    lowest: dict[Partition, int] = {}
    for where, offset in starts:
        lowest[where] = min(offset, lowest.get(where, offset))
    found = _probe(settings, lowest, ends, timeout)
    return {(where, offset): found[where] for where, offset in starts if where in found and offset <= found[where]}


def _probe(
    settings: Settings, starts: Mapping[Partition, int], ends: Mapping[Partition, int], timeout: float
) -> dict[Partition, int]:
    """The offset of the first record at or after each partition's start (its end when none is before)."""
    if not starts:
        return {}
    reader = Consumer(
        settings.kafka_config(
            **{
                "group.id": "receiptflow-status",  # never joins, never commits
                "client.id": "receiptflow-status",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # Only the first record of each partition is wanted: small fetches.
                "max.partition.fetch.bytes": 65536,
                "queued.max.messages.kbytes": 1024,
            }
        )
    )
    found: dict[Partition, int] = {}
    try:
        reader.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
        deadline = time.monotonic() + timeout
        while len(found) < len(starts) and time.monotonic() < deadline:
            for message in reader.consume(500, timeout=0.1):
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    continue  # a transient error: librdkafka retries (or the time runs out)
                where = (message.topic() or "", message.partition() or 0)
                if where not in found:
                    # A record (past the end as it was read: none before it), or the end reached without one.
                    offset = message.offset()
                    found[where] = ends[where] if error is not None or offset is None else min(offset, ends[where])
    except KafkaException as exc:
        log.debug("cannot look past the committed offsets: %s", exc)
    finally:
        reader.close()
    return found


def _ends(settings: Settings, partitions: Iterable[Partition], timeout: float) -> dict[Partition, int]:
    """The read-committed end of each partition (one watermark query each)."""
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    reader = Consumer(
        settings.kafka_config(
            **{
                "group.id": "receiptflow-status",  # never joins: watermark queries only
                "client.id": "receiptflow-status",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    try:
        ends = {}
        for topic, partition in wanted:
            _low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            ends[(topic, partition)] = high
        return ends
    except KafkaException as exc:
        raise BrokerError(f"cannot read partition ends from {settings.kafka.bootstrap_servers}: {exc}") from exc
    finally:
        reader.close()
