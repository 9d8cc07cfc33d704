"""What the end-to-end benchmark watches: CPU and peak RSS of processes, and each receipt's way through.

:class:`Observer` follows ``checkouts`` and ``purchases.customer`` as they are written: the broker
timestamp of a checkout is when the broker appended it (``checkouts`` is LogAppendTime); its customer
record counts when this read-committed follower receives it, i.e. once the router's transaction has
committed (the record's own timestamp is the checkout's append time, which the router copies over).
Every ``sample``-th receipt is then polled for in its card's dedup set in Redis (every ``POLL_PROFILE``
s) and in the warehouse's ``receipts`` table (every ``POLL_WAREHOUSE`` s).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import e2e_report
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.kafka_read import ReadToEnd
from receiptflow.processors.profiles.rules import receipt_key
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.topics import TopicNames

TICK = os.sysconf("SC_CLK_TCK")
# How often the sampled receipts are looked for (s): half of each is the mean error of the figure.
POLL_PROFILE = 0.02
POLL_WAREHOUSE = 0.05
# A consumer's ``consume(n, timeout)`` waits until n records or the timeout: short, so the follower
# receives a committed record as soon as its fetch brings it.
FOLLOW_TIMEOUT = 0.01


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process and its live children (PostgreSQL's backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and (int(entry.name) == pid or int(fields[1]) == pid):
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def scrape(port: int) -> e2e_report.Samples:
    """Every sample a pipeline process's Prometheus exporter serves now, keyed by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return e2e_report.samples(response.read().decode())


def lines_in(settings: Settings, topic: str) -> int:
    """Checkout lines in the whole of ``topic``, read to its end."""
    codec = Codec()
    consumer = Consumer(
        settings.kafka_config(**{"group.id": f"bench-read-{uuid.uuid4().hex[:6]}", "enable.partition.eof": True})
    )
    try:
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka.topic_partitions)]
        total = 0
        for m in ReadToEnd(consumer, parts, what=f"reading {topic}", stall=60).records(5000):
            value = m.value()
            if value is not None:
                total += len(codec.decode(value, expect="checkout").value.get("lines") or ())
        return total
    finally:
        consumer.close()


def peak_rss(pid: int) -> int | None:
    """The process's high-water mark of resident memory (``VmHWM``), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Observer:
    """Latencies of receipts from their checkout's produce time to the three places they land."""

    def __init__(
        self, settings: Settings, store: RedisProfileStore, conn: psycopg.Connection[Any], sample: int
    ) -> None:
        self.settings, self.store, self.conn, self.sample = settings, store, conn, sample
        self.customer: list[float] = []
        self.profile: list[float] = []
        self.warehouse: list[float] = []
        self.cards: set[str] = set()
        self.pending_profile: dict[tuple[str, str], float] = {}
        self.pending_warehouse: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.give_up = float("inf")
        self.seen = 0
        self.ready = threading.Event()

    def follow(self) -> None:
        codec = Codec()
        names = TopicNames(self.settings.kafka.topic_prefix)
        c = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"bench-obs-{uuid.uuid4().hex[:6]}",
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "latest",
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        c.subscribe([names.checkouts, names.purchases_customer], on_assign=lambda *_: self.ready.set())
        produced: dict[str, float] = {}
        waiting: dict[str, tuple[float, str | None]] = {}  # customer records read before their checkout
        while not self.stop.is_set():
            msgs = c.consume(1000, timeout=FOLLOW_TIMEOUT)
            received = time.time()
            for m in msgs:
                value = m.value()
                if m.error() is not None or value is None:
                    continue
                if m.topic() == names.checkouts:
                    at = m.timestamp()[1] / 1000
                    rid = codec.decode(value, expect="checkout").value["receipt_id"]
                    if rid in waiting:
                        self._matched(rid, at, *waiting.pop(rid))
                    else:
                        produced[rid] = at
                else:
                    rec = codec.decode(value, expect="purchase").value
                    rid = rec["receipt_id"]
                    if rid in produced:
                        self._matched(rid, produced.pop(rid), received, rec.get("card_id"))
                    else:
                        waiting[rid] = (received, rec.get("card_id"))
        c.close()

    def _matched(self, rid: str, produced_at: float, written_at: float, card: str | None) -> None:
        self.customer.append(written_at - produced_at)
        self.seen += 1
        if self.seen % self.sample:
            return
        with self.lock:
            self.pending_warehouse[rid] = produced_at
            if card:
                self.cards.add(card)
                self.pending_profile[(card, rid)] = produced_at

    def poll_profiles(self) -> None:
        while not self.stop.is_set() or (self.pending_profile and time.time() < self.give_up):
            with self.lock:
                items = list(self.pending_profile.items())
            if items:
                pipe = self.store.client.pipeline(transaction=False)
                for (card, rid), _ in items:
                    pipe.zscore(self.store.keys_for(card).seen, receipt_key(rid))
                scores = pipe.execute()
                now = time.time()
                with self.lock:
                    for (key, produced_at), score in zip(items, scores, strict=True):
                        if score is not None:
                            self.profile.append(now - produced_at)
                            del self.pending_profile[key]
            time.sleep(POLL_PROFILE)

    def poll_warehouse(self) -> None:
        while not self.stop.is_set() or (self.pending_warehouse and time.time() < self.give_up):
            with self.lock:
                ids = list(self.pending_warehouse)
            if ids:
                query = "SELECT receipt_id FROM receipts WHERE receipt_id = ANY(%s)"
                rows = self.conn.execute(query, (ids,)).fetchall()
                now = time.time()
                with self.lock:
                    for (rid,) in rows:
                        self.warehouse.append(now - self.pending_warehouse.pop(rid))
            time.sleep(POLL_WAREHOUSE)
