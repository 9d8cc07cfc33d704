"""The exactly-once router: checkouts and consents in, purchases out, in Kafka transactions.

Why this is not a faust agent: faust-streaming's ``processing_guarantee="exactly_once"`` has open
reports of duplicates after a kill and on rebalance (faust-streaming issues #517, #323), and its
per-event path is several times slower than a batch loop (see ``benchmarks/processor_throughput.py``).
The consume → transform → produce step therefore runs here, on confluent-kafka (librdkafka), with
the guarantees Kafka itself gives (KIP-98 transactions, KIP-447 group-fenced offsets):

* one read-committed consumer in the group ``Settings.router.id`` subscribes to ``checkouts``
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
  fetches happened to bring them: records wait in a :class:`~receiptflow.processors.router.merge.TimeOrderedMerge`
  until the other input of their partition is read to its end (or ``settings.router.order_wait_ms`` has
  passed), so a withdrawal written before a checkout applies to it after a restart, a rebalance or
  under lag. Only released records are processed, and only their offsets are committed;
* erased cards are kept out: the erased-cards topic is read to its end before the first transaction
  and up to its end again before each commit (:mod:`.erased`); their records are dropped and counted.

Everything decided about a record is decided without I/O by :mod:`.step`; the state and its changelog
in :mod:`.state`. This module is the loop: it consumes, calls the step, seals its dead letters (the
vault, :mod:`receiptflow.dlq_write`: when it does not answer, the batch is aborted and read again after
a pause), produces, commits and counts, on the clients it is given (:mod:`.clients`).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from receiptflow.card_hash import CardHasher
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq_write import LetterSealer
from receiptflow.errors import BrokerError, DeadLetterVaultError
from receiptflow.health import STATE_RESTORED, Readiness
from receiptflow.metrics import Metrics
from receiptflow.models import ConsentState
from receiptflow.policy import Policy, load_policy
from receiptflow.registry import codec_for
from receiptflow.secrets import analytics_key, erasure_salt
from receiptflow.topics import TopicNames
from receiptflow.worker_loop import KafkaWorker

from .clients import GroupConsumer, RouterClients, check_copartitioned, kafka_clients, produce, read_to_end
from .erased import ErasureFollower
from .merge import TimeOrderedMerge
from .pseudonym import BasketPseudonymiser
from .state import SEEN_BATCH_HEADER, PartitionState, RouterStats, Staged, ms, restore, seen_records
from .step import RouteStep
from .watchdog import CallWatchdog

log = logging.getLogger(__name__)

# Exit status of a worker that ended itself because a client call hung (EX_SOFTWARE).
HUNG_EXIT_CODE = 70
# How often in-memory dedup entries older than the dedup window are dropped.
_PRUNE_EVERY = 600.0


class Router(KafkaWorker):
    """One worker of the exactly-once router. ``run(stop)`` blocks until ``stop`` is set.

    A :class:`~receiptflow.worker_loop.KafkaWorker` (readiness, heartbeat, idleness): a turn is one
    consume and at most one transaction; an assignment restores the partitions' state.
    ``clients``: the Kafka clients to use; by default the real ones (:func:`.router_clients.kafka_clients`).
    """

    consumer: GroupConsumer

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
        clients: RouterClients | None = None,
        readiness: Readiness | None = None,
        letters: LetterSealer | None = None,
    ) -> None:
        self.settings = settings
        self.names = TopicNames(settings.kafka.topic_prefix)
        # Transactional calls that outlive their own timeout (a librdkafka defect) end the worker.
        self.watchdog = CallWatchdog(on_hang or self._exit_hung)
        self.clock = clock
        self.dedup_window = timedelta(days=settings.router.dedup_days)
        self.stats = RouterStats()
        self.state: dict[int, PartitionState] = {}
        self.transactional_id = f"{settings.router.id}-{settings.router.instance}"
        self.step = RouteStep(
            self.names,
            policy or load_policy(settings.privacy.policy_file),
            codec or codec_for(settings),
            # The analytics key stays in this process: only the router makes basket pseudonyms.
            baskets or BasketPseudonymiser(analytics_key(settings)),
            ConsentState(
                settings.privacy.default_product_data_marketing, settings.privacy.default_electronic_marketing, False
            ),
            self.transactional_id,
            fast=settings.router.fast_path,
            consent_max_age=settings.privacy.consent_max_age,
        )
        self.letters = letters or LetterSealer(
            settings, self.transactional_id, settings.router.id, codec=self.step.codec
        )
        self._last_prune = time.monotonic()
        # Consents first: on equal timestamps a consent change is applied before a checkout (stricter).
        self._merge: TimeOrderedMerge[Message] = TimeOrderedMerge(
            [self.names.consents, self.names.checkouts], max_wait=settings.router.order_wait_ms / 1000
        )
        # Where consumption of each assigned partition started: its position until a record is read.
        self._start_offsets: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._last_delivery = time.monotonic()  # when consume() last returned a record
        self._clients = clients or kafka_clients(settings, self.transactional_id)
        self._producer = self._clients.producer
        # The erasure salt stays with the writers: it turns a card id into the erased-cards record's key.
        self.erased = ErasureFollower(self._clients.erasures, CardHasher(erasure_salt(settings)))
        super().__init__(
            name, settings.router.id, self._clients.consumer, metrics=metrics or Metrics(), readiness=readiness
        )
        # consume() returns when batch_max records are there or the wait is over: under load the batch
        # fills at once, under light load this wait is what a record spends before its transaction.
        self._batch_wait = settings.router.batch_wait_ms / 1000

    # --- state ---------------------------------------------------------------------------------
    def _restore(self, partitions: list[TopicPartition]) -> None:
        """Rebuild dedup and consent state for newly assigned partition numbers."""
        started = time.perf_counter()
        numbers = sorted({tp.partition for tp in partitions})
        inputs = [TopicPartition(t, p) for t in (self.names.consents, self.names.checkouts) for p in numbers]
        with self.watchdog.call("consumer.committed (state restore)", 30):
            positions = self.consumer.committed(inputs, timeout=30)
        committed = {(tp.topic, tp.partition): tp.offset for tp in positions}
        self._start_offsets.update(committed)
        horizon = ms(self.clock() - self.dedup_window)
        reader = self._clients.restore_reader()
        try:
            states = restore(reader, self.names, numbers, committed, horizon, self.step.consent_change)
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
        self.metrics.state_restore_seconds.observe(time.perf_counter() - started)

    def assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.name, sorted((tp.topic, tp.partition) for tp in partitions))
        self.readiness.mark(STATE_RESTORED, False)
        self._restore(partitions)
        self.readiness.mark(STATE_RESTORED)

    def revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Callbacks run inside consume(), i.e. between transactions: nothing is half-written here.
        log.info("%s: revoked %s", self.name, sorted((tp.topic, tp.partition) for tp in partitions))
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
        horizon = ms(self.clock() - self.dedup_window)
        for state in self.state.values():
            state.seen = {rid: at for rid, at in state.seen.items() if at >= horizon}
        self._last_prune = time.monotonic()

    # --- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, max_idle: float | None = None) -> RouterStats:
        """Route until ``stop`` is set (or, with ``max_idle``, until nothing arrived for that long)."""
        stop = stop or threading.Event()
        check_copartitioned(self.consumer, (self.names.checkouts, self.names.consents, self.names.receipts_seen))
        self.erased.start()  # before any record is routed
        self.watchdog.start()
        try:
            with self.watchdog.call("init_transactions", 60):
                self._producer.init_transactions(60)
        except KafkaException as exc:
            raise BrokerError(f"cannot initialise transactions as {self.transactional_id!r}: {exc}") from exc
        try:
            self.loop([self.names.checkouts, self.names.consents], stop, max_idle)
        finally:
            self.watchdog.stop()
            self.close()
            self.erased.close()
        return self.stats

    def turn(self) -> bool:
        """One consume, and one transaction of what the merge releases; True unless nothing arrived or waits."""
        batch_max = self.settings.router.batch_max
        msgs = self.consumer.consume(batch_max, timeout=self._batch_wait)
        self.heartbeat()
        if self._buffer(msgs):
            self._last_delivery = time.monotonic()
        ready = self._merge.release(
            time.monotonic(), self._caught_up_now(), limit=batch_max, last_delivery=self._last_delivery
        )
        self._flow_control()
        if not ready:
            return bool(msgs) or self._merge.pending() > 0  # arriving, or waiting for their turn
        self._transaction(ready)
        if time.monotonic() - self._last_prune > _PRUNE_EVERY:
            self._prune()
        return True

    def idle_counts(self) -> bool:
        """Idle time counts while partitions are assigned and restored."""
        return bool(self.state)

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
        return read_to_end(self.consumer, topic, partition, self._start_offsets)

    def _flow_control(self) -> None:
        """Pause inputs with many records waiting (the other input is behind), resume them once drained."""
        limit = 4 * self.settings.router.batch_max
        for key in list(self._paused):
            if self._merge.buffered(*key) < self.settings.router.batch_max:
                self.consumer.resume([TopicPartition(*key)])
                self._paused.discard(key)
        for topic in (self.names.consents, self.names.checkouts):
            for partition in self.state:
                key = (topic, partition)
                if key not in self._paused and self._merge.buffered(topic, partition) > limit:
                    self.consumer.pause([TopicPartition(topic, partition)])
                    self._paused.add(key)

    def _exit_hung(self, message: str) -> None:
        """The default reaction to a hung call: stacks to stderr, then exit at once (like a SIGKILL)."""
        log.critical(
            "%s: %s; exiting so that a restarted worker aborts the open transaction and takes over", self.name, message
        )
        faulthandler.dump_traceback(all_threads=True)
        os._exit(HUNG_EXIT_CODE)

    def close(self) -> None:
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("consumer close: %s", exc)
        self._producer.flush(10)

    def _transaction(self, msgs: list[Message]) -> None:
        started = time.perf_counter()
        staged = Staged()
        now = self.clock()
        self.erased.refresh()
        erased_meanwhile: str | None = None
        self._producer.begin_transaction()
        try:
            for msg in msgs:  # released by the merge: records, never errors
                topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
                staged.offsets[(topic, partition)] = offset + 1
                staged.consumed[topic] += 1
                result = self.step.step(msg, self.state, staged, now, self.erased.cards)
                for out in result.outputs:
                    produce(self._producer, out.topic, out.key, out.value, timestamp=out.timestamp)
                if result.unknown_chain is not None:
                    self.metrics.unknown_chain_total.labels(result.unknown_chain).inc()
                    log.warning("unknown chain %r: applied the strictest level", result.unknown_chain)
                if result.letter is not None:
                    produce(self._producer, self.names.checkouts_dlq, *self.letters.encoded(result.letter, now))
                if result.rejected is not None:
                    log.warning("rejected %s[%s]@%s: %s", topic, partition, offset, result.rejected)
            for p, key, value in seen_records(staged, self.transactional_id):
                produce(self._producer, self.names.receipts_seen, key, value, partition=p, headers=[SEEN_BATCH_HEADER])
            erased_meanwhile = self._erased_meanwhile(staged)
            if erased_meanwhile is None:
                offsets = [TopicPartition(t, p, o) for (t, p), o in staged.offsets.items()]
                with self.watchdog.call("send_offsets_to_transaction", 30):
                    self._producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
                with self.watchdog.call("commit_transaction", 60):
                    self._producer.commit_transaction(60)
        except (KafkaException, DeadLetterVaultError) as exc:
            self._abort(exc)
            if isinstance(exc, DeadLetterVaultError):  # a letter unsealed would name the card, skipped be lost
                self.letters.backoff.failed(exc)
            return
        if erased_meanwhile is not None:
            self._rewind(erased_meanwhile)  # the stricter reading: the batch is routed again without the card
            return
        self.letters.backoff.succeeded()
        staged.commit_into(self.state)
        staged.report(self.stats, self.metrics, len(msgs), time.time())
        self.metrics.batch_size.labels("router").observe(len(msgs))
        self.metrics.batch_seconds.labels("router").observe(time.perf_counter() - started)

    def _erased_meanwhile(self, staged: Staged) -> str | None:
        """Before a commit: why the open transaction must not commit -- an erasure recorded meanwhile hits
        one of its cards, or the end of the erased-cards topic is not known -- or None when it may."""
        try:
            erased = self.erased.confirm(staged.cards)
        except BrokerError as exc:
            return f"the erased-cards record cannot be read to its end: {exc}"
        return f"{erased} card(s) of the open transaction were erased meanwhile" if erased else None

    def _abort(self, exc: Exception) -> None:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is not None and err.fatal():
            raise BrokerError(f"fatal transaction error (fenced by another worker?): {err}") from exc
        self._rewind(str(exc))

    def _rewind(self, why: str) -> None:
        log.warning("%s: transaction aborted, rewinding to the committed offsets: %s", self.name, why)
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
            self.consumer.resume([TopicPartition(t, p) for t, p in self._paused])
            self._paused.clear()
        assignment = self.consumer.assignment()
        with self.watchdog.call("consumer.committed (rewind)", 30):
            positions = self.consumer.committed(assignment, timeout=30)
        for tp in positions:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
