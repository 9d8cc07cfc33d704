"""The warehouse sink's consume loop: Kafka → batches → sink, offsets stored with the rows.

A confluent-kafka consumer (read-committed, no auto-commit) reads ``purchases.customer`` in batches
of up to ``batch_size`` records or ``batch_timeout`` seconds. Each batch is decoded, written and
flushed — rows and next offsets in one warehouse transaction. On every partition assignment the
consumer is positioned at the offsets the warehouse committed (the beginning of a partition the
warehouse has never seen), so a crash at any point neither loses nor duplicates a row, whatever
Kafka's own committed offsets say. Offsets are also committed to Kafka afterwards, asynchronously,
for lag monitoring only (``kafka-consumer-groups --describe`` keeps working): the warehouse's copy
is the truth.

Erased cards: before it subscribes, the loop reads the erased-cards topic (``consents.erased``, see
:mod:`receiptflow.erasures`) to its end and brings the warehouse in step with it
(:func:`~receiptflow.sinks.card_rows.record_erased`); then, on every turn of the loop, it takes what
arrived there since (a non-blocking poll of an assigned reader) before it writes the next batch. So
whichever warehouse the sink writes, the card's rows are left out or deleted (``sinks.card_rows``
explains why none survives a race with ``erase``).

No single record stops the sink. A record it cannot use -- one that does not decode (``consents``
is input from outside: registers, the customer app), or a purchase with a value past its column's
type (written before a validation rule existed; :func:`~receiptflow.sinks.rows.warehouse_problem`)
-- is dead-lettered (``checkouts.dlq``, with its reason and source position; counted in
``receiptflow_dead_letters_total``) and skipped, and the records around it are stored. Nothing is
lost silently: the dead letter keeps the original bytes, and ``dlq replay --to-topic`` sends them
back after a fix. The dead letter is acknowledged before the batch that stores the offset past it
commits; a crash in between dead-letters it once more on restart (same source position; see
:mod:`receiptflow.dlq`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from ..codec import Codec
from ..config import Settings
from ..consent_codec import decode_consent
from ..dlq import DeadLetterProducer, Rejected
from ..erasures import ErasureReader
from ..errors import BrokerError, ConfigError, ValidationError
from ..health import CONSUMER_CHECKS, PARTITIONS_ASSIGNED, STATE_RESTORED, Readiness
from ..heartbeat import Heartbeat, counter_total
from ..lag import LagReporter
from ..metrics import Metrics, observe_ages
from ..models import AnalyticsBasket, Purchase
from ..policy import load_policy
from ..registry import codec_for
from ..secrets import erasure_salt
from ..topics import TopicNames
from .base import Sink
from .card_rows import record_erased
from .duckdb import DuckDBSink
from .postgres import PostgresSink
from .queries import sync_chains
from .rows import (
    AnyRecord,
    BasketRecord,
    SinkConsentRecord,
    SinkRecord,
    SkippedRecord,
    chain_dimension_rows,
    warehouse_problem,
)
from .tables import DEFAULT_GROUP, RowCounts

log = logging.getLogger(__name__)

STAGE = "warehouse"  # label value of the shared batch/duplicate metrics


def open_sink(settings: Settings, group_id: str = DEFAULT_GROUP, migrations_dir: Path | None = None) -> Sink:
    """The sink for ``settings.resolved_warehouse_url``, set up (connected, migrated, the chain
    dimension written from the policy file) and ready to write.

    ``duckdb:///abs/path.duckdb`` → :class:`DuckDBSink`; ``postgresql://`` or ``postgres://`` →
    :class:`PostgresSink` (with ``warehouse_password`` applied). Anything else is a :class:`ConfigError`.
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
        sync_chains(sink.warehouse, chain_dimension_rows(load_policy(settings.policy_file), datetime.now(UTC)))
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

    ``purchases.customer`` fills the receipt tables, ``purchases.analytics`` the anonymous baskets
    (the analytics store) and ``consents`` the consent audit.

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
    group = sink.group_id
    names = TopicNames(settings.topic_prefix)
    topics = [topic] if topic else [names.purchases_customer, names.purchases_analytics, names.consents]
    metrics = metrics or Metrics()
    stop = stop or threading.Event()
    codec = codec or codec_for(settings)
    stats = SinkStats()
    readiness = readiness or Readiness("sink", CONSUMER_CHECKS)
    lag = LagReporter(metrics, group, heartbeat=Heartbeat("sink", counter_total(metrics.consumed_total)))

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
    if settings.sink_instance:
        # Static membership: a sink restarted under the same name takes its partitions back at once
        # (no rebalance, no wait for the session timeout); where it resumes is still the warehouse's call.
        conf["group.instance.id"] = f"{group}-{settings.sink_instance}"
    assigned_at: list[float] = []
    try:
        consumer = Consumer(conf)
    except KafkaException as exc:  # e.g. an invalid librdkafka property in kafka_extra
        raise BrokerError(f"cannot create the sink consumer: {exc}") from exc
    try:
        erasures = ErasureReader(settings)
    except BaseException:
        consumer.close()
        raise
    idle_since = time.monotonic()
    dead_letters = DeadLetterProducer(settings, f"receiptflow-sink-{group}", codec=codec, metrics=metrics)
    try:
        # Before the first row: this warehouse may never have seen an erasure (a new one, a backup).
        follow_erasures(sink, erasures.read_to_end())
        readiness.mark(STATE_RESTORED)
        position = _on_assign(sink, assigned_at, incremental=_is_incremental(conf))

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            position(c, partitions)
            readiness.mark(PARTITIONS_ASSIGNED)

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            # Eager: everything goes back to the group until the next assignment.
            readiness.mark(PARTITIONS_ASSIGNED, _is_incremental(conf))

        consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)
        while not stop.is_set():
            follow_erasures(sink, erasures.poll())
            messages = consumer.consume(batch_size, timeout=batch_timeout)
            lag.report(consumer)
            batch = decode_batch(codec, messages, names)
            if batch:
                idle_since = time.monotonic()
                # Dead letters first: the batch then stores the offsets past them (see the docstring).
                dead_letters.send(
                    [
                        Rejected(r.error, r.topic, r.partition, r.offset, r.key, r.value)
                        for r in batch
                        if isinstance(r, SkippedRecord)
                    ]
                )
                _write(sink, batch, metrics, stats)
                stamps = written_stamps(messages, batch, names.purchases_customer)
                observe_ages(metrics.checkout_to_output_seconds.labels(STAGE), time.time(), stamps)
                _commit_for_lag(consumer, batch)
            if not batch and idle_exit_after is not None and assigned_at:
                start = max(idle_since, assigned_at[-1])
                if time.monotonic() - start >= idle_exit_after:
                    log.info("sink idle for %.1fs, exiting: %s", idle_exit_after, stats)
                    break
    except KafkaException as exc:
        raise BrokerError(f"sink consumer failed: {exc}") from exc
    finally:
        consumer.close()
        erasures.close()
        dead_letters.close()
    return stats


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


