"""Profile workers joining and leaving while purchases flow: every receipt still counts once.

The agent reads its topics beneath faust's streams (``processors.profile_consumer``): a rebalance
cancels a hand-over without acking it, records of an older generation are neither applied nor acked,
and a partition's new owner reads on from the committed offset. Here two workers share six partitions
on the real broker and Redis, one joining and then the other leaving while the purchases arrive, in
transactions as the router writes them (their markers leave gaps the commits must step over) and
with repeated deliveries; the profiles must equal the ground truth and the pure fold.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.models import Purchase
from receiptflow.processors.profiles.fold import fold
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.topics import TopicNames, create_topics

from .conftest import MakeSettings
from .support import simulated_purchases, start_profiles, stop

CODEC = Codec()
PER_TRANSACTION = 10
PACE = 0.2  # seconds between transactions: a part lasts about 10 s, longer than a worker takes to join


def _start(settings: Settings, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    # One data folder for both: it holds the install's secrets, and the profile keys are salted with them.
    settings.local.data_dir.mkdir(parents=True, exist_ok=True)
    log = settings.local.data_dir / f"profiles-{name}.log"
    return start_profiles(settings, log), log


def _send(settings: Settings, purchases: list[Purchase]) -> None:
    """Write ``purchases`` to ``purchases.customer`` in paced transactions, keyed as the router keys them."""
    topic = TopicNames(settings.kafka.topic_prefix).purchases_customer
    producer = Producer(
        settings.kafka_config(**{"transactional.id": f"{settings.router.id}-test-{uuid.uuid4().hex[:6]}"})
    )
    producer.init_transactions(30)
    for first in range(0, len(purchases), PER_TRANSACTION):
        producer.begin_transaction()
        for p in purchases[first : first + PER_TRANSACTION]:
            producer.produce(topic, key=(p.card_id or p.store_id).encode(), value=CODEC.encode("purchase", p.to_avro()))
        producer.commit_transaction(30)
        time.sleep(PACE)


def _owners(settings: Settings) -> list[set[int]]:
    """The ``purchases.customer`` partitions each member of the profile workers' group owns."""
    group = f"{settings.router.id}-profiles"
    admin = AdminClient(settings.kafka_config())
    try:
        desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
    except KafkaException:  # a group between generations: described again on the next look
        return []
    topic = TopicNames(settings.kafka.topic_prefix).purchases_customer
    return [{tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic} for m in desc.members]


def _wait(
    predicate: Callable[[], bool], timeout: float, what: str, workers: dict[str, tuple[subprocess.Popen[bytes], Path]]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for name, (proc, log) in workers.items():
            if proc.poll() is not None and proc.returncode not in (0, -signal.SIGTERM):
                pytest.fail(f"worker {name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n}:\n{log.read_text()[-2000:]}" for n, (_, log) in workers.items())
            pytest.fail(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.05)


def test_workers_joining_and_leaving_mid_stream_count_every_receipt_once(make_settings: MakeSettings) -> None:
    settings = make_settings(kafka={"topic_partitions": 6})
    create_topics(settings)
    sim, purchases = simulated_purchases(seed=9191, count=1500, span=timedelta(days=28))
    rnd = random.Random(9191)
    deliveries = purchases + [p for p in purchases if rnd.random() < 0.10]
    rnd.shuffle(deliveries)
    store = RedisProfileStore.from_settings(settings)
    cards = sorted(sim.truth.per_card)
    store.client.delete(*[k for c in cards for k in store.keys_for(c).data])
    carded = sum(v[0] for v in sim.truth.per_card.values())

    def visits() -> int:
        return sum(p.visits for p in store.get_many(cards).values())

    third = len(deliveries) // 3
    workers = {"a": _start(settings, "a")}
    try:
        _send(settings, deliveries[:third])
        _wait(lambda: visits() > 0, 90, "the first worker applying purchases", workers)

        # The second worker joins while the next part arrives: partitions move mid-stream.
        sender = threading.Thread(target=_send, args=(settings, deliveries[third : 2 * third]))
        sender.start()
        workers["b"] = _start(settings, "b")
        _wait(lambda: sorted(map(bool, _owners(settings))) == [True, True], 60, "partitions on both workers", workers)
        assert sender.is_alive(), "the second worker joined after the part was sent: pace the part slower"
        sender.join()

        # The first one leaves while the last part arrives: its partitions move to the second.
        sender = threading.Thread(target=_send, args=(settings, deliveries[2 * third :]))
        sender.start()
        time.sleep(1.0)
        workers["a"][0].terminate()
        assert workers["a"][0].wait(timeout=60) == 0, workers["a"][1].read_text()[-3000:]
        _wait(lambda: _owners(settings) == [set(range(6))], 60, "every partition on the second worker", workers)
        assert sender.is_alive(), "the first worker left after the part was sent: pace the part slower"
        sender.join()

        _wait(lambda: visits() >= carded, 120, "every visit in Redis", workers)
        time.sleep(1.5)  # a receipt applied twice (a hand-over acked late, a stale batch) would show now
        profiles = store.get_many(cards)
        assert {c: (p.visits, p.spend_cents) for c, p in profiles.items()} == {
            c: (v[0], v[1]) for c, v in sim.truth.per_card.items()
        }
        assert profiles == fold(purchases, store.rules)
    finally:
        for proc, _ in workers.values():
            if proc.poll() is None:
                stop(proc)
