"""Time order across co-partitioned inputs: which buffered record the router may process next.

The router reads ``consents`` and ``checkouts`` with one consumer. Kafka orders records within a
partition, never across topics, and a consumer returns whatever its fetches brought, so after a
restart or under lag a card's checkouts could be routed before a consent change written before them
(a withdrawal that had not been read yet would not apply). This module restores the order in which
the records were written, the way Kafka Streams does across a task's co-partitioned inputs:

* records are buffered per (topic, partition); partition ``p`` of every input forms one group;
* a group releases the head with the smallest record timestamp; on equal timestamps the input listed
  first wins (the router lists ``consents`` first, so a change written at the same instant as a
  checkout is applied before it; the checkout then takes the stricter of the consent with and
  without the changes of that instant, so a withdrawal applies and a grant does not yet:
  :func:`receiptflow.processors.router.consent.effective_consent`);
* a group whose input buffer is empty may release from the other inputs only if that input is
  *caught up* (the consumer has read it to its end, so nothing written earlier can still arrive).
  Otherwise it waits, as Kafka Streams does (KIP-695, ``max.task.idle.ms``), for a bounded time:

  - input known to be *behind* (records are on the broker that the consumer has not delivered
    yet): wait while the consumer is busy delivering records -- it is working its way to them --
    and give up once it has delivered nothing for ``max_wait`` seconds, or after
    ``BEHIND_WAIT_FACTOR * max_wait`` in all;
  - input whose end is *unknown* (no fetch answered yet): wait ``max_wait`` seconds.

  So a partition that is far behind delays the others by a bounded time, never forever.

Pure and synchronous: the caller passes the clock (``now``, seconds) and how to tell whether an
input is caught up, so the rules are unit-tested without a broker. The topics' timestamps are the
broker's append time (``message.timestamp.type=LogAppendTime`` in :mod:`receiptflow.topics`), so a
register's clock cannot reorder its receipts before a consent change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# Called with (topic, partition): True when the consumer has read that input to its end, False when
# it is known to be behind (records on the broker not delivered yet), None when that is not known.
CaughtUp = Callable[[str, int], "bool | None"]
# How much longer than ``max_wait`` a group may wait in all for an input that is behind.
BEHIND_WAIT_FACTOR = 30


@dataclass
class _Group(Generic[T]):
    """The buffered records of one partition number, one FIFO per input topic."""

    queues: dict[str, deque[tuple[int, T]]]
    blocked_since: float | None = None  # when the group first had to wait for an empty input


@dataclass
class TimeOrderedMerge(Generic[T]):
    """Buffers records of several co-partitioned topics and releases them in timestamp order.

    ``topics`` are the inputs in their tie-break order (first wins on equal timestamps).
    """

    topics: Sequence[str]
    max_wait: float
    _groups: dict[int, _Group[T]] = field(default_factory=dict)

    def add(self, topic: str, partition: int, timestamp: int, item: T) -> None:
        """Buffer ``item``, read from ``topic[partition]`` with record timestamp ``timestamp`` (ms)."""
        group = self._groups.get(partition)
        if group is None:
            group = self._groups[partition] = _Group({t: deque() for t in self.topics})
        group.queues[topic].append((timestamp, item))

    def pending(self) -> int:
        """Records buffered and not yet released."""
        return sum(len(q) for g in self._groups.values() for q in g.queues.values())

    def buffered(self, topic: str, partition: int) -> int:
        group = self._groups.get(partition)
        return len(group.queues[topic]) if group is not None else 0

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the buffers of ``partitions`` (revoked: their next owner reads them again)."""
        for p in partitions:
            self._groups.pop(p, None)

    def clear(self) -> None:
        """Forget everything buffered (the consumer was rewound to its committed offsets)."""
        self._groups.clear()

    def release(
        self, now: float, caught_up: CaughtUp, limit: int | None = None, last_delivery: float | None = None
    ) -> list[T]:
        """The records that may be processed now, in processing order (at most ``limit``).

        ``last_delivery`` is when the consumer last delivered any record (default: ``now``, busy).
        """
        out: list[T] = []
        delivered = now if last_delivery is None else last_delivery
        for partition in sorted(self._groups):
            group = self._groups[partition]
            while limit is None or len(out) < limit:
                topic = self._next(partition, group, now, caught_up, delivered)
                if topic is None:
                    break
                out.append(group.queues[topic].popleft()[1])
            if not any(group.queues.values()):
                del self._groups[partition]
        return out

    def _next(
        self, partition: int, group: _Group[T], now: float, caught_up: CaughtUp, last_delivery: float
    ) -> str | None:
        """The input whose head goes next, or None while the group must wait."""
        heads = [(q[0][0], rank, t) for rank, t in enumerate(self.topics) if (q := group.queues[t])]
        if not heads:
            group.blocked_since = None
            return None
        if len(heads) == len(self.topics):
            group.blocked_since = None
            return min(heads)[2]
        states = [caught_up(t, partition) for t in self.topics if not group.queues[t]]
        if all(state is True for state in states):
            group.blocked_since = None
            return min(heads)[2]
        if group.blocked_since is None:
            group.blocked_since = now
        waited = now - group.blocked_since
        if any(state is None for state in states) and waited < self.max_wait:
            return None
        if any(state is False for state in states):
            busy = now - max(last_delivery, group.blocked_since) < self.max_wait
            if busy and waited < self.max_wait * BEHIND_WAIT_FACTOR:
                return None
        # Waited long enough: go on without the input that is behind (bounded delay).
        return min(heads)[2]
