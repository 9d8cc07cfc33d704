"""Durable store-and-forward outbox for a register: a sale is on disk before it is "accepted".

``accept`` validates and Avro-encodes a checkout and commits it to a local SQLite database (WAL
journal, ``synchronous=FULL``: the commit is on disk when ``accept`` returns, so neither a crash of
the register process nor a power cut loses an accepted sale). A background sender drains the
database to Kafka in batches through an idempotent librdkafka producer and deletes a row only after
the broker acknowledged it (``acks=all``). While the broker is unreachable the register keeps
accepting, bounded by a disk budget (``OutboxFullError`` when it is spent); after an outage or a
restart — including a SIGKILL — whatever was not acknowledged is sent again.

Delivery is therefore at-least-once: a row acknowledged but not yet deleted when the process dies
is sent twice. Downstream applies each receipt id once.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ..codec import Codec
from ..config import Settings
from ..errors import BrokerError, OutboxFullError, SchemaError, ValidationError
from ..files import create_owner_only, private_dir
from ..kafka_auth import KafkaPrincipal, as_principal
from ..metrics import Metrics
from ..models import Checkout, ConsentChange
from ..registry import codec_for
from ..topics import TopicNames
from .client import checkout_key, principal_of, stamped

log = logging.getLogger(__name__)

# How long the idle sender sleeps between looks at the database; an accepted sale wakes it at once.
_IDLE_WAIT = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    accepted_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    topic: str
    key: bytes | None
    value: bytes


class Outbox:
    """One register's outbox: ``accept`` on the selling thread, ``start`` a sender thread."""

    def __init__(
        self,
        path: Path,
        settings: Settings,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        batch_size: int = 1000,
        max_in_flight: int = 20_000,
        codec: Codec | None = None,
        metrics: Metrics | None = None,
        **producer_overrides: object,
    ) -> None:
        self.path = path
        self.settings = settings
        self.names = TopicNames(settings.kafka.topic_prefix)
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.codec = codec or codec_for(settings)
        self.metrics = metrics or Metrics()
        for topic in (self.names.checkouts, self.names.consents):
            # Series at 0 from the start: the first failure is then an increase an alert can see.
            self.metrics.produced_total.labels(topic)
            self.metrics.produce_errors_total.labels(topic)
        self._producer_overrides = producer_overrides
        if not path.parent.exists():
            private_dir(path.parent)
        # Sales carry card ids: the file is the owner's only, and SQLite gives its WAL and shared
        # memory files the database file's mode.
        create_owner_only(path)
        self._db = self._connect(shared=True)
        self._db_lock = threading.Lock()
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT count(*), coalesce(sum(length(value)), 0) FROM outbox").fetchone()
        self._bytes = int(row[1])
        self._depth(int(row[0]), self._bytes)
        self._bytes_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by every accepted sale: the sender forwards it now
        self._thread: threading.Thread | None = None
        self.acked = 0
        self.failed_deliveries = 0

    def _connect(self, *, shared: bool = False) -> sqlite3.Connection:
        # The selling-side connection may be used from any thread a register sells on (guarded by
        # ``_db_lock``); the sender thread opens its own.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=not shared)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before accept() returns, even across a power cut.
        db.execute("PRAGMA synchronous=FULL")
        return db

    # --- the selling side ----------------------------------------------------------------------
    def _encode(self, c: Checkout) -> tuple[str, bytes, bytes]:
        try:
            return c.receipt_id, checkout_key(c), self.codec.encode("checkout", c.to_avro())
        except SchemaError as exc:
            raise ValidationError("schema", str(exc)) from exc

    def accept(self, checkout: Checkout) -> None:
        """Durably queue one checkout; raises ValidationError or OutboxFullError, never loses it silently."""
        self.accept_many([checkout])

    def accept_many(self, checkouts: Sequence[Checkout]) -> None:
        """Durably queue several checkouts in one transaction (one disk sync for the group)."""
        rows = [self._encode(c) for c in checkouts]
        self._insert((rid, self.names.checkouts, key, value) for rid, key, value in rows)

    def accept_raw(self, topic: str, key: bytes | None, value: bytes, label: str) -> None:
        """Queue pre-encoded bytes as they are (the simulator's injected bad input uses this)."""
        self._insert([(label, topic, key, value)])

    def accept_consent(self, change: ConsentChange) -> None:
        # The principal the outbox sends consent changes as: the consent writers' (checkouts go as the register's).
        change = stamped(change, principal_of(as_principal(self.settings, KafkaPrincipal.CONSENT_WRITER)))
        try:
            value = self.codec.encode("consent_change", change.to_avro())
        except SchemaError as exc:
            raise ValidationError("schema", str(exc)) from exc
        self._insert([(f"consent:{change.card_id}", self.names.consents, change.card_id.encode(), value)])

    def _insert(self, rows: Iterable[tuple[str, str, bytes | None, bytes]]) -> None:
        now = time.time()
        batch = [(rid, topic, key, value, now) for rid, topic, key, value in rows]
        size = sum(len(r[3]) for r in batch)
        with self._bytes_lock:
            if self._bytes + size > self.max_bytes:
                self.metrics.rejected_input_total.labels("outbox_full").inc(len(batch))
                raise OutboxFullError(
                    f"outbox {self.path} holds {self._bytes} bytes; {size} more would exceed its budget of "
                    f"{self.max_bytes} bytes (is the broker reachable?)"
                )
            self._bytes += size
        with self._db_lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO outbox (receipt_id, topic, key, value, accepted_at) VALUES (?, ?, ?, ?, ?)", batch
                )
                self._db.execute("COMMIT")
                self._depth(len(batch), size)
                self._wake.set()
            except sqlite3.Error as exc:
                with self._bytes_lock:
                    self._bytes -= size
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise BrokerError(f"outbox {self.path} cannot store the sale: {exc}") from exc

    def pending(self) -> int:
        with self._db_lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    @property
    def bytes_pending(self) -> int:
        return self._bytes

    # --- the sending side ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"outbox-sender:{self.path.name}", daemon=True)
        self._thread.start()

    def stop(self, drain_timeout: float = 0.0) -> bool:
        """Stop the sender, first waiting up to ``drain_timeout`` s for the outbox to empty."""
        drained = self.drain(drain_timeout) if drain_timeout > 0 else self.pending() == 0
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        return drained

    def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pending() > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self.stop()
        self._depth(-self.pending(), -self._bytes)  # what is left stays on disk, no longer this process's
        with self._db_lock:
            self._db.close()

    def _depth(self, records: int, size: int) -> None:
        """Move the exported outbox depth (records and bytes waiting for the broker's acknowledgement)."""
        self.metrics.outbox_depth_records.inc(records)
        self.metrics.outbox_depth_bytes.inc(size)

    def _run(self) -> None:
        db = self._connect()
        sender = _Sender(self, db, self._producer())
        more = False  # the last look left rows behind: look again without sleeping
        try:
            while not self._stop.is_set():
                if not more:
                    self._wake.wait(_IDLE_WAIT)
                # Cleared before the look: a sale committed after it sets the flag again.
                self._wake.clear()
                more = sender.step()
            sender.finish()
        finally:
            db.close()

    def _producer(self) -> _Producers:
        # Checkouts go as the register's principal, consent changes as the consent writers' (only they may
        # write `consents`); one producer when both are the same login.
        consents = as_principal(self.settings, KafkaPrincipal.CONSENT_WRITER)
        main = self._kafka_producer(self.settings)
        same = consents.kafka.sasl_username == self.settings.kafka.sasl_username
        return _Producers(main, main if same else self._kafka_producer(consents), self.names.consents)

    def _kafka_producer(self, settings: Settings) -> Producer:
        return Producer(
            settings.kafka_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "client.id": f"receiptflow-outbox-{self.path.stem}",
                    **self._producer_overrides,
                }
            )
        )

    def _delete(self, db: sqlite3.Connection, seqs: list[int]) -> None:
        sizes = 0
        db.execute("BEGIN IMMEDIATE")
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            row = db.execute(f"SELECT coalesce(sum(length(value)), 0) FROM outbox WHERE seq IN ({marks})", chunk)
            sizes += int(row.fetchone()[0])
            db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
        db.execute("COMMIT")
        with self._bytes_lock:
            self._bytes -= sizes
        self._depth(-len(seqs), -sizes)
        self.acked += len(seqs)


