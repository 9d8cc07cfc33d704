"""The warehouse sink's consume loop: Kafka → batches → sink, offsets stored with the rows.

A confluent-kafka consumer (read-committed, no auto-commit) reads ``purchases.customer`` in batches
of up to ``batch_size`` records or ``batch_timeout`` seconds. Each batch is decoded, written and
flushed (rows and offsets in one warehouse transaction). On every partition assignment the
consumer is positioned at the offsets the warehouse committed, so a crash at any point neither
loses nor duplicates a row. Offsets are also committed to Kafka afterwards, asynchronously, for lag
monitoring only: the warehouse's copy is the truth.

A record that does not decode as a purchase stops the sink with :class:`WarehouseError`: this topic
is written only by the processor through the codec, so such a record is a bug to look at, not
input to skip (the processor's dead-letter topic is where bad input goes).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from ..codec import Codec
from ..config import Settings
from ..errors import ConfigError, DecodeError, WarehouseError
from ..metrics import Metrics
from ..models import Purchase
from ..topics import TopicNames
from .base import Sink, SinkRecord
from .duckdb import DuckDBSink
from .postgres import PostgresSink

log = logging.getLogger(__name__)


def open_sink(settings: Settings, consumer: str = "receiptflow-warehouse") -> Sink:
    """The sink for ``RECEIPTFLOW_WAREHOUSE_URL`` (set up and ready to write)."""
    url = settings.warehouse_connection_url()
    sink: Sink
    if url.startswith("duckdb:///"):
        sink = DuckDBSink(Path(url.removeprefix("duckdb:///")), consumer)
    elif url.startswith(("postgresql://", "postgres://")):
        sink = PostgresSink(url, consumer)
    else:
        raise ConfigError(f"unsupported warehouse URL scheme: {settings.resolved_warehouse_url.split(':', 1)[0]}")
    sink.setup()
    return sink


@dataclass
class SinkStats:
    batches: int = 0
    records: int = 0
    receipts_inserted: int = 0


def run_sink(
    settings: Settings,
    sink: Sink,
    *,
    topic: str | None = None,
    batch_size: int = 1000,
    batch_timeout: float = 1.0,
    stop: threading.Event | None = None,
    idle_exit_after: float | None = None,
    metrics: Metrics | None = None,
) -> SinkStats:
    """Consume until ``stop`` is set (or ``idle_exit_after`` seconds without records)."""
    topic = topic or TopicNames(settings.topic_prefix).purchases_customer
    metrics = metrics or Metrics()
    codec = Codec()
    stats = SinkStats()
    stop = stop or threading.Event()

    assigned_at: list[float] = []

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned_at.append(time.monotonic())
        stored = sink.committed_offsets(topic)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)

    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": sink.consumer,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "client.id": "receiptflow-warehouse-sink",
            }
        )
    )
    consumer.subscribe([topic], on_assign=on_assign)
    idle_since = time.monotonic()
    try:
        while not stop.is_set():
            messages = consumer.consume(batch_size, timeout=batch_timeout)
            batch: list[SinkRecord] = []
            for m in messages:
                err = m.error()
                if err is not None:
                    if err.retriable() or not err.fatal():
                        log.warning("consumer: %s", err)
                        continue
                    raise WarehouseError(f"consumer failed: {err}")
                try:
                    value = codec.decode(m.value(), expect="purchase").value
                except DecodeError as exc:
                    raise WarehouseError(
                        f"undecodable record at {m.topic()}[{m.partition()}]@{m.offset()}: {exc}"
                    ) from exc
                batch.append(SinkRecord(Purchase.from_avro(value), topic, m.partition() or 0, m.offset() or 0))
            if not batch:
                # Idle time counts from the (latest) assignment: joining the group is not idleness.
                start = max(idle_since, assigned_at[-1]) if assigned_at else None
                if idle_exit_after is not None and start is not None and time.monotonic() - start >= idle_exit_after:
                    break
                continue
            idle_since = time.monotonic()
            started = time.perf_counter()
            sink.write(batch)
            result = sink.flush()
            stats.batches += 1
            stats.records += len(batch)
            stats.receipts_inserted += result.receipts
            metrics.consumed_total.labels(topic).inc(len(batch))
            metrics.warehouse_rows_total.labels("receipts").inc(result.receipts)
            metrics.warehouse_rows_total.labels("receipt_items").inc(result.items)
            metrics.warehouse_rows_total.labels("receipt_groups").inc(result.groups)
            duplicates = len(batch) - result.receipts
            if duplicates:
                metrics.duplicates_total.labels("warehouse").inc(duplicates)
            metrics.batch_size.labels("warehouse").observe(len(batch))
            metrics.batch_seconds.labels("warehouse").observe(time.perf_counter() - started)
            _commit_for_lag(consumer, messages)
    except KafkaException as exc:
        raise WarehouseError(f"sink consumer failed: {exc}") from exc
    finally:
        consumer.close()
    return stats


def _commit_for_lag(consumer: Consumer, messages: list[Any]) -> None:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        if m.error() is None:
            last[(m.topic(), m.partition())] = m.offset() + 1
    if last:
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in last.items()], asynchronous=True)
        except KafkaException as exc:  # lag reporting only; the warehouse holds the real offsets
            log.debug("offset commit for lag failed: %s", exc)
