"""The router with the analytics aggregator, same run: the router alone, the aggregator alone, both at once.

On one broker (embedded, or ``--bootstrap``), over the same ``--receipts`` simulated checkouts spread
evenly over ``--days`` whole local days (Europe/Helsinki) that ended more than the grace ago, so every
window closes once read, each phase on fresh topics, each worker its own process:

1. **router alone**: ``receiptflow process --role router`` over the checkouts, timed from its first
   ``purchases.customer`` record to the last (``processor_throughput.py``'s router path): the
   same-run baseline. It also writes the baskets of phase 2.
2. **aggregator alone**: ``receiptflow aggregate run`` over the baskets phase 1 wrote to
   ``purchases.baskets``, timed (its own ``/readyz`` and metrics, polled every 50 ms) from the moment
   it holds its partitions, restored, to its last window closed, i.e. to the transaction that
   committed the last cells, close marker and offsets. The baskets are read back too: the windows
   expected, their sizes, the cells ``release()`` gives for them (the aggregator must publish as
   many) and the time of ``release()`` for the largest window (in this process).
3. **both at once** on fresh topics: the aggregator joins first, then the router starts on the
   same checkouts; the router's part timed as in phase 1, the whole from the start that timing
   gives the router to the aggregator's last window closed. The aggregator's peak RSS (``VmHWM``),
   its resident memory before the first basket and the CPU seconds of both are read before they stop.
4. **release() alone** (no Kafka) on one chain-day of ``--window-sizes`` baskets over
   ``--window-stores`` stores of one chain (the simulator's hourly profile, routed with the shipped
   policy), each size in a process of its own: the memory of the decoded baskets as the aggregator
   holds them, then ``release()``'s time and its peak above them. With the aggregator's memory limit
   in ``deploy/k8s/aggregate.yaml`` this says how large a chain-day one aggregator holds.

``--grace-seconds`` and ``--idle-close-seconds`` are the aggregator's settings for the run. The grace
is by default the span of the days: a router draining a backlog takes its input partitions a fetch at
a time, and with a few thousand receipts a day one fetch spans hours of event time, so a shorter grace
would close windows by stream time before the rest of their baskets arrive (late, dropped). So every
window closes by the idle rule, ``--idle-close-seconds`` after the last basket of its partition, and
both aggregator timings include that wait.

Usage: ``python benchmarks/aggregate_throughput.py [--receipts N] [--days D] [--window-sizes N ...]
[--json-out FILE] [--markdown-out docs/performance.md]``; ``end_to_end.py`` (``make bench``) calls
:func:`run` on its broker after its own router baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aggregate_report
import e2e_report
import processor_throughput
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from e2e_observe import peak_rss, scrape, tree_cpu

from receiptflow.catalogue import load_catalogue
from receiptflow.cells import Window, window_of
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.kafka_auth import KafkaPrincipal, as_principal
from receiptflow.kafka_read import ReadToEnd
from receiptflow.models import AnalyticsBasket, Checkout
from receiptflow.policy import load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import process
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import HELSINKI, HOURLY_PROFILE, Simulator, Store
from receiptflow.stack import Stack
from receiptflow.stack.process import free_port
from receiptflow.suppression import release
from receiptflow.topics import TopicNames, create_topics

HERE = Path(__file__).resolve().parent
AGGREGATE_YAML = HERE.parent / "deploy" / "k8s" / "aggregate.yaml"
# The chain of the release() windows: a supermarket chain (3 to 18 lines a basket, every grocery group).
CHAIN = "S_MARKET"
POLL = 0.05


def past_days(count: int, days: int, over_by: datetime) -> list[Checkout]:
    """``count`` simulated checkouts spread evenly over ``days`` whole local days that ended by ``over_by``."""
    midnight = over_by.astimezone(HELSINKI).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (midnight - timedelta(days=days)).astimezone(UTC)
    span = (midnight.astimezone(UTC) - start).total_seconds()
    return list(Simulator(42, stores=60, customers=3000).stream(count, start, rate=count / span))


def fresh(settings: Settings, name: str) -> Settings:
    """``settings`` on a topic set and router id of their own (topics created)."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    s = settings.model_copy(update={"kafka": {"topic_prefix": f"bench-{tag}."}, "router": {"id": f"bench-{tag}"}})
    create_topics(s)
    return s


def send(settings: Settings, receipts: list[Checkout]) -> None:
    client = RegisterClient(settings)
    for c in receipts:
        client.send(c)
    client.flush(120)