class _Producers:
    """The outbox's producers: consent changes through their own (the consent writers' login), the rest through
    the register's; ``produce``, ``poll`` and ``flush`` as one producer."""

    def __init__(self, main: Producer, consents: Producer, consents_topic: str) -> None:
        self.main, self.consents, self.consents_topic = main, consents, consents_topic

    def produce(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes | None,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        producer = self.consents if topic == self.consents_topic else self.main
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)

    def poll(self, timeout: float) -> None:
        self.main.poll(timeout)
        if self.consents is not self.main:
            self.consents.poll(0)

    def flush(self, timeout: float) -> int:
        left: int = self.main.flush(timeout)
        if self.consents is not self.main:
            left += self.consents.flush(timeout)
        return left


class _Sender:
    """The sender thread's look at the outbox: what is in flight, acknowledged or to be sent again."""

    def __init__(self, outbox: Outbox, db: sqlite3.Connection, producer: _Producers) -> None:
        self.outbox = outbox
        self.db = db
        self.producer = producer
        self.in_flight: set[int] = set()
        self.done: list[int] = []
        self.retry: list[int] = []
        self.lock = threading.Lock()
        self.last_seq = 0
        # Consent changes in flight: nothing but consent changes accepted after them is produced
        # until the broker has them (see send).
        self.consents_in_flight: set[int] = set()

    def delivered(self, seq: int) -> Callable[[KafkaError | None, Message], None]:
        outbox = self.outbox

        def report(err: KafkaError | None, msg: Message) -> None:
            with self.lock:
                if err is None:
                    self.done.append(seq)
                else:
                    self.retry.append(seq)
            if err is None:
                outbox.metrics.produced_total.labels(msg.topic() or "?").inc()
            else:
                outbox.failed_deliveries += 1
                outbox.metrics.produce_errors_total.labels(msg.topic() or "?").inc()
                log.warning("outbox delivery failed, will resend: %s", err)

        return report

    def step(self) -> bool:
        """Settle what the broker answered and send what there is room for; True when more may be waiting."""
        self.producer.poll(0)
        with self.lock:
            acked, self.done[:] = list(self.done), []
            failed, self.retry[:] = list(self.retry), []
        if acked:
            self.outbox._delete(self.db, acked)
            self.in_flight.difference_update(acked)
        if failed:
            self.in_flight.difference_update(failed)
            # Resend from the oldest failed row on the next pass.
            self.last_seq = min(self.last_seq, min(failed) - 1)
        self.consents_in_flight &= self.in_flight
        room = self.outbox.max_in_flight - len(self.in_flight)
        if room <= 0:
            return False
        return self.send(min(room, self.outbox.batch_size))

    def send(self, limit: int) -> bool:
        """Produce up to ``limit`` rows after the last one sent; True when a full look went out."""
        consents = self.outbox.names.consents
        rows = self.db.execute(
            "SELECT seq, topic, key, value FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (self.last_seq, limit)
        ).fetchall()
        for seq, topic, key, value in rows:
            if self.consents_in_flight and topic != consents and seq not in self.in_flight:
                return False  # after the consent changes before it are acknowledged
            self.last_seq = max(self.last_seq, seq)
            if seq in self.in_flight:
                continue
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=self.delivered(seq))
            except BufferError:
                self.last_seq = seq - 1  # local queue full: try this row again next pass
                return False
            except KafkaException as exc:
                log.error("outbox produce failed: %s", exc)
                self.last_seq = seq - 1
                return False
            self.in_flight.add(seq)
            if topic == consents:
                # Kafka orders records within a partition only: a checkout sent after this
                # change could be appended before it (after an outage the backlog goes out
                # in per-partition batches), and the router, which applies the two topics in
                # append order, would route it under the consent the change replaced.
                self.consents_in_flight.add(seq)
        # Every row of a full look went out: more may be waiting (a backlog, after an outage).
        # A look cut short (queue full, consent changes in flight) waits for the next wake-up.
        return len(rows) == limit

    def finish(self) -> None:
        """Orderly stop: give in-flight records a moment to be acknowledged so they are deleted."""
        self.producer.flush(5)
        with self.lock:
            acked = list(self.done)
        if acked:
            self.outbox._delete(self.db, acked)
