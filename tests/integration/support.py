"""Helpers shared by integration tests: child-process environments, starting and stopping a profile
worker, reading a topic to its end, dead letters opened, and simulated purchases sent as the router
would send them, with the visits they must add up to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import Closed, DeadLetter, LetterOpener, iter_dead_letters
from receiptflow.kafka_auth import auth_environment
from receiptflow.models import ConsentState, Purchase, ReceiptKind
from receiptflow.policy import load_policy
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.topics import TopicNames

CODEC = Codec()
POLICY = load_policy()


def env_for(settings: Settings) -> dict[str, str]:
    """The environment that makes a child ``python -m receiptflow`` use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTFLOW_")}
    env.update(
        RECEIPTFLOW_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        RECEIPTFLOW_REDIS_URL=settings.redis.url,
        RECEIPTFLOW_DATA_DIR=str(settings.local.data_dir),
        RECEIPTFLOW_TOPIC_PREFIX=settings.kafka.topic_prefix,
        RECEIPTFLOW_TOPIC_PARTITIONS=str(settings.kafka.topic_partitions),
        RECEIPTFLOW_PROCESSOR_ID=settings.router.id,
        RECEIPTFLOW_METRICS_PORT="0",
    )
    env.update(auth_environment(settings))  # the Kafka logins: the child logs in as its command's principal
    for role in ("writer", "marketing", "support", "customer", "web_sessions", "dlq_vault", "auditor"):
        password = getattr(settings.redis, f"{role}_password")
        if password is not None:
            env[f"RECEIPTFLOW_REDIS_{role.upper()}_PASSWORD"] = password.get_secret_value()
    if settings.privacy.policy_file is not None:
        env["RECEIPTFLOW_POLICY_FILE"] = str(settings.privacy.policy_file)
    if settings.warehouse.url:
        env["RECEIPTFLOW_WAREHOUSE_URL"] = settings.warehouse.url
    if settings.metrics.textfile is not None:
        env["RECEIPTFLOW_METRICS_TEXTFILE"] = str(settings.metrics.textfile)
    if settings.redis.cluster:
        env["RECEIPTFLOW_REDIS_CLUSTER"] = "true"
    if settings.kafka.schema_registry_url:
        env["RECEIPTFLOW_SCHEMA_REGISTRY_URL"] = settings.kafka.schema_registry_url
    return env


def start_profiles(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A profile worker (``python -m receiptflow process --role profiles``) as its own process, as in
    production, with ``settings`` and its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "process", "--role", "profiles"],
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[Any]) -> None:
    """Stop a child process as a supervisor does: SIGTERM, and SIGKILL if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def read_all(settings: Settings, topic: str, timeout: float = 60.0) -> list[Message]:
    """Every record of ``topic`` up to its end at the time of the call (read-committed)."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        partitions = set(md.topics[topic].partitions)
        consumer.subscribe([topic])
        out: list[Message] = []
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while at_eof != partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: reached the end of {sorted(at_eof)} of {sorted(partitions)} only")
            for m in consumer.consume(1000, timeout=0.5):
                err = m.error()
                if err is None:
                    out.append(m)
                    at_eof.discard(m.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(m.partition())
                else:
                    raise RuntimeError(str(err))
        return out
    finally:
        consumer.close()


def send_purchases(settings: Settings, purchases: list[Purchase]) -> None:
    """Publish purchases to ``purchases.customer`` keyed as the router keys them."""
    topic = TopicNames(settings.kafka.topic_prefix).purchases_customer
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "linger.ms": 5}))
    for p in purchases:
        producer.produce(topic, key=(p.card_id or p.store_id).encode(), value=CODEC.encode("purchase", p.to_avro()))
        producer.poll(0)
    assert producer.flush(30) == 0


def simulated_purchases(seed: int, count: int, span: timedelta) -> tuple[Simulator, list[Purchase]]:
    """Simulator checkouts over ``span`` up to now, routed by the pure core; a third with product consent."""
    sim = Simulator(seed, stores=30, customers=150)
    now = datetime.now(UTC)
    rate = count / span.total_seconds()
    out = []
    for c in sim.stream(count, now - span - timedelta(minutes=5), rate):
        consent = ConsentState(int(c.card_id[-3:]) % 3 == 0, True, True) if c.card_id else None
        out.append(process(c, POLICY, consent, now).customer)
    return sim, out


def visits_by_card(purchases: Iterable[Purchase]) -> Counter[str]:
    """The visits each card's profile must count: its sale receipts (a refund or a cancel is none)."""
    return Counter(p.card_id for p in purchases if p.card_id is not None and p.receipt_kind is ReceiptKind.SALE)


def opened_letters(settings: Settings, **read: Any) -> list[DeadLetter]:
    """The dead letters (``iter_dead_letters(settings, **read)``) with their original key and value
    opened as ``dlq replay`` opens them (the dead-letter vault); every one must open."""
    opener = LetterOpener(settings)
    out = []
    for d in iter_dead_letters(settings, **read):
        original = opener.open(d)
        assert not isinstance(original, Closed), f"dead letter at {d.partition}@{d.offset}: {original}"
        out.append(replace(d, original_key=original.key, original_value=original.value))
    return out