class Worker:
    """A ``receiptflow`` command in its own process, its metrics exporter on a port of its own."""

    def __init__(self, name: str, settings: Settings, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        logs = settings.local.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "receiptflow", *args, "--metrics-port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{self.name} exited with {self.proc.returncode}; its log ends:\n{tail}")

    def ready(self, timeout: float = 120) -> float:
        """When ``/readyz`` first answers 200 (polled every 50 ms): partitions assigned and restored."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic()
            except OSError:
                pass  # not serving yet, or 503: not ready
            time.sleep(POLL)
        raise SystemExit(f"{self.name} was not ready after {timeout:.0f} s; see {self.log_path}")

    def counts(self) -> dict[str, int] | None:
        """The aggregator's counters now (None while its exporter does not answer yet)."""
        try:
            return aggregate_report.aggregate_counts(scrape(self.port))
        except OSError:
            return None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def env_for(settings: Settings, grace: int, idle: int) -> dict[str, str]:
    return {
        **processor_throughput._env(settings),
        "RECEIPTFLOW_ANALYTICS_GRACE_SECONDS": str(grace),
        "RECEIPTFLOW_ANALYTICS_IDLE_CLOSE_SECONDS": str(idle),
    }


def rss(pid: int) -> int | None:
    """The process's resident memory now (``VmRSS``), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def watch(
    agg: Worker,
    windows: int,
    baskets: int,
    started: float,
    router_done: Callable[[], bool] | None = None,
    timeout: float = 900,
) -> dict[str, Any]:
    """Poll the aggregator's metrics until it closed ``windows`` windows: the seconds from ``started``, and
    what it counted; ``read_seconds`` when it had read ``baskets``. ``router_done``, when given, is asked
    at each poll until it answers yes: that moment, from ``started``, is ``router_seconds``."""
    deadline = time.monotonic() + timeout
    cpu0 = tree_cpu(agg.proc.pid)
    router_at: float | None = None
    read_at: float | None = None
    while True:
        agg.check()
        counts, now = agg.counts(), time.monotonic()
        if router_done is not None and router_at is None and router_done():
            router_at = now
        if counts is not None and read_at is None and counts["read"] >= baskets:
            read_at = now
        if counts is not None and counts["windows_closed"] >= windows and (router_done is None or router_at):
            return {
                "seconds": now - started,
                "read_seconds": (read_at or now) - started,
                "router_seconds": None if router_at is None else router_at - started,
                "baskets_read": counts["read"],
                "windows_closed": counts["windows_closed"],
                "cells_published": counts["cells_published"],
                "late_baskets": counts["late_baskets"],
                "cpu_seconds": tree_cpu(agg.proc.pid) - cpu0,
                "peak_rss_bytes": peak_rss(agg.proc.pid),
            }
        if now > deadline:
            raise SystemExit(f"the aggregator closed {counts and counts['windows_closed']} of {windows} windows")
        time.sleep(POLL)


def read_baskets(settings: Settings) -> list[AnalyticsBasket]:
    """Every basket in ``purchases.baskets``, read committed to its end."""
    codec = Codec()
    consumer = Consumer(
        settings.kafka_config(**{"group.id": f"bench-read-{uuid.uuid4().hex[:6]}", "enable.partition.eof": True})
    )
    topic = TopicNames(settings.kafka.topic_prefix).analytics_baskets
    try:
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka.topic_partitions)]
        return [
            AnalyticsBasket.from_avro(codec.decode(m.value(), expect="analytics_basket").value)
            for m in ReadToEnd(consumer, parts, what=f"reading {topic}", stall=60).records(5000)
            if m.value() is not None
        ]
    finally:
        consumer.close()


def expected(baskets: list[AnalyticsBasket], k: int) -> dict[str, Any]:
    """The windows of ``baskets``, their sizes, the cells release() gives, and the largest window's release time."""
    windows: dict[Window, list[AnalyticsBasket]] = defaultdict(list)
    for b in baskets:
        windows[window_of(b)].append(b)
    cells, largest = 0, None
    for w, held in windows.items():
        started = time.perf_counter()
        n = len(release(held, k).cells)
        seconds = time.perf_counter() - started
        cells += n
        if largest is None or len(held) > largest["baskets"]:
            largest = {"window": w.id, "baskets": len(held), "cells": n, "release_seconds": seconds}
    return {
        "windows": len(windows),
        "window_sizes": aggregate_report.window_sizes([len(v) for v in windows.values()]),
        "expected_cells": cells,
        "largest_window": largest,
    }


