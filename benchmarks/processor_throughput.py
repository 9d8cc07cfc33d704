"""Processor throughput: the exactly-once router next to a raw passthrough and a naive faust agent, same run.

All read the same simulated checkouts from the same broker and write to their own output topics:

* ``raw consume→produce``  confluent-kafka consumer → producer, bytes copied unchanged, no
                           transactions, no decoding: the ceiling the client and broker allow;
* ``router (exactly-once)`` ``receiptflow process --role router``: decode, validate, policy, consent,
                           dedup, encode three outputs, one Kafka transaction per batch (decode,
                           validation, truncation and encoding on the compiled fast path when built);
* ``router, Python core``  the same with ``RECEIPTFLOW_FAST_PATH=off``: every checkout on the Python core;
* ``single-output loop``   decode, validate, truncate, encode one record, produce (no consent, no
                           dedup, no transactions): the shape of the hand-written loop the
                           15k receipts/s target came from;
* ``router, 2 workers``    two such processes in one consumer group (partitions split between them;
                           the topics are filled once both hold partitions);
* ``naive faust agent``    a faust-streaming agent doing the router's per-record work (the same
                           step: validation, consent, dedup) one event at a time with
                           ``await topic.send`` per output (faust's idiomatic shape);
* ``Kafka Streams (EOS v2)`` the router's job as a Kafka Streams topology with
                           ``processing.guarantee=exactly_once_v2``, one stream thread, state in
                           RocksDB (``benchmarks/kstreams/``, started by ``peer_kstreams.py``).

Each runs in its own process and is timed from its first output record to its last, so start-up
and group joins are not counted. Usage:
``python benchmarks/processor_throughput.py [--receipts N] [--repeat R] [--bootstrap HOST:PORT]``.
Each round runs every path once; the medians over the rounds are printed with their range, because
a small shared machine varies by a third from one minute to the next.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import faust
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from peer_kstreams import PeerTopics, build, start
from peer_record import Record, peer_letters, peer_outputs, peer_step

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.kafka_auth import KafkaPrincipal, as_principal
from receiptflow.models import Checkout
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.agent import faust_broker_url, run_worker
from receiptflow.processors.router.route import process
from receiptflow.processors.router.state import PartitionState, Staged
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.secrets import analytics_key
from receiptflow.stack import Stack
from receiptflow.stack.process import free_port
from receiptflow.topics import TopicNames, create_topics


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTFLOW_")}
    env.update(
        RECEIPTFLOW_FAST_PATH="on" if settings.router.fast_path else "off",
        RECEIPTFLOW_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        RECEIPTFLOW_DATA_DIR=str(settings.local.data_dir),
        RECEIPTFLOW_TOPIC_PREFIX=settings.kafka.topic_prefix,
        RECEIPTFLOW_TOPIC_PARTITIONS=str(settings.kafka.topic_partitions),
        RECEIPTFLOW_PROCESSOR_ID=settings.router.id,
        RECEIPTFLOW_METRICS_PORT="0",
    )
    return env


def records_in(settings: Settings, topic: str) -> int:
    """How many records ``topic`` holds now (the sum of its partitions' watermark spans)."""
    c = Consumer(settings.kafka_config(**{"group.id": f"bench-peek-{uuid.uuid4().hex[:6]}"}))
    try:
        total = 0
        for p in range(settings.kafka.topic_partitions):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


def _time_until(settings: Settings, topic: str, target: int, alive: Callable[[], bool], timeout: float = 600) -> float:
    """Seconds from the first record in ``topic`` to ``target`` records."""
    deadline = time.monotonic() + timeout
    first_at: float | None = None
    first_count = 0
    while True:
        n = records_in(settings, topic)
        now = time.monotonic()
        if n and first_at is None:
            first_at, first_count = now, n
        if n >= target:
            assert first_at is not None
            # Scale to the whole run: the records already there at the first look took time too.
            return (now - first_at) * target / max(1, target - first_count)
        if now > deadline or not alive():
            raise SystemExit(f"{topic}: {n} of {target} records (process alive: {alive()})")
        time.sleep(0.05)


def _timed_loop(
    settings: Settings,
    source: str,
    target: str,
    count: int,
    label: str,
    linger_ms: int,
    transform: Callable[[bytes, datetime], bytes] | None = None,
) -> float:
    """Consume ``source`` and produce to ``target`` (``transform``-ed, or the bytes as they are).

    Timed inside the loop: from the first record consumed to the last one acknowledged.
    """
    consumer = Consumer(
        settings.kafka_config(**{"group.id": f"bench-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
    )
    producer = Producer(settings.kafka_config(**{"linger.ms": linger_ms, "compression.type": "lz4"}))
    consumer.subscribe([source])
    done = 0
    started: float | None = None
    deadline = time.monotonic() + 300
    while done < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{label}: {done} of {count} after 300 s")
        now = datetime.now(UTC)
        for m in consumer.consume(2000, timeout=0.5):
            if m.error() is not None:
                continue
            if started is None:
                started = time.perf_counter()
            value = m.value() if transform is None else transform(m.value(), now)
            while True:
                try:
                    producer.produce(target, value=value, key=m.key())
                    break
                except BufferError:
                    producer.poll(0.05)
            done += 1
        producer.poll(0)
    producer.flush(60)
    assert started is not None
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def raw_passthrough(settings: Settings, source: str, target: str, count: int) -> float:
    """Bytes copied unchanged: the ceiling the client and broker allow."""
    return _timed_loop(settings, source, target, count, "raw passthrough", linger_ms=5)


def single_output(settings: Settings, count: int) -> float:
    """A hand-written single-output loop, timed like ``raw_passthrough``.

    decode → validate → policy truncation → encode the customer record → produce, one output topic,
    no consent state, no dedup, no transactions: the shape of the ~15k receipts/s figure the target
    was set from (which also wrote to Redis, not done here), for comparison with the router's
    three outputs in Kafka transactions.
    """
    names = TopicNames(settings.kafka.topic_prefix)
    codec, policy = Codec(), load_policy()

    def customer_record(value: bytes, now: datetime) -> bytes:
        c = Checkout.from_avro(codec.decode(value, expect="checkout").value)
        return codec.encode("purchase", process(c, policy, None, now).customer.to_avro())

    return _timed_loop(
        settings, names.checkouts, names.purchases_customer, count, "single output", 100, customer_record
    )


def router(settings: Settings, count: int, workers: int = 1, load: Callable[[], None] | None = None) -> float:
    """``workers`` router processes in one consumer group (one transactional id each).

    With several workers the topics start empty and ``load`` fills them once every worker holds
    partitions: otherwise the first worker to join routes alone until the others arrive.
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "process", "--role", "router", "--instance", str(i)],
            env=_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    try:
        if load is not None:
            _wait_for_members(settings, workers)
            load()
        return _time_until(
            settings,
            TopicNames(settings.kafka.topic_prefix).purchases_customer,
            count,
            lambda: all(p.poll() is None for p in procs),
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def _wait_for_members(settings: Settings, workers: int, timeout: float = 120) -> None:
    """Block until the group has ``workers`` members with partitions, so the timing starts balanced."""
    admin = AdminClient(settings.kafka_config())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([settings.router.id])[settings.router.id].result(10)
        except KafkaException:
            desc = None
        if desc is not None and sum(1 for m in desc.members if m.assignment.topic_partitions) >= workers:
            return
        time.sleep(0.2)
    raise SystemExit(f"router group did not reach {workers} members with partitions in {timeout:.0f} s")


def naive_faust(settings: Settings, count: int) -> float:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--faust-worker"],
        env=_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return _time_until(
            settings, TopicNames(settings.kafka.topic_prefix).purchases_customer, count, lambda: proc.poll() is None
        )
    finally:
        proc.terminate()
        proc.wait(30)


def kstreams_peer(settings: Settings, count: int) -> float:
    """The Kafka Streams peer on its own topics, timed like the router (first output to last)."""
    names = TopicNames(settings.kafka.topic_prefix)
    proc = start(settings, PeerTopics.of(names), settings.router.id, analytics_key(settings))
    try:
        return _time_until(settings, names.purchases_customer, count, lambda: proc.poll() is None)
    finally:
        proc.terminate()
        proc.wait(60)


def faust_worker() -> None:
    """The naive per-event faust agent (its own process; ``naive_faust`` and ``peers.py`` start it).

    The router's per-record step (:class:`RouteStep`) in the shape faust invites: one agent on both
    inputs, one event at a time, ``await topic.send`` per output. Naive in what faust leaves to the
    author: consent histories and receipt ids seen live in process memory, the sends are
    at-least-once, and the inputs are taken in fetch order, not in the order they were written.
    Outputs go to ``BENCH_OUTPUT_PREFIX``'s topics (default: the inputs' prefix).
    """
    settings = Settings()
    inputs = TopicNames(settings.kafka.topic_prefix)
    outputs = TopicNames(os.environ.get("BENCH_OUTPUT_PREFIX", settings.kafka.topic_prefix))
    step = peer_step(settings, outputs.prefix, "faust-naive")
    letters = peer_letters(settings, "faust-naive")
    app = faust.App(
        f"{settings.router.id}-naive",
        broker=faust_broker_url(settings),
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(settings.local.data_dir / f"faust-naive-{settings.router.id}"),
    )
    source = app.topic(inputs.consents, inputs.checkouts, key_type=bytes, value_type=bytes, allow_empty=True)
    sinks = {
        name: app.topic(name, key_type=bytes, value_type=bytes, allow_empty=True)
        for name in (
            outputs.purchases_customer,
            outputs.purchases_marketing,
            outputs.analytics_baskets,
            outputs.checkouts_dlq,
        )
    }
    state: dict[int, PartitionState] = {}

    @app.agent(source)
    async def route(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            staged = Staged()
            m = event.message
            msg = Record(m.topic, m.partition, m.offset, m.key, m.value, int(m.timestamp * 1000))
            now = datetime.now(UTC)
            result = step.step(msg, state, staged, now)
            staged.commit_into(state)
            for out in peer_outputs(step, result, letters, now):
                await sinks[out.topic].send(key=out.key, value=out.value)

    run_worker(app)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--bootstrap", help="use this broker instead of starting an embedded one")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all paths; medians are printed")
    parser.add_argument("--skip-faust", action="store_true", help="leave out the (slow) naive faust agent")
    parser.add_argument("--skip-kstreams", action="store_true", help="leave out the Kafka Streams peer")
    parser.add_argument("--faust-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.faust_worker:
        sys.argv = [sys.argv[0], "worker"]
        faust_worker()
        return 0

    if not args.skip_kstreams:
        build()  # before the broker starts: a first build takes a minute
    with tempfile.TemporaryDirectory(prefix="receiptflow-bench-") as tmp:
        data = Path(tmp)
        stack: Stack | None = None
        base = {"data_dir": data, "metrics_port": 0, "topic_partitions": args.partitions}
        if args.bootstrap:
            settings = Settings(kafka={"bootstrap_servers": args.bootstrap}, **base)
        else:
            settings = Settings(
                kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
                local={"kafka_controller_port": free_port()},
                **base,
            )
            stack = Stack(settings)
            stack.kafka.up()
            settings = as_principal(settings, KafkaPrincipal.ADMIN)  # its password exists now
        try:
            receipts = list(
                Simulator(42, stores=50, customers=3000).stream(
                    args.receipts, datetime.now(UTC) - timedelta(hours=2), rate=10.0
                )
            )
            rates: dict[str, list[float]] = {}

            def fresh(name: str, load: bool = True) -> Settings:
                tag = f"{name}-{uuid.uuid4().hex[:6]}"
                s = settings.model_copy(
                    update={"kafka": {"topic_prefix": f"bench-{tag}."}, "router": {"id": f"bench-{tag}"}}
                )
                create_topics(s)
                if load:
                    send(s)
                return s

            def send(s: Settings) -> None:
                client = RegisterClient(s)
                for c in receipts:
                    client.send(c)
                client.flush(120)

            def record(name: str, elapsed: float) -> None:
                rates.setdefault(name, []).append(len(receipts) / elapsed)

            # Rounds interleave the paths, so a slow spell of a shared machine hits them all alike.
            for _ in range(args.repeat):
                s = fresh("raw")
                names = TopicNames(s.kafka.topic_prefix)
                record(
                    "raw consume→produce",
                    raw_passthrough(s, names.checkouts, names.analytics_baskets, len(receipts)),
                )
                record("router (exactly-once)", router(fresh("router"), len(receipts)))
                python_core = fresh("router-py").model_copy(update={"router": {"fast_path": False}})
                record("router, Python core", router(python_core, len(receipts)))
                record("single-output loop", single_output(fresh("one"), len(receipts)))
                two = fresh("router2", load=False)
                record("router, 2 workers", router(two, len(receipts), workers=2, load=partial(send, two)))
                if not args.skip_faust:
                    record("naive faust agent", naive_faust(fresh("faust"), len(receipts)))
                if not args.skip_kstreams:
                    record("Kafka Streams (EOS v2)", kstreams_peer(fresh("kstreams"), len(receipts)))

            lines = sum(len(c.lines) for c in receipts) / len(receipts)
            print(
                f"{len(receipts)} receipts ({lines:.1f} lines each), {args.partitions} partitions,"
                f" {os.cpu_count()} cores shared with the broker, {args.repeat} round(s)"
            )
            print(f"\n{'path':<26}{'median/s':>12}{'vs router':>11}{'lowest-highest/s':>22}")
            router_rate = statistics.median(rates["router (exactly-once)"])
            for name, values in rates.items():
                mid = statistics.median(values)
                span = f"{min(values):,.0f}-{max(values):,.0f}"
                print(f"{name:<26}{mid:>12,.0f}{mid / router_rate:>10.2f}x{span:>22}")
        finally:
            if stack is not None:
                stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
