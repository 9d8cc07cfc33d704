"""Producer throughput: receipts/s through the register outbox next to raw librdkafka, same run.

Every figure is measured against the same broker in the same process run, on the same simulated
receipts, so they can be compared side by side:

* ``raw librdkafka``      pre-encoded Avro bytes produced with an idempotent ``acks=all`` producer
                          (the baseline: what the client library and broker can take);
* ``register client``     ``RegisterClient.send``: schema validation + Avro encoding + produce;
* ``outbox, 1 per commit`` ``Outbox.accept`` per sale (one durable SQLite commit each, as a register
                          does), drained by the sender thread until the broker acknowledged all;
* ``outbox, 100 per commit`` ``Outbox.accept_many`` in groups of 100 (a store controller batching).

Throughput counts from the first produce/accept to the last broker acknowledgement; each path runs
``--repeat`` times after a warm-up and the median is printed.

Usage: ``python benchmarks/producer_throughput.py [--receipts N] [--bootstrap HOST:PORT]``.
Without ``--bootstrap`` an embedded Kafka broker is started on free ports in a temporary data dir
(the jars must have been fetched: ``receiptflow stack fetch``) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.kafka_auth import KafkaPrincipal, as_principal
from receiptflow.models import Checkout
from receiptflow.producers.client import RegisterClient, checkout_key
from receiptflow.producers.outbox import Outbox
from receiptflow.producers.simulator import Simulator
from receiptflow.stack import Stack
from receiptflow.stack.process import free_port
from receiptflow.topics import TopicNames, create_topics


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_librdkafka(settings: Settings, receipts: list[Checkout]) -> float:
    codec = Codec()
    topic = TopicNames(settings.kafka.topic_prefix).checkouts
    encoded = [(checkout_key(c), codec.encode("checkout", c.to_avro())) for c in receipts]
    producer = Producer(
        settings.kafka_config(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "lz4"})
    )
    acked = 0

    def report(err: object, _msg: object) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    start = time.perf_counter()
    for key, value in encoded:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - start
    if acked != len(receipts):
        raise SystemExit(f"raw producer: {acked} of {len(receipts)} acknowledged")
    return elapsed


def register_client(settings: Settings, receipts: list[Checkout]) -> float:
    client = RegisterClient(settings)
    start = time.perf_counter()
    for c in receipts:
        client.send(c)
    stats = client.flush(120)
    elapsed = time.perf_counter() - start
    if stats.acked != len(receipts):
        raise SystemExit(f"register client: {stats.acked} of {len(receipts)} acknowledged")
    return elapsed


def outbox(settings: Settings, receipts: list[Checkout], path: Path, group: int) -> float:
    box = Outbox(path, settings)
    box.start()
    start = time.perf_counter()
    if group == 1:
        for c in receipts:
            box.accept(c)
    else:
        for i in range(0, len(receipts), group):
            box.accept_many(receipts[i : i + group])
    if not box.drain(300):
        raise SystemExit(f"outbox: {box.pending()} still pending after 300 s")
    elapsed = time.perf_counter() - start
    acked = box.acked
    box.close()
    if acked < len(receipts):
        raise SystemExit(f"outbox: {acked} of {len(receipts)} acknowledged")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the median is shown")
    parser.add_argument("--bootstrap", help="use this broker instead of starting an embedded one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="receiptflow-bench-") as tmp:
        data = Path(tmp)
        stack: Stack | None = None
        if args.bootstrap:
            settings = Settings(
                kafka={"bootstrap_servers": args.bootstrap}, local={"data_dir": data}, metrics={"port": 0}
            )
        else:
            settings = Settings(
                kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
                local={"kafka_controller_port": free_port(), "data_dir": data},
                metrics={"port": 0},
            )
            stack = Stack(settings)
            stack.kafka.up()
            settings = as_principal(settings, KafkaPrincipal.ADMIN)  # its password exists now
        try:
            settings = settings.model_copy(update={"kafka": {"topic_prefix": f"bench{uuid.uuid4().hex[:6]}."}})
            create_topics(settings)
            receipts = list(
                Simulator(42, stores=50, customers=2000).stream(args.receipts, datetime.now(UTC), rate=100.0)
            )
            lines = sum(len(c.lines) for c in receipts)
            each = lines / len(receipts)
            print(f"{len(receipts)} simulated receipts ({each:.1f} lines each) to {settings.kafka.bootstrap_servers}")

            # Warm-up: topic metadata, the idempotent producer id and the broker's page cache are
            # paid for once here rather than by whichever path happens to run first.
            raw_librdkafka(settings, receipts[:2000])
            runs: list[tuple[str, Callable[[int], float]]] = [
                ("raw librdkafka (baseline)", lambda _i: raw_librdkafka(settings, receipts)),
                ("register client", lambda _i: register_client(settings, receipts)),
                ("outbox, 100 per commit", lambda i: outbox(settings, receipts, data / f"outbox-100-{i}.db", 100)),
                ("outbox, 1 per commit", lambda i: outbox(settings, receipts, data / f"outbox-1-{i}.db", 1)),
            ]
            results: list[tuple[str, float]] = []
            for name, run in runs:
                times = sorted(run(i) for i in range(args.repeat))
                results.append((name, times[len(times) // 2]))
            base = len(receipts) / results[0][1]
            print(f"\n{'path':<28}{'receipts/s':>12}{'vs baseline':>13}{'seconds':>10}")
            for name, elapsed in results:
                rate = len(receipts) / elapsed
                print(f"{name:<28}{rate:>12,.0f}{rate / base:>12.2f}x{elapsed:>10.2f}")
            print(f"\npeak RSS of this process: {_rss_mib():.0f} MiB")
        finally:
            if stack is not None:
                stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
