"""The warehouse sink's consume loop: Kafka → batches → sink, offsets stored with the rows.

A confluent-kafka consumer (read-committed, no auto-commit) reads ``purchases.customer`` in batches
of up to ``batch_size`` records or ``batch_timeout`` seconds. Each batch is decoded, written and
flushed — rows and next offsets in one warehouse transaction. On every partition assignment the
consumer is positioned at the offsets the warehouse committed (the beginning of a partition the
warehouse has never seen), so a crash at any point neither loses nor duplicates a row, whatever
Kafka's own committed offsets say. Offsets are also committed to Kafka afterwards, asynchronously,
for lag monitoring only (``kafka-consumer-groups --describe`` keeps working): the warehouse's copy
is the truth. The loop is a :class:`~receiptflow.worker_loop.KafkaWorker` (:class:`SinkWorker`), like
the router: readiness, the heartbeat line and the idle exit work the same way in both.

Erased cards: before it subscribes, the loop reads the erased-cards topic (``consents.erased``, see
:mod:`receiptflow.erasures`) to its end and brings the warehouse in step with it
(:func:`~receiptflow.sinks.card_rows.record_erased`); then, on every turn of the loop, it takes what
arrived there since (a non-blocking poll of an assigned reader) before it writes the next batch. So
whichever warehouse the sink writes, the card's rows are left out or deleted (``sinks.card_rows``
explains why none survives a race with ``erase``).

No single record stops the sink. A record it cannot use -- one that does not decode (``consents`` is
input from outside: registers, the customer app), or a purchase with a value past its column's type
(written before a validation rule existed; :func:`~receiptflow.sinks.rows.warehouse_problem`) -- is
decoded as a :class:`~receiptflow.dlq.Rejected` (:mod:`.decode`) and dead-lettered
(``checkouts.dlq``, with its reason and source position; counted in
``receiptflow_dead_letters_total``) and skipped, and the records around it are stored. Nothing is
lost silently: the dead letter keeps the original bytes, sealed under the card's data key, and
``dlq replay --to-topic`` sends them back after a fix. The dead letter is acknowledged before the
batch that stores the offset past it commits; a crash in between dead-letters it once more on
restart (same source position; see :mod:`receiptflow.dlq`). When the vault (Redis) does not answer,
the batch is read again after a pause: no letter is written unsealed, none is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from ..codec import Codec
from ..config import Settings
from ..dlq import DeadLetterProducer, LetterSealer, Rejected
from ..erasures import ErasureReader
from ..errors import BrokerError, ConfigError, DeadLetterVaultError
from ..health import STATE_RESTORED, Readiness
from ..metrics import Metrics, observe_ages
from ..policy import load_policy
from ..registry import codec_for
from ..secrets import erasure_salt
from ..topics import TopicNames
from ..worker_loop import KafkaWorker
from .base import Sink
from .card_rows import record_erased
from .decode import decode_batch, written_stamps
from .duckdb import DuckDBSink
from .postgres import PostgresSink
from .queries import sync_chains
from .rows import AnyRecord, SinkRecord, chain_dimension_rows
from .tables import DEFAULT_GROUP, RowCounts

log = logging.getLogger(__name__)

STAGE = "warehouse"  # label value of the shared batch/duplicate metrics


def open_sink(settings: Settings, group_id: str = DEFAULT_GROUP, migrations_dir: Path | None = None) -> Sink:
    """The sink for ``settings.resolved_warehouse_url``, set up (connected, migrated, the chain
    dimension written from the policy file) and ready to write.

    ``duckdb:///abs/path.duckdb`` → :class:`DuckDBSink`; ``postgresql://`` or ``postgres://`` →
    :class:`PostgresSink` (with ``settings.warehouse.password`` applied). Anything else is a :class:`ConfigError`.
    ``migrations_dir`` replaces the shipped migrations (the shipped files plus new ones, in tests).
    """
    url = settings.warehouse_connection_url()
    scheme = settings.resolved_warehouse_url.split(":", 1)[0]
    salt = erasure_salt(settings)  # the erased-cards hashes are keyed as in the profile store
    sink: Sink
    if scheme == "duckdb":
        sink = DuckDBSink(duckdb_path(url), group_id, migrations_dir, erasure_salt=salt)
    elif scheme in ("postgresql", "postgres"):
        sink = PostgresSink(url, group_id, migrations_dir, erasure_salt=salt)
    else:
        raise ConfigError(
            f"unsupported warehouse URL scheme {scheme!r}: use duckdb:///abs/path.duckdb or postgresql://user@host/db"
        )
    sink.setup()
    try:
        # The chain dimension follows the policy file the sink runs with (groups, level in force today).
        sync_chains(sink.warehouse, chain_dimension_rows(load_policy(settings.privacy.policy_file), datetime.now(UTC)))
    except BaseException:
        sink.close()
        raise
    return sink


def duckdb_path(url: str) -> Path:
    """``duckdb:///abs/path.duckdb`` → ``/abs/path.duckdb``.

    The path after ``duckdb://`` is always absolute; extra leading slashes are tolerated because
    ``Settings.resolved_warehouse_url`` writes ``duckdb:///`` + an absolute path (four slashes).
    """
    if not url.startswith("duckdb:///") or not url.removeprefix("duckdb:///").strip("/"):
        raise ConfigError(f"a DuckDB warehouse URL is duckdb:///abs/path.duckdb, got {url!r}")
    return Path("/" + url.removeprefix("duckdb:///").lstrip("/"))


@dataclass
class SinkStats:
    """What one ``run_sink`` (or replay) call did."""

    batches: int = 0
    records: int = 0  # records read and written (redeliveries included)
    # Rows new to the warehouse; the other records' rows were already there.
    inserted: RowCounts = field(default_factory=RowCounts)

    def add(self, batch_records: int, inserted: RowCounts) -> None:
        """Count one flushed batch."""
        self.batches += 1
        self.records += batch_records
        self.inserted.add_counts(inserted)


def run_sink(
    settings: Settings,
    sink: Sink,
    *,
    topic: str | None = None,
    group_id: str | None = None,
    batch_size: int = 1000,
    batch_timeout: float = 0.25,
    stop: threading.Event | None = None,
    idle_exit_after: float | None = None,
    metrics: Metrics | None = None,
    codec: Codec | None = None,
    readiness: Readiness | None = None,
) -> SinkStats:
    """Consume the purchases and consents topics (or only ``topic``) into ``sink`` until ``stop`` is set.

    ``purchases.customer`` fills the receipt tables, ``purchases.analytics`` the anonymous cells
    (``analytics.cells``, the analytics store) and ``consents`` the consent audit.

    ``group_id`` is the Kafka consumer group, which is also the key of the offsets stored in the
    warehouse; it defaults to ``sink.group_id`` (``receiptflow-warehouse`` unless the sink was opened
    with another) and must equal it, since the sink stores offsets under its own name.
    ``idle_exit_after``: also return after that many seconds without a record, counted from the
    latest partition assignment (joining the group is not idleness). The caller owns ``sink`` and
    closes it. Raises :class:`WarehouseError` on a warehouse failure and :class:`BrokerError` on a
    Kafka failure (a record that does not decode is dead-lettered, see the module docstring); what
    was flushed before stays, and a restart resumes right after it.
    """
    if group_id is not None and group_id != sink.group_id:
        raise ConfigError(
            f"run_sink(group_id={group_id!r}) but the sink stores offsets as {sink.group_id!r}: "
            "open the sink with the same group id"
        )
    worker = SinkWorker(
        settings,
        sink,
        topic=topic,
        batch_size=batch_size,
        batch_timeout=batch_timeout,
        metrics=metrics,
        codec=codec,
        readiness=readiness,
    )
    return worker.run(stop, idle_exit_after)


class SinkWorker(KafkaWorker):
    """The sink's consumer (a :class:`~receiptflow.worker_loop.KafkaWorker`): a turn is one batch, read,
    decoded, dead-lettered and written; an assignment positions the consumer at the warehouse's offsets.

    :func:`run_sink` says what the arguments mean; ``run`` consumes until ``stop`` is set (or idle).
    """

    consumer: Consumer

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        *,
        topic: str | None = None,
        batch_size: int = 1000,
        batch_timeout: float = 0.25,
        metrics: Metrics | None = None,
        codec: Codec | None = None,
        readiness: Readiness | None = None,
    ) -> None:
        self.sink = sink
        self.names = TopicNames(settings.kafka.topic_prefix)
        names = self.names
        self.topics = [topic] if topic else [names.purchases_customer, names.purchases_analytics, names.consents]
        self.batch_size, self.batch_timeout = batch_size, batch_timeout
        self.codec = codec or codec_for(settings)
        self.consent_max_age = settings.privacy.consent_max_age
        self.stats = SinkStats()
        conf = consumer_config(settings, sink.group_id)
        self.incremental = _is_incremental(conf)
        try:
            consumer = Consumer(conf)
        except KafkaException as exc:  # e.g. an invalid librdkafka property in kafka_extra
            raise BrokerError(f"cannot create the sink consumer: {exc}") from exc
        super().__init__("sink", sink.group_id, consumer, metrics=metrics or Metrics(), readiness=readiness)
        try:
            self.erasures = ErasureReader(settings)
        except BaseException:
            consumer.close()
            raise
        processor = f"receiptflow-sink-{sink.group_id}"
        sealer = LetterSealer(settings, processor, sink.group_id, codec=self.codec)
        self.dead_letters = DeadLetterProducer(settings, sealer, metrics=self.metrics)

    def run(self, stop: threading.Event | None = None, idle_exit_after: float | None = None) -> SinkStats:
        """Consume until ``stop`` is set or, with ``idle_exit_after``, idle that long; closes its clients."""
        try:
            # Before the first row: this warehouse may never have seen an erasure (a new one, a backup).
            follow_erasures(self.sink, self.erasures.read_to_end())
            self.readiness.mark(STATE_RESTORED)
            if self.loop(self.topics, stop or threading.Event(), idle_exit_after):
                log.info("sink idle for %.1fs, exiting: %s", idle_exit_after, self.stats)
        except KafkaException as exc:
            raise BrokerError(f"sink consumer failed: {exc}") from exc
        finally:
            self.consumer.close()
            self.erasures.close()
            self.dead_letters.close()
        return self.stats

    def turn(self) -> bool:
        """Erasures that arrived, then one batch: its dead letters first, then its rows and offsets."""
        follow_erasures(self.sink, self.erasures.poll())
        messages = self.consumer.consume(self.batch_size, timeout=self.batch_timeout)
        self.heartbeat()
        batch = decode_batch(self.codec, messages, self.names, consent_max_age=self.consent_max_age)
        if not batch:
            return False
        # Dead letters first: the batch then stores the offsets past them (see the module docstring).
        try:
            self.dead_letters.send([r for r in batch if isinstance(r, Rejected)])
        except DeadLetterVaultError as exc:
            # Nothing of the batch is written: read it again once the vault answers (never a letter unsealed).
            _rewind(self.consumer, messages)
            self.dead_letters.sealer.backoff.failed(exc)
            return True
        self.dead_letters.sealer.backoff.succeeded()
        _write(self.sink, batch, self.metrics, self.stats)
        stamps = written_stamps(messages, batch, self.names.purchases_customer)
        observe_ages(self.metrics.checkout_to_output_seconds.labels(STAGE), time.time(), stamps)
        _commit_for_lag(self.consumer, batch)
        return True

    def assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Position each partition at the offset the warehouse committed (its beginning when none)."""
        stored: dict[str, dict[int, int]] = {}
        for tp in partitions:
            if tp.topic not in stored:
                stored[tp.topic] = self.sink.committed_offsets(tp.topic)
            tp.offset = stored[tp.topic].get(tp.partition, OFFSET_BEGINNING)
        log.info(
            "sink assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{_fmt_offset(tp.offset)}" for tp in partitions)
        )
        # Assigning here (rather than leaving it to the client) is what makes the positions stick.
        if self.incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """The sink consumer's librdkafka configuration: read-committed, no auto-commit, quick to hand over."""
    conf = settings.kafka_config(
        **{
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",  # never write rows of an aborted producer transaction
            "auto.offset.reset": "earliest",
            "client.id": f"receiptflow-sink-{group}",
            # A crashed sink's partitions go to its restarted self (or another sink) after this long;
            # the default 45 s would stall the warehouse that long after every crash.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
        }
    )
    if settings.sink.instance:
        # Static membership: a sink restarted under the same name takes its partitions back at once
        # (no rebalance, no wait for the session timeout); where it resumes is still the warehouse's call.
        conf["group.instance.id"] = f"{group}-{settings.sink.instance}"
    return conf


