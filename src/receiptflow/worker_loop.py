"""The shape of a long-running Kafka worker: one consumer in a group, turning a loop until told to stop.

The exactly-once router (``processors.router.worker``) and the warehouse sink (``sinks.runner``) are
both :class:`KafkaWorker` subclasses. Each says what one turn of its loop does (:meth:`~KafkaWorker.turn`:
consume, process, write) and what it does with the partitions the group gives it and takes away
(:meth:`~KafkaWorker.assign`, :meth:`~KafkaWorker.revoke`); this class does the rest the same way
for both:

* **readiness** — ``partitions_assigned`` is marked once the worker has taken what the group gave it
  (after :meth:`~KafkaWorker.assign`, which may restore state and mark ``state_restored`` itself), and
  cleared when a rebalance begins: with the eager protocol everything goes back to the group until
  the next assignment; with incremental assignments (:attr:`~KafkaWorker.incremental`) only what is
  revoked does, and the worker stays assigned;
* **heartbeat** — the consumer lag, reported at most once a second from what the consumer already
  knows, feeds the INFO line every 30 s (:mod:`receiptflow.heartbeat`);
* **idleness** — with ``max_idle``, the loop returns after that many seconds without work, counted
  from the latest turn that had some or the latest assignment, whichever came later (joining the
  group is not idleness), and only while :meth:`~KafkaWorker.idle_counts` says so.

The group's callbacks run inside ``consume()``, between two turns: nothing is half-written when they do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from .health import CONSUMER_CHECKS, PARTITIONS_ASSIGNED, Readiness
from .heartbeat import Heartbeat, counter_total
from .lag import LagReporter, PositionedConsumer
from .metrics import Metrics

Rebalance = Callable[[Any, list[TopicPartition]], None]


class GroupMember(PositionedConsumer, Protocol):
    """What the loop needs of its consumer beyond lag reporting: joining the group."""

    def subscribe(
        self, topics: list[str], on_assign: Rebalance | None = None, on_revoke: Rebalance | None = None
    ) -> None: ...


class KafkaWorker:
    """A long-running consumer: readiness, heartbeat and idleness here; a turn and the partitions in the subclass.

    ``name`` is its role (the readiness role and the heartbeat's name), ``group`` the consumer group
    whose lag it reports, ``consumer`` its member of that group.
    """

    incremental: bool = False  # whether the group assigns and revokes partitions incrementally

    def __init__(
        self,
        name: str,
        group: str,
        consumer: GroupMember,
        *,
        metrics: Metrics,
        readiness: Readiness | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.metrics = metrics
        self.readiness = readiness or Readiness(name, CONSUMER_CHECKS)
        self.lag = LagReporter(metrics, group, heartbeat=Heartbeat(name, counter_total(metrics.consumed_total)))
        self._clock = clock
        self._busy_at = clock()
        self._assigned_at: float | None = None  # the latest assignment (None: not assigned yet)

    # --- what a worker does --------------------------------------------------------------------
    def turn(self) -> bool:
        """One consume and what follows it; True when there was work (records read, waiting or written)."""
        raise NotImplementedError

    def assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Take newly assigned partitions: position the consumer, restore state."""

    def revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Let go of revoked partitions: drop their state."""

    def idle_counts(self) -> bool:
        """Whether time without work counts as idleness now (by default: once assigned)."""
        return self._assigned_at is not None

    # --- the loop --------------------------------------------------------------------------------
    def loop(self, topics: list[str], stop: threading.Event, max_idle: float | None = None) -> bool:
        """Subscribe to ``topics`` and turn until ``stop`` is set (returns False) or, with ``max_idle``,
        until idle that long (returns True)."""
        self.consumer.subscribe(topics, on_assign=self.on_assign, on_revoke=self.on_revoke)
        while not stop.is_set():
            if self.turn():
                self._busy_at = self._clock()
            elif self.idle_over(max_idle):
                return True
        return False

    def heartbeat(self) -> None:
        """Report the consumer lag (at most once a second), which logs the heartbeat line when due."""
        self.lag.report(self.consumer)

    def idle_over(self, limit: float | None) -> bool:
        """Whether the worker has been idle for ``limit`` seconds (never with None)."""
        if limit is None or self._assigned_at is None or not self.idle_counts():
            return False
        return self._clock() - max(self._busy_at, self._assigned_at) >= limit

    # --- the group's callbacks -------------------------------------------------------------------
    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assign(consumer, partitions)
        self._assigned_at = self._clock()
        self.readiness.mark(PARTITIONS_ASSIGNED)

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.readiness.mark(PARTITIONS_ASSIGNED, self.incremental)
        self.revoke(consumer, partitions)
