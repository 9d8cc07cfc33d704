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
transaction leaves a commit marker after its records: a group that has read everything of a
transactional topic (``purchases.*``) still shows up to one record of lag per partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition

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
    """One partition of one group: its committed offset (None: nothing committed), end and lag."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        """Records after the committed offset (all of the partition's records when nothing is committed)."""
        return max(self.end - (self.committed if self.committed is not None else 0), 0)


def group_lag(
    settings: Settings, groups: Mapping[str, Sequence[str]], *, timeout: float = 30
) -> dict[str, list[PartitionLag]]:
    """Each group's lag per partition of the topics it reads (``groups``: group -> topics).

    The committed offsets are asked by a consumer in the group's name that never joins it (the
    admin client's ``list_consumer_group_offsets`` crashes librdkafka 2.16 when the group's
    coordinator is still loading). Raises :class:`BrokerError` when the cluster does not answer.
    """
    committed: dict[str, dict[Partition, int | None]] = {}
    for group, topics in groups.items():
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
                f"cannot read the offsets of group {group!r} from {settings.bootstrap_servers}: {exc}"
            ) from exc
        finally:
            reader.close()
        committed[group] = {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in positions}
    ends = _ends(settings, {p for offsets in committed.values() for p in offsets}, timeout)
    return {
        group: [
            PartitionLag(group, topic, partition, offset, ends[(topic, partition)])
            for (topic, partition), offset in sorted(offsets.items())
            if (topic, partition) in ends
        ]
        for group, offsets in committed.items()
    }


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
        raise BrokerError(f"cannot read partition ends from {settings.bootstrap_servers}: {exc}") from exc
    finally:
        reader.close()