def _rewind(consumer: Consumer, messages: list[Message]) -> None:
    """Seek each partition of ``messages`` back to the first of them: the next consume reads them again."""
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        if m.error() is None:
            where = (m.topic() or "", m.partition() or 0)
            first[where] = min(first.get(where, m.offset() or 0), m.offset() or 0)
    for (topic, partition), offset in first.items():
        consumer.seek(TopicPartition(topic, partition, offset))


def follow_erasures(sink: Sink, erased: dict[str, datetime]) -> None:
    """Record newly read erasures in the warehouse and delete what it held of those cards."""
    if not erased:
        return
    deleted = record_erased(sink.warehouse, erased)
    log.info(
        "erased-cards record: %d card(s) recorded in the warehouse%s",
        len(erased),
        "; deleted " + ", ".join(f"{t} {n}" for t, n in sorted(deleted.items())) if deleted else "",
    )


def _is_incremental(conf: dict[str, Any]) -> bool:
    """Whether assignments arrive incrementally (cooperative assignor or the KIP-848 protocol)."""
    strategy = str(conf.get("partition.assignment.strategy", ""))
    return "cooperative" in strategy or str(conf.get("group.protocol", "")).lower() == "consumer"


def _fmt_offset(offset: int) -> str:
    return "beginning" if offset == OFFSET_BEGINNING else str(offset)


def _write(sink: Sink, batch: list[AnyRecord], metrics: Metrics, stats: SinkStats) -> None:
    started = time.perf_counter()
    sink.write(batch)
    result = sink.flush()
    stats.add(len(batch), result)
    for topic, n in Counter(r.topic for r in batch).items():
        metrics.consumed_total.labels(topic).inc(n)
    for table, rows in result.by_table():
        metrics.warehouse_rows_total.labels(table).inc(rows)
    customer = sum(1 for r in batch if isinstance(r, SinkRecord))
    duplicates = customer - result.receipts
    if duplicates:
        metrics.duplicates_total.labels(STAGE).inc(duplicates)
    metrics.batch_size.labels(STAGE).observe(len(batch))
    metrics.batch_seconds.labels(STAGE).observe(time.perf_counter() - started)


def _commit_for_lag(consumer: Consumer, batch: list[AnyRecord]) -> None:
    """Mirror the stored positions to Kafka so standard lag tools see the sink (not used to resume)."""
    last: dict[tuple[str, int], int] = {}
    for r in batch:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), 0), r.offset + 1)
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in last.items()], asynchronous=True)
    except KafkaException as exc:
        log.debug("offset commit for lag reporting failed: %s", exc)