def _on_assign(
    sink: Sink, assigned_at: list[float], *, incremental: bool
) -> Callable[[Consumer, list[TopicPartition]], None]:
    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned_at.append(time.monotonic())
        stored: dict[str, dict[int, int]] = {}
        for tp in partitions:
            if tp.topic not in stored:
                stored[tp.topic] = sink.committed_offsets(tp.topic)
            tp.offset = stored[tp.topic].get(tp.partition, OFFSET_BEGINNING)
        log.info(
            "sink assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{_fmt_offset(tp.offset)}" for tp in partitions)
        )
        # Assigning here (rather than leaving it to the client) is what makes the positions stick.
        if incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    return on_assign


def _fmt_offset(offset: int) -> str:
    return "beginning" if offset == OFFSET_BEGINNING else str(offset)


def decode_batch(codec: Codec, messages: list[Message], names: TopicNames | None = None) -> list[AnyRecord]:
    """The batch's records; a record the warehouse cannot use is a :class:`SkippedRecord` to dead-letter
    (no single record stops the sink).

    With ``names``, records of the consents topic are consent changes and records of the analytics
    topic anonymous baskets; everything else is a customer purchase. A ``purchase`` record on the
    analytics topic was written before the analytics had basket pseudonyms: it carries the receipt
    id, so it is skipped (logged), never stored. A consent record that does
    not decode becomes a :class:`SkippedRecord` (for the caller to dead-letter) and decoding goes on.
    """
    batch: list[AnyRecord] = []
    for m in messages:
        err = m.error()
        if err is not None:
            if err.fatal():
                raise BrokerError(f"sink consumer failed: {err}")
            # Transient broker/network conditions, reported as events; librdkafka retries by itself.
            log.warning("sink consumer: %s", err)
            continue
        where = f"{m.topic()}[{m.partition()}]@{m.offset()}"
        topic, partition, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
        try:
            if names is not None and topic == names.consents:
                if m.value() is None:
                    # A tombstone: the card was erased. Its audit rows go with `receiptflow erase`;
                    # there is no change to record.
                    log.info("consent tombstone at %s (erased card): nothing to audit", where)
                    continue
                try:
                    change = decode_consent(codec, m.value())
                except ValidationError as exc:
                    log.warning("undecodable consent record at %s, skipped: %s", where, exc)
                    batch.append(SkippedRecord(topic, partition, offset, exc, m.key(), m.value()))
                    continue
                assert change is not None  # tombstones were handled above
                batch.append(SinkConsentRecord(change, topic, partition, offset))
                continue
            if names is not None and topic == names.purchases_analytics:
                decoded = codec.decode(m.value())
                if decoded.subject == "purchase":
                    log.warning(
                        "analytics record with a receipt id at %s (written by an older processor): skipped", where
                    )
                    continue
                if decoded.subject != "analytics_basket":
                    raise ValidationError(
                        "wrong_subject", f"expected an 'analytics_basket' record, got {decoded.subject!r}"
                    )
                batch.append(BasketRecord(AnalyticsBasket.from_avro(decoded.value), topic, partition, offset))
                continue
            purchase = Purchase.from_avro(codec.decode(m.value(), expect="purchase").value)
        except (ValidationError, KeyError, ValueError, TypeError) as exc:
            rejected = exc if isinstance(exc, ValidationError) else ValidationError("undecodable", str(exc))
            log.error("undecodable record at %s, dead-lettered: %s", where, rejected)
            batch.append(SkippedRecord(topic, partition, offset, rejected, m.key(), m.value()))
            continue
        problem = warehouse_problem(purchase)
        if problem is not None:
            log.error("record at %s cannot be stored, dead-lettered: %s", where, problem)
            rejected = ValidationError("out_of_range", problem)
            batch.append(SkippedRecord(topic, partition, offset, rejected, m.key(), m.value()))
            continue
        batch.append(SinkRecord(purchase, topic, partition, offset))
    return batch


def written_stamps(messages: list[Message], batch: list[AnyRecord], customer_topic: str) -> list[int]:
    """Timestamps (ms) of the batch's customer purchases not dead-lettered: their checkouts' append times."""
    skipped = {(r.partition, r.offset) for r in batch if isinstance(r, SkippedRecord) and r.topic == customer_topic}
    return [
        m.timestamp()[1]
        for m in messages
        if m.error() is None and m.topic() == customer_topic and (m.partition(), m.offset()) not in skipped
    ]


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