class CustomerRecords:
    """The records in ``purchases.customer`` now (watermark spans, as ``processor_throughput.py`` counts them)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = TopicNames(settings.kafka.topic_prefix).purchases_customer
        self.partitions = settings.kafka.topic_partitions
        self.peek = Consumer(settings.kafka_config(**{"group.id": f"bench-peek-{uuid.uuid4().hex[:6]}"}))

    def __call__(self) -> int:
        total = 0
        for p in range(self.partitions):
            low, high = self.peek.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            total += high - low
        return total

    def close(self) -> None:
        self.peek.close()


def first_output(router: Worker, records: Callable[[], int], timeout: float = 300) -> tuple[float, int]:
    """When the router's first ``purchases.customer`` records show (polled every 50 ms), and how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        router.check()
        if n := records():
            return time.monotonic(), n
        time.sleep(POLL)
    raise SystemExit(f"the router wrote nothing to purchases.customer in {timeout:.0f} s")


def together(
    settings: Settings, receipts: list[Checkout], grace: int, idle: int, windows: int, baskets: int
) -> dict[str, Any]:
    """Phase 3: the aggregator joins, then the router starts; to the aggregator's last window closed.

    The router's part is timed as ``processor_throughput.py`` times it (from its first output to the
    last, scaled to the whole run, since the records there at the first look took time too), and the
    whole from the start that scaling puts before the first output.
    """
    s = fresh(settings, "agg-both")
    send(s, receipts)
    env = env_for(s, grace, idle)
    agg = Worker("aggregate", s, ["aggregate", "run"], env)
    router: Worker | None = None
    count = len(receipts)
    try:
        agg.ready()  # its partitions assigned and restored: it reads the baskets as they come
        base_rss = rss(agg.proc.pid)
        router = Worker("router", s, ["process", "--role", "router", "--loglevel", "warning"], env)
        records = CustomerRecords(s)
        try:
            started, first = first_output(router, records)
            cpu0 = tree_cpu(router.proc.pid)
            result = watch(agg, windows, baskets, started, router_done=lambda: records() >= count)
        finally:
            records.close()
        if first >= count:
            raise SystemExit(f"the router wrote all {count:,} receipts at once: too few to time, give more --receipts")
        router_seconds = result["router_seconds"] * count / (count - first)
        before = router_seconds - result["router_seconds"]  # the time its first records took
        result.update(
            seconds=result["seconds"] + before,
            read_seconds=result["read_seconds"] + before,
            router_seconds=router_seconds,
            router_cpu_seconds=tree_cpu(router.proc.pid) - cpu0,
            base_rss_bytes=base_rss,
        )
        return result
    finally:
        agg.stop()
        if router is not None:
            router.stop()


def run(
    settings: Settings,
    receipts: int,
    how: str,
    *,
    days: int = 3,
    grace: int | None = None,
    idle: int = 2,
    window_sizes: tuple[int, ...] = (),
    window_stores: int = 400,
) -> dict[str, Any]:
    """Every phase on ``settings``' broker; the results as a dict (``how``: how it was run, for the report).

    ``grace`` defaults to the days' span: no window closes before the backlog is read (see the module)."""
    grace = days * 86_400 if grace is None else grace
    # Days whose end plus the grace is past, so that the idle rule closes the last of them too.
    checkouts = past_days(receipts, days, datetime.now(UTC) - timedelta(seconds=grace + 60))
    k = settings.aggregate.k
    print(f"aggregation: router alone over {receipts:,} receipts of {days} past days ...", flush=True)
    alone = fresh(settings, "agg-router")
    send(alone, checkouts)
    router_seconds = processor_throughput.router(alone, receipts)
    if router_seconds <= 0:
        raise SystemExit(f"the router wrote all {receipts:,} receipts at once: too few to time, give more --receipts")
    baskets = read_baskets(alone)
    scale = expected(baskets, k)
    print(f"aggregation: aggregator alone over {len(baskets):,} baskets, {scale['windows']} windows ...", flush=True)
    agg = Worker("aggregate", alone, ["aggregate", "run"], env_for(alone, grace, idle))
    try:
        agg_alone = watch(agg, scale["windows"], len(baskets), agg.ready())
    finally:
        agg.stop()
    print("aggregation: router and aggregator at once ...", flush=True)
    both = together(settings, checkouts, grace, idle, scale["windows"], len(baskets))
    runs = []
    for n in window_sizes:
        print(f"aggregation: release() alone on one chain-day of {n:,} baskets ...", flush=True)
        runs.append(release_alone(n, window_stores, k))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "how": how,
        "cores": os.cpu_count(),
        "receipts": receipts,
        "days": days,
        "partitions": settings.kafka.topic_partitions,
        "k": k,
        "grace_seconds": grace,
        "idle_close_seconds": idle,
        "baskets": len(baskets),
        **scale,
        "router_alone": {"seconds": router_seconds, "receipts_per_s": receipts / router_seconds},
        "aggregator_alone": agg_alone,
        "together": both,
        "release_alone": runs,
        "catalogue_skus": len(load_catalogue()),
        "memory_limit_bytes": aggregate_report.memory_limit(AGGREGATE_YAML),
    }


