"""Output equality of the router and its Kafka Streams peer on the same input; exit status 1 when they differ.

Both read the same ``checkouts`` and ``consents`` — simulated traffic with every card's sign-up
consent, consent changes, repeated deliveries, out-of-order delivery and bad records — and write to
output topics of their own; the outputs are then read to their end, decoded and compared as
multisets per output (customer, marketing, analytics, dlq), leaving out only the fields listed in
``peer_outputs.IGNORED``.

``--peer-policy FILE`` gives the peer another granularity policy than the router's: the check must
then fail (that is how it shows it can). Usage:
``python benchmarks/kstreams_equality.py [--receipts N] [--peer-policy FILE] [--bootstrap HOST:PORT]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from peer_kstreams import PeerTopics, create_output_topics, start
from peer_outputs import IGNORED, compare, read_outputs
from processor_throughput import _env

from receiptflow.config import Settings
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator, Traffic
from receiptflow.secrets import analytics_key
from receiptflow.stack import Stack
from receiptflow.stack.process import free_port
from receiptflow.topics import TopicNames, create_topics


def fill(settings: Settings, receipts: int, seed: int = 7) -> dict[str, int]:
    """Simulated traffic into ``checkouts`` and ``consents``; counts of what was sent, by kind."""
    names = TopicNames(settings.topic_prefix)
    client = RegisterClient(settings)
    sim = Simulator(seed, stores=30, customers=800)
    traffic = Traffic(
        sim, client.encode_checkout, dup_rate=0.03, bad_rate=0.02, consent_change_rate=0.05, out_of_order_rate=0.02
    )
    start_at = datetime.now(UTC) - timedelta(hours=3)
    sent: dict[str, int] = {}
    for e in traffic.initial_consents(start_at - timedelta(days=30)):
        assert e.consent is not None
        client.send_consent(e.consent)
        sent["consent"] = sent.get("consent", 0) + 1
    # Sign-up consents are appended before any checkout: no tie of append times with them.
    client.flush(120)
    time.sleep(0.05)
    for e in traffic.emissions(receipts, start_at, rate=1.0):
        if e.consent is not None:
            client.send_consent(e.consent)
        elif e.raw is not None:
            client.send_raw(names.checkouts, b"bad", e.raw)
        else:
            assert e.checkout is not None
            client.send(e.checkout)
        sent[e.kind] = sent.get(e.kind, 0) + 1
    client.flush(120)
    return sent


def wait_consumed(settings: Settings, groups: list[str], topics: list[str], timeout: float = 900) -> None:
    """Block until every group has committed offsets at the end of every partition of ``topics``."""
    probe = Consumer(settings.kafka_config(**{"group.id": f"peer-probe-{uuid.uuid4().hex[:6]}"}))
    parts = [TopicPartition(t, p) for t in topics for p in range(settings.topic_partitions)]
    ends = {(tp.topic, tp.partition): probe.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    probe.close()
    deadline = time.monotonic() + timeout
    for group in groups:
        c = Consumer(settings.kafka_config(**{"group.id": group}))
        try:
            while True:
                done = {(tp.topic, tp.partition): tp.offset for tp in c.committed(parts, timeout=10)}
                if all(done.get(k, -1) >= end for k, end in ends.items() if end > 0):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{group}: inputs not consumed within {timeout:.0f} s")
                time.sleep(0.5)
        finally:
            c.close()


def run(settings: Settings, receipts: int, peer_policy: Path | None, log_dir: Path) -> list[str]:
    """Router and peer on the same fresh input; the differences of their outputs (empty: equal)."""
    tag = uuid.uuid4().hex[:6]
    s = settings.model_copy(update={"topic_prefix": f"eq-{tag}.", "processor_id": f"eq-router-{tag}"})
    create_topics(s)
    names = TopicNames(s.topic_prefix)
    ours, theirs = PeerTopics.of(names), PeerTopics.beside(names, "kstreams")
    create_output_topics(s, theirs)
    sent = fill(s, receipts)
    print("sent:", ", ".join(f"{n:,} {kind}" for kind, n in sorted(sent.items())))
    app_id = f"eq-kstreams-{tag}"
    router = subprocess.Popen(
        [sys.executable, "-m", "receiptflow", "process", "--role", "router"],
        env=_env(s),
        stdout=(log_dir / "router.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    peer = start(s, theirs, app_id, analytics_key(s), peer_policy, log=log_dir / "kstreams.log")
    try:
        wait_consumed(s, [s.processor_id, app_id], [names.checkouts, names.consents])
    finally:
        for proc in (router, peer):
            proc.terminate()
        for proc in (router, peer):
            proc.wait(60)
    expected, got = read_outputs(s, ours.outputs()), read_outputs(s, theirs.outputs())
    for output in sorted(expected):
        print(f"{output:<10} router {expected[output].total():>7,}   kstreams {got[output].total():>7,}")
    return compare(expected, got, ("router", "kstreams"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--peer-policy", type=Path, help="a policy for the peer only (the check must then fail)")
    parser.add_argument("--bootstrap", help="use this broker instead of starting an embedded one")
    parser.add_argument("--log-dir", type=Path, help="keep the router's and the peer's logs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="receiptflow-equality-") as tmp:
        data = Path(tmp)
        base = {"data_dir": data, "metrics_port": 0, "topic_partitions": args.partitions}
        stack: Stack | None = None
        if args.bootstrap:
            settings = Settings(bootstrap_servers=args.bootstrap, **base)
        else:
            settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(), **base)
            stack = Stack(settings)
            stack.kafka.up()
        try:
            if args.log_dir is not None:
                args.log_dir.mkdir(parents=True, exist_ok=True)
            problems = run(settings, args.receipts, args.peer_policy, args.log_dir or data)
        finally:
            if stack is not None:
                stack.down()
    ignored = "; ".join(f"{o}.{f} ({why})" for o, fields in IGNORED.items() for f, why in fields.items())
    print(f"ignored fields: {ignored}")
    if problems:
        print("DIFFERENT:\n" + "\n".join(problems))
        return 1
    print("EQUAL: every output holds the same records the same number of times")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
