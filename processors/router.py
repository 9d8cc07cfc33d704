"""The exactly-once router: checkouts and consents in, purchases out, in Kafka transactions.

Why this is not a faust agent: faust-streaming's ``processing_guarantee="exactly_once"`` has open
reports of duplicates after a kill and on rebalance (faust-streaming issues #517, #323), and its
per-event path is several times slower than a batch loop (see ``benchmarks/processor_throughput.py``).
The consume → transform → produce step therefore runs here, on confluent-kafka (librdkafka), with
the guarantees Kafka itself gives (KIP-98 transactions, KIP-447 group-fenced offsets):

* one read-committed consumer in the group ``Settings.processor_id`` subscribes to ``checkouts``
  and ``consents``; the range assignor gives a worker the same partition numbers of both topics,
  and both are keyed by card id, so a card's consent is on the worker that routes its receipts;
* each batch is one transaction: the routed purchases, dead letters, the dedup changelog entries
  and the consumed offsets (``send_offsets_to_transaction`` with the consumer's group metadata)
  commit together or not at all. A SIGKILL mid-batch leaves an open transaction that the restarted
  worker (same ``transactional.id``) aborts in ``init_transactions``; read-committed readers never
  see its records;
* duplicates upstream (the register outbox is at-least-once) are dropped by receipt id. The set of
  seen ids is state: it is written to the compacted changelog ``processor.receipts-seen`` in the
  same transaction, to the partition of the checkout, and read back when a worker is assigned that
  partition — after a crash or a rebalance the new owner knows exactly what was committed;
* consent state per card is rebuilt on assignment from the compacted ``consents`` topic up to the
  group's committed offset, then kept current by the stream itself;
* consent changes and checkouts are applied in the order they were written, not in the order the
  fetches happened to bring them: records wait in a :class:`~receiptflow.processors.merge.TimeOrderedMerge`
  until the other input of their partition is read to its end (or ``processor_order_wait_ms`` has
  passed), so a withdrawal written before a checkout applies to it after a restart, a rebalance or
  under lag. Only released records are processed, and only their offsets are committed.

Everything decided about a record is decided by the pure core (``core.validate``/``core.route``,
``consent.effective_consent``); this module decodes, calls it, produces, commits and counts.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ..codec import Codec
from ..config import Settings
from ..errors import BrokerError, ConfigError, ValidationError
from ..health import CONSUMER_CHECKS, PARTITIONS_ASSIGNED, STATE_RESTORED, Readiness
from ..lag import LagReporter
from ..metrics import Metrics
from ..models import Checkout, ConsentChange, ConsentState, Purchase
from ..policy import UNKNOWN_CHAIN_VERSION, Policy, load_policy
from ..secrets import analytics_key
from ..topics import TopicNames
from ..validation import dead_letter_record, validate, validate_consent
from .consent import ConsentHistory, effective_consent
from .core import route
from .encoding import BasketEncoder, PurchaseEncoder
from .merge import TimeOrderedMerge
from .pseudonym import BasketPseudonymiser
from .watchdog import CallWatchdog

log = logging.getLogger(__name__)

_MS = struct.Struct(">q")
_SEEN_ENTRY = struct.Struct(">qH")  # event time (ms), length of the receipt id in bytes
# Header marking a dedup changelog record that holds the receipt ids of one transaction for one
# partition (the older format, still read, is one record per receipt id: key = id, value = ms).
SEEN_BATCH_HEADER = ("receiptflow-seen", b"batch-v1")
# Receipt ids per batch record: keeps a record far below the broker's 1 MB default message limit.
_SEEN_PER_RECORD = 10_000
# librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks the partition (by key).
_ANY_PARTITION = -1
# Exit status of a worker that ended itself because a client call hung (EX_SOFTWARE).
HUNG_EXIT_CODE = 70
# A state restore that reads nothing for this long fails the worker (see _read_partitions).
_RESTORE_STALL_SECONDS = 90.0
# How often in-memory dedup entries older than the dedup window are dropped.
_PRUNE_EVERY = 600.0


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


@dataclass
class PartitionState:
    """What a worker knows about one partition number: receipt ids seen and consent histories."""

    seen: dict[str, int] = field(default_factory=dict)  # receipt id -> event time (ms)
    consent: dict[str, ConsentHistory] = field(default_factory=dict)  # card id -> history


@dataclass
class _Staged:
    """Changes made by the open transaction; merged into the state only after it commits."""

    seen: dict[tuple[int, str], int] = field(default_factory=dict)
    consent: dict[tuple[int, str], ConsentHistory] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    # Counted once the transaction commits (an aborted batch is processed again).
    consumed: Counter[str] = field(default_factory=Counter)  # topic -> records
    routed: Counter[str] = field(default_factory=Counter)  # output topic -> records
    processed: Counter[str] = field(default_factory=Counter)  # chain -> receipts routed
    stores: Counter[str] = field(default_factory=Counter)  # store -> receipts routed
    dead_letters: Counter[str] = field(default_factory=Counter)  # reason -> records
    duplicates: int = 0
    consent_changes: int = 0


@dataclass
class RouterStats:
    batches: int = 0
    consumed: int = 0
    routed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    consent_changes: int = 0
    aborted: int = 0


class Router:
    """One worker of the exactly-once router. ``run(stop)`` blocks until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: Policy | None = None,
        metrics: Metrics | None = None,
        codec: Codec | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        name: str = "router",
        on_hang: Callable[[str], None] | None = None,
        baskets: BasketPseudonymiser | None = None,
        readiness: Readiness | None = None,
    ) -> None:
        self.settings = settings
        # The analytics key stays in this process: only the router makes basket pseudonyms.
        self.baskets = baskets or BasketPseudonymiser(analytics_key(settings))
        self.names = TopicNames(settings.topic_prefix)
        self.policy = policy or load_policy(settings.policy_file)
        self.metrics = metrics or Metrics()
        self.readiness = readiness or Readiness(name, CONSUMER_CHECKS)
        self.lag = LagReporter(self.metrics, settings.processor_id)
        self.codec = codec or Codec()
        self.encoder = PurchaseEncoder(self.codec)
        self.basket_encoder = BasketEncoder(self.codec)
        # Transactional calls that outlive their own timeout (a librdkafka defect) end the worker.
        self.watchdog = CallWatchdog(on_hang or self._exit_hung)
        self.clock = clock
        self.name = name
        self.default_consent = ConsentState(
            settings.default_product_data_marketing, settings.default_electronic_marketing, known=False
        )
        self.dedup_window = timedelta(days=settings.processor_dedup_days)
        self.stats = RouterStats()
        self.state: dict[int, PartitionState] = {}
        self.transactional_id = f"{settings.processor_id}-{settings.processor_instance}"
        self._last_prune = time.monotonic()
        self._assigned_at = 0.0
        # Consents first: on equal timestamps a consent change is applied before a checkout (stricter).
        self._merge: TimeOrderedMerge[Message] = TimeOrderedMerge(
            [self.names.consents, self.names.checkouts], max_wait=settings.processor_order_wait_ms / 1000
        )
        # Where consumption of each assigned partition started: its position until a record is read.
        self._start_offsets: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._last_delivery = time.monotonic()  # when consume() last returned a record
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": settings.processor_id,
                    "client.id": f"{self.transactional_id}-consumer",
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
        self._producer = Producer(
            settings.kafka_config(
                **{
                    "transactional.id": self.transactional_id,
                    "client.id": self.transactional_id,
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

    # --- state ---------------------------------------------------------------------------------
    def _restore(self, partitions: list[TopicPartition]) -> None:
        """Rebuild dedup and consent state for newly assigned partition numbers."""
        started = time.perf_counter()
        numbers = sorted({tp.partition for tp in partitions})
        inputs = [TopicPartition(t, p) for t in (self.names.consents, self.names.checkouts) for p in numbers]
        with self.watchdog.call("consumer.committed (state restore)", 30):
            positions = self._consumer.committed(inputs, timeout=30)
        committed = {(tp.topic, tp.partition): tp.offset for tp in positions}
        self._start_offsets.update(committed)
        horizon = _ms(self.clock() - self.dedup_window)
        reader = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"{self.settings.processor_id}-restore",
                    "client.id": f"{self.transactional_id}-restore",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                }
            )
        )
        states = {p: PartitionState() for p in numbers}
        # Every partition in one pass (one fetch session) rather than one after another.
        wanted = [TopicPartition(self.names.receipts_seen, p, OFFSET_BEGINNING) for p in numbers]
        stops: dict[tuple[str, int], int] = {}
        for p in numbers:
            upto = committed.get((self.names.consents, p), OFFSET_INVALID)
            if upto > 0:
                wanted.append(TopicPartition(self.names.consents, p, OFFSET_BEGINNING))
                stops[(self.names.consents, p)] = upto
        try:
            for msg in _read_partitions(reader, wanted, stops):
                state = states[msg.partition() or 0]
                key, value = msg.key(), msg.value()
                if msg.topic() == self.names.receipts_seen:
                    if value is not None and SEEN_BATCH_HEADER in (msg.headers() or ()):
                        for rid, at in unpack_seen(value):
                            if at >= horizon:
                                state.seen[rid] = at
                        continue
                    if key is None:
                        continue
                    if value is None:
                        state.seen.pop(key.decode(), None)
                        continue
                    at = _MS.unpack(value)[0] if len(value) == _MS.size else horizon
                    if at >= horizon:
                        state.seen[key.decode()] = at
                    continue
                try:
                    change = self._consent_change(msg)
                except ValidationError:
                    continue  # it went to the dead-letter topic when it was first processed
                if change is not None:
                    history = state.consent.get(change.card_id, ConsentHistory())
                    state.consent[change.card_id] = history.with_change(change)
                elif key is not None:
                    state.consent.pop(key.decode(), None)
        finally:
            reader.close()
        for p, state in states.items():
            self.state[p] = state
            log.info(
                "%s: partition %d restored: %d receipt ids, %d cards with consent",
                self.name,
                p,
                len(state.seen),
                len(state.consent),
            )
        self._assigned_at = time.monotonic()
        self.metrics.state_restore_seconds.observe(time.perf_counter() - started)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.name, sorted((tp.topic, tp.partition) for tp in partitions))
        self.readiness.mark(PARTITIONS_ASSIGNED)
        self.readiness.mark(STATE_RESTORED, False)
        self._restore(partitions)
        self.readiness.mark(STATE_RESTORED)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Callbacks run inside consume(), i.e. between transactions: nothing is half-written here.
        log.info("%s: revoked %s", self.name, sorted((tp.topic, tp.partition) for tp in partitions))
        self.readiness.mark(PARTITIONS_ASSIGNED, False)
        numbers = {tp.partition for tp in partitions}
        for p in numbers:
            self.state.pop(p, None)
        # Buffered records of revoked partitions were never committed: their next owner reads them.
        self._merge.drop(numbers)
        # A pause outlives the assignment in librdkafka: lift ours, or a partition assigned back to
        # this worker would never be fetched again.
        paused = [tp for tp in partitions if (tp.topic, tp.partition) in self._paused]
        if paused:
            consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in paused])
        for tp in partitions:
            self._start_offsets.pop((tp.topic, tp.partition), None)
            self._paused.discard((tp.topic, tp.partition))

    def _prune(self) -> None:
        horizon = _ms(self.clock() - self.dedup_window)
        for state in self.state.values():
            state.seen = {rid: at for rid, at in state.seen.items() if at >= horizon}
        self._last_prune = time.monotonic()

    # --- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, max_idle: float | None = None) -> RouterStats:
        """Route until ``stop`` is set (or, with ``max_idle``, until nothing arrived for that long)."""
        stop = stop or threading.Event()
        self._check_copartitioned()
        self.watchdog.start()
        try:
            with self.watchdog.call("init_transactions", 60):
                self._producer.init_transactions(60)
        except KafkaException as exc:
            raise BrokerError(f"cannot initialise transactions as {self.transactional_id!r}: {exc}") from exc
        self._consumer.subscribe(
            [self.names.checkouts, self.names.consents], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        idle_since = time.monotonic()
        batch_max = self.settings.processor_batch_max
        try:
            while not stop.is_set():
                waiting = self._merge.pending() > 0
                msgs = self._consumer.consume(batch_max, timeout=0.1 if waiting else 0.5)
                self.lag.report(self._consumer)
                if self._buffer(msgs):
                    self._last_delivery = time.monotonic()
                ready = self._merge.release(
                    time.monotonic(), self._caught_up_now(), limit=batch_max, last_delivery=self._last_delivery
                )
                self._flow_control()
                if not ready:
                    if msgs or self._merge.pending():
                        idle_since = time.monotonic()  # records are arriving or waiting for their turn
                        continue
                    # Idle time counts once partitions are assigned and restored: joining is not idleness.
                    idle_since = max(idle_since, self._assigned_at)
                    if not self.state:
                        idle_since = time.monotonic()
                    elif max_idle is not None and time.monotonic() - idle_since > max_idle:
                        break
                    continue
                idle_since = time.monotonic()
                self._transaction(ready)
                if time.monotonic() - self._last_prune > _PRUNE_EVERY:
                    self._prune()
        finally:
            self.watchdog.stop()
            self.close()
        return self.stats

    # --- time order across the inputs ------------------------------------------------------------
    def _buffer(self, msgs: list[Message]) -> int:
        """Hand consumed records to the merge (returns how many); errors are dealt with here, never buffered."""
        added = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise BrokerError(f"consume failed: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    # Transient (broker restarting, connection lost): librdkafka retries by itself.
                    log.warning("%s: consumer: %s", self.name, err)
                continue
            _kind, timestamp = msg.timestamp()
            self._merge.add(msg.topic() or "", msg.partition() or 0, timestamp, msg)
            added += 1
        return added

    def _caught_up_now(self) -> Callable[[str, int], bool | None]:
        """Whether an input partition is read to its (read-committed) end, asked once per release."""
        answers: dict[tuple[str, int], bool | None] = {}

        def caught_up(topic: str, partition: int) -> bool | None:
            key = (topic, partition)
            if key not in answers:
                answers[key] = self._caught_up(topic, partition)
            return answers[key]

        return caught_up

    def _caught_up(self, topic: str, partition: int) -> bool | None:
        """True: read to its end; False: records on the broker not delivered yet; None: not known."""
        tp = TopicPartition(topic, partition)
        try:
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            position = self._consumer.position([tp])[0].offset
        except KafkaException:
            return None  # unknown: wait (bounded by processor_order_wait_ms)
        if position < 0:
            # Nothing read from it since the assignment: it starts at the committed offset, or at the
            # beginning of what the partition still holds.
            position = self._start_offsets.get((topic, partition), OFFSET_INVALID)
            if position < 0:
                position = low
        # The cached end comes from the latest fetch response (the last stable offset for this
        # read-committed consumer); unknown (negative) until the first fetch answers.
        if high < 0:
            return None
        return position >= high

    def _flow_control(self) -> None:
        """Pause inputs with many records waiting (the other input is behind), resume them once drained."""
        limit = 4 * self.settings.processor_batch_max
        for key in list(self._paused):
            if self._merge.buffered(*key) < self.settings.processor_batch_max:
                self._consumer.resume([TopicPartition(*key)])
                self._paused.discard(key)
        for topic in (self.names.consents, self.names.checkouts):
            for partition in self.state:
                key = (topic, partition)
                if key not in self._paused and self._merge.buffered(topic, partition) > limit:
                    self._consumer.pause([TopicPartition(topic, partition)])
                    self._paused.add(key)

    def _check_copartitioned(self) -> None:
        topics = (self.names.checkouts, self.names.consents, self.names.receipts_seen)
        try:
            md = self._consumer.list_topics(timeout=30)
        except KafkaException as exc:
            raise BrokerError(f"cannot read topic metadata: {exc}") from exc
        counts = {}
        for t in topics:
            if t not in md.topics or md.topics[t].error is not None:
                raise BrokerError(f"topic {t!r} does not exist (run `receiptflow topics create`)")
            counts[t] = len(md.topics[t].partitions)
        if len(set(counts.values())) != 1:
            raise ConfigError(f"{', '.join(topics)} must have the same number of partitions (co-partitioned): {counts}")

    def _exit_hung(self, message: str) -> None:
        """The default reaction to a hung call: stacks to stderr, then exit at once (like a SIGKILL)."""
        log.critical(
            "%s: %s; exiting so that a restarted worker aborts the open transaction and takes over", self.name, message
        )
        faulthandler.dump_traceback(all_threads=True)
        os._exit(HUNG_EXIT_CODE)

    def close(self) -> None:
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("consumer close: %s", exc)
        self._producer.flush(10)

    def _transaction(self, msgs: list[Message]) -> None:
        started = time.perf_counter()
        staged = _Staged()
        now = self.clock()
        self._producer.begin_transaction()
        try:
            for msg in msgs:  # released by the merge: records, never errors
                topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
                staged.offsets[(topic, partition)] = offset + 1
                staged.consumed[topic] += 1
                if topic == self.names.consents:
                    self._handle_consent(msg, partition, staged, now)
                else:
                    self._handle_checkout(msg, partition, staged, now)
            self._write_seen(staged)
            offsets = [TopicPartition(t, p, o) for (t, p), o in staged.offsets.items()]
            with self.watchdog.call("send_offsets_to_transaction", 30):
                self._producer.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata(), 30)
            with self.watchdog.call("commit_transaction", 60):
                self._producer.commit_transaction(60)
        except KafkaException as exc:
            self._abort(exc)
            return
        for (p, rid), at in staged.seen.items():
            self.state.setdefault(p, PartitionState()).seen[rid] = at
        for (p, card), history in staged.consent.items():
            self.state.setdefault(p, PartitionState()).consent[card] = history
        self._count(staged, len(msgs))
        self.metrics.batch_size.labels("router").observe(len(msgs))
        self.metrics.batch_seconds.labels("router").observe(time.perf_counter() - started)

    def _write_seen(self, staged: _Staged) -> None:
        """The transaction's receipt ids, one changelog record per partition (not one per receipt).

        Written inside the transaction, to the partition of the checkouts they came from, so the
        worker that is assigned that partition next reads exactly what was committed.
        """
        by_partition: dict[int, list[tuple[str, int]]] = {}
        for (p, rid), at in staged.seen.items():
            by_partition.setdefault(p, []).append((rid, at))
        for p, entries in by_partition.items():
            for i in range(0, len(entries), _SEEN_PER_RECORD):
                # A key of its own: the topic is compacted, and no batch may replace another.
                key = f"{self.transactional_id}:{uuid.uuid4().hex}".encode()
                value = pack_seen(entries[i : i + _SEEN_PER_RECORD])
                self._produce(self.names.receipts_seen, key, value, partition=p, headers=[SEEN_BATCH_HEADER])

    def _count(self, staged: _Staged, consumed: int) -> None:
        """Stats and metrics of a committed transaction (per batch: per-record label lookups cost)."""
        m, st = self.metrics, self.stats
        st.batches += 1
        st.consumed += consumed
        st.routed += sum(staged.processed.values())
        st.duplicates += staged.duplicates
        st.dead_letters += sum(staged.dead_letters.values())
        st.consent_changes += staged.consent_changes
        m.transactions_total.labels("committed").inc()
        for topic, n in staged.consumed.items():
            m.consumed_total.labels(topic).inc(n)
        for topic, n in staged.routed.items():
            m.routed_total.labels(topic).inc(n)
        for chain, n in staged.processed.items():
            m.processed_total.labels(chain).inc(n)
        for store, n in staged.stores.items():
            m.store_checkouts_total.labels(store).inc(n)
        for reason, n in staged.dead_letters.items():
            m.dead_letters_total.labels(reason).inc(n)
        if staged.duplicates:
            m.duplicates_total.labels("router").inc(staged.duplicates)
        if staged.consent_changes:
            m.consent_changes_total.inc(staged.consent_changes)

    def _abort(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is not None and err.fatal():
            raise BrokerError(f"fatal transaction error (fenced by another worker?): {err}") from exc
        log.warning("%s: transaction aborted, rewinding to the committed offsets: %s", self.name, exc)
        self.stats.aborted += 1
        self.metrics.transactions_total.labels("aborted").inc()
        try:
            with self.watchdog.call("abort_transaction", 60):
                self._producer.abort_transaction(60)
        except KafkaException as abort_exc:
            raise BrokerError(f"cannot abort transaction: {abort_exc}") from abort_exc
        # Staged state is dropped with the transaction; consumption restarts at what was committed,
        # so whatever waited in the merge is read again.
        self._merge.clear()
        if self._paused:
            self._consumer.resume([TopicPartition(t, p) for t, p in self._paused])
            self._paused.clear()
        assignment = self._consumer.assignment()
        with self.watchdog.call("consumer.committed (rewind)", 30):
            positions = self._consumer.committed(assignment, timeout=30)
        for tp in positions:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    # --- per record ----------------------------------------------------------------------------
    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        at = _ANY_PARTITION if partition is None else partition
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, partition=at, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _dead_letter(self, exc: ValidationError, msg: Message, staged: _Staged, now: datetime) -> None:
        record = dead_letter_record(
            exc,
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            now=now,
            processor=self.transactional_id,
        )
        self._produce(self.names.checkouts_dlq, msg.key(), self.codec.encode("dead_letter", record))
        staged.dead_letters[exc.reason] += 1
        log.warning("rejected %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc)

    def _consent_change(self, msg: Message) -> ConsentChange | None:
        if msg.value() is None:  # tombstone: the card was erased; its history goes with it
            return None
        change = ConsentChange.from_avro(self.codec.decode(msg.value(), expect="consent_change").value)
        validate_consent(change)
        return change

    def _history(self, partition: int, card: str, staged: _Staged) -> ConsentHistory | None:
        staged_history = staged.consent.get((partition, card))
        if staged_history is not None:
            return staged_history
        state = self.state.get(partition)
        return state.consent.get(card) if state is not None else None

    def _handle_consent(self, msg: Message, partition: int, staged: _Staged, now: datetime) -> None:
        try:
            change = self._consent_change(msg)
        except ValidationError as exc:
            self._dead_letter(exc, msg, staged, now)
            return
        if change is None:
            key = msg.key()
            if key is not None:
                staged.consent[(partition, key.decode())] = ConsentHistory()
            return
        history = self._history(partition, change.card_id, staged) or ConsentHistory()
        staged.consent[(partition, change.card_id)] = history.with_change(change)
        staged.consent_changes += 1

    def _handle_checkout(self, msg: Message, partition: int, staged: _Staged, now: datetime) -> None:
        try:
            decoded, lines_raw = self.codec.decode_checkout(msg.value())
            checkout = Checkout.from_avro(decoded.value)
            validate(checkout, now)
        except ValidationError as exc:
            self._dead_letter(exc, msg, staged, now)
            return
        rid = checkout.receipt_id
        state = self.state.get(partition)
        if (partition, rid) in staged.seen or (state is not None and rid in state.seen):
            staged.duplicates += 1
            return
        decision = self.policy.version_at(checkout.chain, checkout.event_time)
        if decision.version_id == UNKNOWN_CHAIN_VERSION:
            self.metrics.unknown_chain_total.labels(checkout.chain).inc()
            log.warning("unknown chain %r: applied the strictest level", checkout.chain)
        history = self._history(partition, checkout.card_id, staged) if checkout.card_id else None
        consent = effective_consent(history, checkout.event_time, self.default_consent)
        routed = route(checkout, decision, consent, now, self.baskets)
        key = _key(routed.customer)
        # Lines and groups are encoded once per receipt (the lines not at all: the checkout's bytes).
        enc = self.encoder.receipt(checkout.lines, lines_raw)
        customer = enc.encode(routed.customer)
        self._send(self.names.purchases_customer, key, customer, staged)
        if routed.marketing is routed.customer:
            self._send(self.names.purchases_marketing, key, customer, staged)  # the same record: encoded once
        elif routed.marketing is not None:
            value = enc.encode(routed.marketing)
            self._send(self.names.purchases_marketing, key, value, staged)
        if routed.analytics is not None:
            value = self.basket_encoder.encode(routed.analytics)
            self._send(self.names.purchases_analytics, routed.analytics.store_id.encode(), value, staged)
        at = _ms(checkout.event_time)
        staged.seen[(partition, rid)] = at  # to the changelog at the end of the transaction
        staged.processed[checkout.chain] += 1
        staged.stores[checkout.store_id] += 1

    def _send(self, topic: str, key: bytes, value: bytes, staged: _Staged) -> None:
        self._produce(topic, key, value)
        staged.routed[topic] += 1


def pack_seen(entries: Iterable[tuple[str, int]]) -> bytes:
    """Receipt ids with their event times (ms), as one dedup changelog value."""
    out = bytearray()
    for rid, at in entries:
        raw = rid.encode()
        out += _SEEN_ENTRY.pack(at, len(raw))
        out += raw
    return bytes(out)


def unpack_seen(value: bytes) -> list[tuple[str, int]]:
    """The inverse of :func:`pack_seen`; raises ``ValueError`` on a truncated value."""
    entries = []
    at_byte, end = 0, len(value)
    while at_byte < end:
        if at_byte + _SEEN_ENTRY.size > end:
            raise ValueError("truncated dedup changelog entry")
        at, size = _SEEN_ENTRY.unpack_from(value, at_byte)
        at_byte += _SEEN_ENTRY.size
        if at_byte + size > end:
            raise ValueError("truncated receipt id in dedup changelog entry")
        entries.append((value[at_byte : at_byte + size].decode(), at))
        at_byte += size
    return entries


def _key(p: Purchase) -> bytes:
    return (p.card_id or p.store_id).encode()


def _read_partitions(
    reader: Consumer, partitions: list[TopicPartition], stops: dict[tuple[str, int], int]
) -> Iterable[Message]:
    """Records of ``partitions`` from their given offsets to their (read-committed) ends, or before ``stops``."""
    if not partitions:
        return
    pending = {(tp.topic, tp.partition) for tp in partitions}
    reader.assign(partitions)
    # A stall, not a long read, ends the restore: a large changelog may take minutes, but nothing at
    # all for this long (longer than an open transaction can hold the read-committed end back
    # before the broker aborts it) means the worker should fail and be restarted.
    deadline = time.monotonic() + _RESTORE_STALL_SECONDS
    try:
        while pending:
            batch = reader.consume(5000, timeout=1.0)
            if batch:
                deadline = time.monotonic() + _RESTORE_STALL_SECONDS
            elif time.monotonic() > deadline:
                raise BrokerError(
                    f"state restore got nothing for {_RESTORE_STALL_SECONDS:.0f} s before the end of {sorted(pending)}"
                )
            for msg in batch:
                where = (msg.topic() or "", msg.partition() or 0)
                if where not in pending:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(where)
                        continue
                    raise BrokerError(f"state restore of {where[0]}[{where[1]}] failed: {err}")
                offset = msg.offset() or 0
                stop = stops.get(where)
                if stop is not None and offset >= stop:
                    pending.discard(where)
                    continue
                yield msg
                if stop is not None and offset + 1 >= stop:
                    pending.discard(where)
    finally:
        reader.unassign()
