"""Reading assigned Kafka partitions from given offsets to their ends: the one loop every reader uses.

The router's state restore, ``receiptflow consume``, the dead-letter listing and replay, and the
warehouse sink's replay all read a fixed set of partitions up to an end and then stop. A partition
ends at the first of:

* its partition-EOF event (the consumer must be created with ``enable.partition.eof``): the
  read-committed end at the time it is reached;
* a stop offset (exclusive) given for it, e.g. the end offsets taken when a replay started: a record
  at or past it is not returned, and the record just before it ends the partition at once (the last
  offset before a stop may be a transaction marker that is never delivered, hence "at or past").

What happens when nothing arrives is the caller's choice: wait (the default), stop quietly
(``stop_when_idle``: an empty ``consume()`` ends the read) or fail (``stall`` seconds without a
record raise :class:`~receiptflow.errors.BrokerError`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from confluent_kafka import KafkaError, Message, TopicPartition

from .errors import BrokerError

log = logging.getLogger(__name__)

Where = tuple[str, int]  # (topic, partition)


class AssignableConsumer(Protocol):
    """What the loop needs of a consumer (``confluent_kafka.Consumer`` has it; so can a stand-in)."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...


class ReadToEnd:
    """The records of ``partitions`` (assigned at their offsets) up to each partition's end.

    ``pending`` holds the partitions not at their end yet; :meth:`batches` yields what each
    ``consume()`` call brought that is before its partition's end (possibly nothing), so that a caller
    can do its own work between calls.
    """

    def __init__(
        self,
        consumer: AssignableConsumer,
        partitions: Sequence[TopicPartition],
        *,
        what: str,
        stops: Mapping[Where, int] | None = None,
        stall: float | None = None,
        stop_when_idle: bool = False,
        skip_transient: bool = False,
        only_pending: bool = False,
    ) -> None:
        """``what`` names the read in errors ("{what} failed: ...").

        ``skip_transient``: a non-fatal error is logged and skipped rather than raised.
        ``only_pending``: events of partitions that are not being read (or of none, such as a lost
        connection, which librdkafka retries) are ignored before any error check.
        """
        self.consumer = consumer
        self.partitions = list(partitions)
        self.what = what
        self.stops = stops or {}
        self.stall = stall
        self.stop_when_idle = stop_when_idle
        self.skip_transient = skip_transient
        self.only_pending = only_pending
        self.pending: set[Where] = {(tp.topic, tp.partition) for tp in self.partitions}

    def batches(self, size: int, timeout: float) -> Iterator[list[Message]]:
        """Per ``consume(size, timeout)`` call, its records before their partitions' ends."""
        if not self.pending:
            return
        self.consumer.assign(self.partitions)
        deadline = None if self.stall is None else time.monotonic() + self.stall
        while self.pending:
            batch = self.consumer.consume(size, timeout=timeout)
            if batch:
                deadline = None if self.stall is None else time.monotonic() + self.stall
            elif self.stop_when_idle:
                return
            elif deadline is not None and time.monotonic() > deadline:
                raise BrokerError(
                    f"{self.what} got nothing for {self.stall:.0f} s before the end of {sorted(self.pending)}"
                )
            yield self._within(batch)

    def records(self, size: int = 1000, timeout: float = 1.0) -> Iterator[Message]:
        """The records one by one (see :meth:`batches`)."""
        for batch in self.batches(size, timeout):
            yield from batch

    def _within(self, batch: list[Message]) -> list[Message]:
        wanted = []
        for msg in batch:
            where = (msg.topic() or "", msg.partition() or 0)
            if self.only_pending and where not in self.pending:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.pending.discard(where)
                    continue
                if self.skip_transient and not err.fatal():
                    # Transient (a leader moving, a connection lost): librdkafka retries by itself.
                    log.warning("%s: %s", self.what, err)
                    continue
                raise BrokerError(f"{self.what} failed: {err}")
            if where not in self.pending:
                continue  # its end was reached: what follows was written after the read started
            offset = msg.offset() or 0
            stop = self.stops.get(where)
            if stop is not None and offset >= stop:
                self.pending.discard(where)
                continue
            wanted.append(msg)
            if stop is not None and offset + 1 >= stop:
                self.pending.discard(where)
        return wanted