# --- release() alone ---------------------------------------------------------------------------


def chain_day(n: int, stores: int, seed: int = 7) -> list[bytes]:
    """``n`` checkouts of one local day at ``stores`` stores of one chain, routed: their baskets' Avro records."""
    sim = Simulator(seed, stores=1, customers=5000)
    sim.stores = [Store(f"{CHAIN}-{i:04d}", CHAIN, 8) for i in range(1, stores + 1)]
    day = datetime(2026, 11, 27, tzinfo=HELSINKI)  # a Friday
    hours = list(range(24))
    times = sorted(
        day + timedelta(hours=sim.rng.choices(hours, weights=HOURLY_PROFILE)[0], seconds=sim.rng.random() * 3600)
        for _ in range(n)
    )
    policy, pseudonyms, codec = load_policy(), BasketPseudonymiser(os.urandom(32)), Codec()
    now = day + timedelta(days=2)
    out = []
    for t in times:
        basket = process(sim.checkout(t), policy, None, now, pseudonyms).analytics
        if basket is not None:
            out.append(codec.encode("analytics_basket", basket.to_avro()))
    return out


def release_alone(n: int, stores: int, k: int) -> dict[str, Any]:
    """Generate one chain-day here, measure release() of it in a fresh process (its memory its own)."""
    with tempfile.NamedTemporaryFile(prefix="chain-day-", suffix=".bin") as f:
        for record in chain_day(n, stores):
            f.write(struct.pack(">I", len(record)) + record)
        f.flush()
        gc.collect()
        cmd = [sys.executable, __file__, "--release-child", f.name, "--k", str(k)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"release() of {n:,} baskets failed:\n{done.stderr[-2000:]}")
    return {"receipts": n, "stores": stores, **json.loads(done.stdout.splitlines()[-1])}


def release_child(path: Path, k: int) -> dict[str, Any]:
    """In a process of its own: decode the baskets (as the aggregator holds them), then time release().

    The records are read from the file one at a time, so what the process holds is the baskets alone.
    """
    codec = Codec()
    gc.collect()
    before = rss(os.getpid()) or 0
    baskets = []
    with path.open("rb") as f:
        while header := f.read(4):
            (size,) = struct.unpack(">I", header)
            decoded = codec.decode(f.read(size), expect="analytics_basket").value
            baskets.append(AnalyticsBasket.from_avro(decoded))
    gc.collect()
    held = (rss(os.getpid()) or 0) - before
    wall, cpu = time.perf_counter(), time.process_time()
    cells = len(release(baskets, k).cells)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = peak_rss(os.getpid()) or 0
    return {
        "baskets": len(baskets),
        "cells": cells,
        "seconds": wall,
        "cpu_seconds": cpu,
        "held_bytes": held,
        "release_peak_bytes": peak - before - held,
        "peak_rss_bytes": peak,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    aggregate_report.add_arguments(parser)
    parser.add_argument("--bootstrap", help="use this broker instead of starting an embedded one")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--json-out", type=Path, help="write the results here as JSON")
    parser.add_argument("--markdown-out", type=Path, help="update the aggregation section of this Markdown file")
    parser.add_argument("--release-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.release_child:
        print(json.dumps(release_child(args.release_child, args.k)))
        return 0
    # Stopped, it still stops its workers and its broker (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="receiptflow-agg-") as tmp:
        base = {"data_dir": Path(tmp), "metrics_port": 0, "topic_partitions": args.partitions}
        stack: Stack | None = None
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
            how = "on its own embedded broker" if stack is not None else f"on the broker at {args.bootstrap}"
            result = run(settings, args.receipts, how, **aggregate_report.run_options(args))
        finally:
            if stack is not None:
                stack.down()
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(aggregate_report.console(result))
    if args.markdown_out:
        e2e_report.update_section(args.markdown_out, aggregate_report.markdown(result), aggregate_report.SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
