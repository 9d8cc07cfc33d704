"""The exactly-once aggregator: anonymous baskets in, analytics cells out, one Kafka transaction per turn.

A :class:`~receiptflow.worker_loop.KafkaWorker` on confluent-kafka, with the guarantees Kafka gives
(KIP-98 transactions, KIP-447 group-fenced offsets), as the router:

* one read-committed consumer in the aggregator's group reads ``purchases.baskets``; each partition's
  open windows live in a :class:`~.windows.PartitionWindows` (pure: what joins which window, when a
  window closes, what offset is committed);
* a turn reads a batch, then closes what is due. Everything the turn writes is one transaction: the
  cells of each closed window on ``purchases.analytics`` (Avro ``analytics_cell``, key = window id),
  its close marker on ``analytics.windows``, the rewritten marker of each window that counted a late
  basket, the dead letters of records that are no basket, and the consumer offsets
  (``send_offsets_to_transaction``): each partition's oldest open window's first offset, so what is
  open is read again after a crash, with :class:`~.windows.Progress` in the offset's metadata;
* on assignment (and after an aborted transaction) the worker takes the committed offsets first, then
  reads ``analytics.windows`` to its end: a restarted aggregator has aborted what its killed self left
  open (``init_transactions``, before it joins the group), so the markers it reads are exactly those
  of the transactions whose offsets it was given. A record it reads again is skipped when its
  window's marker counted it, and late otherwise (:mod:`.windows`).

Nothing here decides anything about a basket; this module consumes, produces, commits and counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import LetterSealer, Rejected
from receiptflow.errors import BrokerError, DeadLetterVaultError
from receiptflow.health import STATE_RESTORED, Readiness
from receiptflow.metrics import Metrics
from receiptflow.registry import codec_for
from receiptflow.topics import TopicNames
from receiptflow.worker_loop import KafkaWorker

from .clients import AggregateClients, group_id, kafka_clients, read_closed, transactional_id
from .decode import decode_basket
from .marker import Marker
from .windows import Closed, Outcome, PartitionWindows, Progress, Timing

log = logging.getLogger(__name__)

STAGE = "aggregate"  # label value of the shared batch metrics
# How long a turn's consume waits for records: also how often the idle rule is looked at.
_BATCH_WAIT = 0.25


@dataclass
class AggregateStats:
    """What one aggregator did, counted per committed transaction."""

    records: int = 0  # read, including records read again after a restart or an aborted transaction
    windows_closed: int = 0
    cells_published: int = 0
    late_baskets: int = 0
    dead_letters: int = 0
    aborted: int = 0

    def __str__(self) -> str:
        return (
            f"{self.records} basket records read, {self.windows_closed} windows closed, "
            f"{self.cells_published} cells published, {self.late_baskets} late baskets, "
            f"{self.dead_letters} dead letters, {self.aborted} transactions aborted"
        )


@dataclass
class Turn:
    """What one turn writes in its transaction."""

    records: int = 0
    closed: list[Closed] = field(default_factory=list)
    markers: dict[str, Marker] = field(default_factory=dict)  # window id -> its newest marker
    late: Counter[str] = field(default_factory=Counter)  # chain -> late baskets
    dead: list[Rejected] = field(default_factory=list)

    def close(self, closed: Closed) -> None:
        self.closed.append(closed)
        self.markers[closed.window.id] = closed.marker

    def writes(self) -> bool:
        return bool(self.markers or self.dead)


class Aggregator(KafkaWorker):
    """One aggregator worker. ``run(stop)`` blocks until ``stop`` is set (or, with ``max_idle``, until idle)."""

    consumer: Consumer

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        readiness: Readiness | None = None,
        codec: Codec | None = None,
        clients: AggregateClients | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        name: str = "aggregate",
    ) -> None:
        self.settings = settings
        self.names = TopicNames(settings.kafka.topic_prefix)
        self.codec = codec or codec_for(settings)
        self.k = settings.aggregate.k
        self.timing = Timing(settings.aggregate.grace_seconds * 1000, settings.aggregate.idle_close_seconds * 1000)
        self.transactional_id = transactional_id(settings)
        self.clock = clock
        self.stats = AggregateStats()
        self.closed: dict[str, Marker] = {}  # window id -> marker, shared by the partitions' windows
        self.partitions: dict[int, PartitionWindows] = {}
        self._committed: dict[int, int | None] = {}  # partition -> the offset its last transaction committed
        self._clients = clients or kafka_clients(settings)
        self._producer = self._clients.producer
        # Baskets carry no card id: their letters keep the bytes as they are, and need no vault.
        self.letters = LetterSealer(settings, self.transactional_id, group_id(settings), codec=self.codec)
        super().__init__(
            name, group_id(settings), self._clients.consumer, metrics=metrics or Metrics(), readiness=readiness
        )

    # --- the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, max_idle: float | None = None) -> AggregateStats:
        """Aggregate until ``stop`` is set (or, with ``max_idle``, until nothing happened for that long)."""
        self._check_topics()
        try:
            self._producer.init_transactions(60)
        except KafkaException as exc:
            self.consumer.close()
            raise BrokerError(f"cannot initialise transactions as {self.transactional_id!r}: {exc}") from exc
        try:
            if self.loop([self.names.analytics_baskets], stop or threading.Event(), max_idle):
                log.info("%s idle for %.1fs, exiting: %s", self.name, max_idle, self.stats)
        finally:
            self.close()
        return self.stats

    def turn(self) -> bool:
        """One consume, the windows it closes (and those the idle rule closes), at most one transaction."""
        msgs = self.consumer.consume(self.settings.aggregate.batch_max, timeout=_BATCH_WAIT)
        self.heartbeat()
        turn = Turn()
        now = self.clock()
        self._read(msgs, turn, now)
        if turn.records:
            self.stats.records += turn.records
            self.metrics.consumed_total.labels(self.names.analytics_baskets).inc(turn.records)
        for p, windows in self.partitions.items():
            if not windows.open:
                continue
            for w in windows.due(self.timing, _ms(now), self._caught_up(p, windows)):
                turn.close(windows.close(w, self.k, now))
        moved = any(w.committed() != self._committed.get(p) for p, w in self.partitions.items())
        if turn.writes() or moved:
            self._transaction(turn)
        self._gauges()
        return bool(msgs) or turn.writes()

    def idle_counts(self) -> bool:
        """Idle time counts while partitions are assigned and restored."""
        return bool(self.partitions)

    def _read(self, msgs: list[Message], turn: Turn, now: datetime) -> None:
        """Each record into its partition's windows; windows the stream time passes close at once, so what
        comes after them in the log is late whatever the batches were."""
        now_ms = _ms(now)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise BrokerError(f"consume failed: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer: %s", self.name, err)  # transient: librdkafka retries
                continue
            windows = self.partitions.get(msg.partition() or 0)
            if windows is None:
                continue  # not (or no longer) assigned: its next owner reads it
            turn.records += 1
            offset = msg.offset() or 0
            basket = decode_basket(self.codec, msg)
            if isinstance(basket, Rejected):
                if windows.skip(offset, now_ms):
                    turn.dead.append(basket)
                continue
            read = windows.read(offset, basket, now_ms)
            if read.outcome is Outcome.LATE and read.marker is not None:
                turn.markers[read.window.id] = read.marker
                turn.late[read.window.chain] += 1
                continue
            for w in windows.due(self.timing):
                turn.close(windows.close(w, self.k, now))

    def _caught_up(self, partition: int, windows: PartitionWindows) -> bool:
        """Whether the partition is read to its (read-committed) end: only then does quiet mean idle."""
        tp = TopicPartition(self.names.analytics_baskets, partition)
        try:
            _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            position = self.consumer.position([tp])[0].offset
        except KafkaException:
            return False
        if position < 0:
            position = windows.next_offset if windows.next_offset is not None else (windows.start or 0)
        return high >= 0 and position >= high

    # --- the transaction -------------------------------------------------------------------------
    def _transaction(self, turn: Turn) -> None:
        started = time.perf_counter()
        offsets = self._offsets()
        self._producer.begin_transaction()
        try:
            for closed in turn.closed:
                key = closed.window.id.encode()
                for cell in closed.cells:
                    value = self.codec.encode("analytics_cell", cell.to_avro(self.k))
                    self._produce(self.names.purchases_analytics, key, value)
            for marker in turn.markers.values():
                self._produce(self.names.analytics_windows, marker.window_id.encode(), marker.to_json())
            for r in turn.dead:
                self._produce(self.names.checkouts_dlq, *self.letters.encoded(r, self.clock()))
            if offsets:
                group = self.consumer.consumer_group_metadata()
                self._producer.send_offsets_to_transaction(offsets, group, 30)
            self._producer.commit_transaction(60)
        except (KafkaException, DeadLetterVaultError) as exc:
            self._abort(exc)
            if isinstance(exc, DeadLetterVaultError):  # unsealed a letter might name a card, skipped be lost
                self.letters.backoff.failed(exc)
            return
        for tp in offsets:
            self._committed[tp.partition] = tp.offset
        self._report(turn)
        self.metrics.batch_size.labels(STAGE).observe(turn.records)
        self.metrics.batch_seconds.labels(STAGE).observe(time.perf_counter() - started)

    def _offsets(self) -> list[TopicPartition]:
        return [
            TopicPartition(self.names.analytics_baskets, p, offset, metadata=windows.progress().to_metadata())
            for p, windows in sorted(self.partitions.items())
            if (offset := windows.committed()) is not None
        ]

    def _report(self, turn: Turn) -> None:
        """Count a committed turn in the stats, the metrics and the log."""
        stats, metrics = self.stats, self.metrics
        for closed in turn.closed:
            stats.windows_closed += 1
            stats.cells_published += len(closed.cells)
            metrics.windows_closed_total.labels(closed.window.chain).inc()
            for family, n in Counter(c.key.family.value for c in closed.cells).items():
                metrics.cells_published_total.labels(family).inc(n)
            m = closed.marker
            log.info(
                "%s: closed window %s (partition %d): %d baskets, %d cells published",
                self.name,
                closed.window.id,
                m.partition,
                m.sale_baskets + m.refund_baskets,
                m.cells,
            )
        for chain, n in turn.late.items():
            stats.late_baskets += n
            metrics.late_baskets_total.labels(chain).inc(n)
            log.info("%s: %d late basket(s) of chain %s counted and dropped", self.name, n, chain)
        for r in turn.dead:
            stats.dead_letters += 1
            metrics.dead_letters_total.labels(r.error.reason).inc()
            log.warning("dead-lettered %s[%d]@%d: %s", r.topic, r.partition, r.offset, r.error)

    def _abort(self, exc: Exception) -> None:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is not None and err.fatal():
            raise BrokerError(f"fatal transaction error (fenced by another aggregator?): {err}") from exc
        log.warning("%s: transaction aborted, reading again from the committed offsets: %s", self.name, exc)
        self.stats.aborted += 1
        try:
            self._producer.abort_transaction(60)
        except KafkaException as abort_exc:
            raise BrokerError(f"cannot abort transaction: {abort_exc}") from abort_exc
        # The windows closed and the lates counted in memory went with the transaction: start over from
        # what is committed, as after an assignment.
        assignment = self.consumer.assignment()
        for tp in self._restore(assignment):
            self.consumer.seek(tp)

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key)
                return
            except BufferError:
                self._producer.poll(0.05)

    # --- partitions ------------------------------------------------------------------------------
    def assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.name, sorted(tp.partition for tp in partitions))
        self.readiness.mark(STATE_RESTORED, False)
        started = time.perf_counter()
        positioned = self._restore(partitions)
        # Assigning here, at the offsets read, is what makes the positions stick.
        consumer.assign(positioned)
        self.metrics.state_restore_seconds.observe(time.perf_counter() - started)
        self.readiness.mark(STATE_RESTORED)

    def revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Callbacks run inside consume(), between transactions: nothing is half-written here.
        log.info("%s: revoked %s", self.name, sorted(tp.partition for tp in partitions))
        for tp in partitions:
            self.partitions.pop(tp.partition, None)
            self._committed.pop(tp.partition, None)
        self._gauges()

    def _restore(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The partitions' windows as committed: the offsets first, then the markers (see the module)."""
        wanted = [TopicPartition(self.names.analytics_baskets, tp.partition) for tp in partitions]
        try:
            positions = self.consumer.committed(wanted, timeout=30)
        except KafkaException as exc:
            raise BrokerError(f"cannot read the aggregator's committed offsets: {exc}") from exc
        markers = read_closed(self._clients.windows_reader(), self.names.analytics_windows)
        self.closed.clear()
        self.closed.update(markers)
        now_ms = _ms(self.clock())
        positioned = []
        for tp in positions:
            start = tp.offset if tp.offset >= 0 else None
            progress = Progress.from_metadata(tp.metadata)
            self.partitions[tp.partition] = PartitionWindows(tp.partition, start, now_ms, self.closed, progress)
            self._committed[tp.partition] = start
            offset = start if start is not None else OFFSET_BEGINNING
            positioned.append(TopicPartition(tp.topic, tp.partition, offset))
        log.info(
            "%s: restored partitions %s from %s; %d windows closed before",
            self.name,
            sorted(tp.partition for tp in positions),
            {tp.partition: tp.offset for tp in positions},
            len(markers),
        )
        return positioned

    def _check_topics(self) -> None:
        try:
            md = self.consumer.list_topics(timeout=30)
        except KafkaException as exc:
            raise BrokerError(f"cannot read topic metadata: {exc}") from exc
        for t in (self.names.analytics_baskets, self.names.analytics_windows, self.names.purchases_analytics):
            if t not in md.topics or md.topics[t].error is not None:
                self.consumer.close()
                raise BrokerError(f"topic {t!r} does not exist (run `receiptflow topics create`)")

    def _gauges(self) -> None:
        self.metrics.open_windows.set(sum(len(w.open) for w in self.partitions.values()))
        self.metrics.open_baskets.set(sum(w.open_baskets for w in self.partitions.values()))
        # A window still open long after its day ended is one that does not close: an alert watches its age.
        ends = [end for w in self.partitions.values() if (end := w.oldest_end_ms) is not None]
        self.metrics.oldest_open_window_end.set(min(ends) / 1000 if ends else 0)

    def close(self) -> None:
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("consumer close: %s", exc)
        self._producer.flush(10)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)
