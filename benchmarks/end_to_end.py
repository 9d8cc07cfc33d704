"""End to end on the embedded stack: registers → router → profile agent (Redis) and warehouse sink (PostgreSQL).

Every stage runs in its own process, as in production: ``receiptflow process --role router``,
``process --role profiles``, ``sink run`` and, per phase, ``receiptflow simulate`` (the seeded fleet
through its on-disk outbox). The embedded Kafka, Redis and PostgreSQL are started in a temporary
data dir and stopped afterwards. The warehouse is PostgreSQL because its rows can be polled while
the sink writes; a DuckDB file is locked by the sink that holds it open.

Phases, in one run:

1. **backlog**: the simulator sells ``--receipts`` checkouts unpaced before the pipeline runs (the
   producer's own rate), then the pipeline's three processes start and drain them; timed from the
   first ``purchases.customer`` record to the last receipt visible both in the profiles (visits in
   Redis) and in the warehouse (rows of ``receipts``): the pipeline at saturation, without the
   simulator competing for the cores. CPU seconds per receipt are taken over this drain.
2. **live**: the same number sold unpaced while the pipeline runs; timed from the first checkout
   acknowledged by Kafka to the last receipt visible in profiles and warehouse. On a small machine
   the simulator's outbox takes cores from the pipeline, so this rate is the lower of the two.
3. **latency** at each ``--loads`` rate for ``--latency-seconds`` (see ``e2e_observe.py``): from the
   checkout's produce time (its broker timestamp) to its ``purchases.customer`` record's broker
   timestamp, to its card's dedup set in Redis and to its warehouse row (those two sampled, polled
   every 50 and 100 ms). "sold/s" says what the simulator managed: a fleet that cannot keep up with
   the offered rate sells slower, and the latencies are those of the rate it did sell.
4. **router alone**: ``benchmarks/processor_throughput.py``'s router path on a fresh topic, after
   the pipeline is stopped: the same-run baseline the end-to-end rate is compared with.
5. **aggregation**: ``benchmarks/aggregate_throughput.py`` on the same broker: the router alone, the
   analytics aggregator alone over the router's baskets and the two at once over past days, to the
   last cell committed; then ``release()`` alone on national-scale chain-days.
6. **peers**: ``benchmarks/peers.py`` on the same broker: the router, quixstreams, the naive faust
   agent (and Kafka Streams when its peer is there) on one input, timed, outputs compared.

CPU is ``/proc/<pid>/stat`` of each process (PostgreSQL's live backends added to its postmaster; the
simulator's from ``getrusage`` of reaped children); peak RSS is ``VmHWM``. Redis bytes per card are
``MEMORY USAGE`` of the sampled cards' keys via the profile store.

``--latency-only`` runs phase 3 alone (after a warm-up sale of a few hundred receipts that waits for
every stage to hold its partitions), e.g. ``--latency-only --loads 500 --latency-seconds 30``: the
quick check of a latency setting; it prints the latency table and writes no Markdown. The broker's
JIT warms up over the first minutes, so ``--loads 500 500 500`` shows the later runs nearer to a full
run's latency phase. ``--profile-agent FILE`` samples the profile agent with py-spy during the last
load and writes the summary (docs/profiles/ has one).

Every latency run also reads each pipeline process's own metrics before and after it (their
exporters, on ports of their own): per stage the batches, their mean size and time, the mean time
from checkout to the stage's committed output and the share of receipts within 100, 250, 500 and
1,000 ms of their checkout; and the CPU seconds per second each process used while the registers
sold, so a run shows how busy the cores were.

Usage: ``python benchmarks/end_to_end.py [--quick | --latency-only] [--json-out FILE] [--markdown-out FILE]``
(``--markdown-out`` replaces the "End to end", "The router with the aggregator", "The router beside its
peers" and "Targets" sections there; the targets table, each target of the issue against this run's
figures, is printed last).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aggregate_report
import aggregate_throughput
import e2e_report
import peers
import processor_throughput
from e2e_observe import Observer, lines_in, peak_rss, scrape, tree_cpu
from profile_router import AGENT_BUCKETS, summarise

from receiptflow.cli.common import MAX_RATE
from receiptflow.cli.demo import end_offsets
from receiptflow.config import Settings
from receiptflow.kafka_auth import KafkaPrincipal, as_principal
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.stack import Stack
from receiptflow.stack.process import free_port
from receiptflow.topics import TopicNames, create_topics

# NAME=VALUE settings given with --set, for every process of the pipeline (e.g. PROCESSOR_BATCH_WAIT_MS=500).
EXTRA_SETTINGS: dict[str, str] = {}


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTFLOW_")}
    env.update({f"RECEIPTFLOW_{k.upper()}": v for k, v in EXTRA_SETTINGS.items()})
    env.update(
        RECEIPTFLOW_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        RECEIPTFLOW_REDIS_URL=settings.redis.url,
        RECEIPTFLOW_WAREHOUSE_URL=str(settings.warehouse.url),
        RECEIPTFLOW_DATA_DIR=str(settings.local.data_dir),
        RECEIPTFLOW_TOPIC_PARTITIONS=str(settings.kafka.topic_partitions),
        RECEIPTFLOW_METRICS_PORT="0",
    )
    return env


@dataclass
class Pipeline:
    settings: Settings
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def start(self, logs: Path) -> None:
        cmds = {
            "router": ["process", "--role", "router", "--loglevel", "warning"],
            "profiles": ["process", "--role", "profiles", "--loglevel", "warning"],
            "sink": ["sink", "run"],
        }
        for name, args in cmds.items():
            out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - child keeps it
            self.metrics_ports[name] = free_port()
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "receiptflow", *args, "--metrics-port", str(self.metrics_ports[name])],
                env=env_for(self.settings),
                stdout=out,
                stderr=out,
            )

    def scrape(self) -> dict[str, Any]:
        """Each pipeline process's metrics now (a process whose exporter does not answer is left out)."""
        out = {}
        for name, port in self.metrics_ports.items():
            try:
                out[name] = scrape(port)
            except OSError:
                continue
        return out

    def pids(self) -> dict[str, int]:
        out = {name: p.pid for name, p in self.procs.items()}
        for server in ("kafka", "redis", "postgres"):
            pid_file = self.settings.local.data_dir / "run" / f"{server}.pid"
            if pid_file.is_file():
                out[server] = int(pid_file.read_text().split()[0])
        return out

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SystemExit(
                    f"{name} exited with {p.returncode}; see its log under {self.settings.local.data_dir}/logs"
                )

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# The highest rate `simulate` takes: far above what it sells, so it sells as fast as it can.
FLAT_OUT = float(MAX_RATE)


def simulate(settings: Settings, rate: float, count: int, seed: int, truth: Path) -> subprocess.Popen[bytes]:
    args = ["simulate", "--rate", str(rate), "--duration", str(count / rate), "--seed", str(seed)]
    args += ["--stores", "60", "--customers", "3000", "--truth", str(truth), "--metrics-port", "0"]
    args += ["--outbox", str(settings.local.data_dir / "outbox" / f"bench-{seed}.sqlite3")]
    return subprocess.Popen(
        [sys.executable, "-m", "receiptflow", *args],
        env=env_for(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def warehouse_receipts(conn: psycopg.Connection[Any]) -> int:
    try:
        row = conn.execute("SELECT count(*) FROM receipts").fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def first_ack(settings: Settings, topic: str, base: int, sim: subprocess.Popen[bytes]) -> float:
    """The moment the first new record shows in ``topic`` (polled every 20 ms)."""
    while end_offsets(settings, topic) <= base:
        if sim.poll() not in (None, 0):
            raise SystemExit(f"simulate exited with {sim.returncode}")
        time.sleep(0.02)
    return time.monotonic()


def sold(tmp: Path, name: str) -> tuple[int, int]:
    """(receipts, carded sales: the visits the profiles gain) a simulator run sold, from its ground truth."""
    return e2e_report.expected_from_truth(json.loads((tmp / f"truth-{name}.json").read_text()))


def wait_visible(
    pipe: Pipeline,
    conn: psycopg.Connection[Any],
    store: RedisProfileStore,
    base: tuple[int, int],
    receipts: int,
    carded: int,
) -> tuple[float, float]:
    """When ``carded`` more visits than ``base`` are in the profiles and ``receipts`` more rows in the warehouse."""
    base_visits, base_rows = base
    profiles_at = warehouse_at = None
    deadline = time.monotonic() + 900
    while profiles_at is None or warehouse_at is None:
        pipe.check()
        if time.monotonic() > deadline:
            raise SystemExit("the pipeline did not catch up in 900 s")
        if profiles_at is None and store.totals()[1] - base_visits >= carded:
            profiles_at = time.monotonic()
        if warehouse_at is None and warehouse_receipts(conn) - base_rows >= receipts:
            warehouse_at = time.monotonic()
        time.sleep(0.1)
    return profiles_at, warehouse_at


def figures(receipts: int, lines: int, start: float, profiles_at: float, warehouse_at: float) -> dict[str, Any]:
    elapsed = max(profiles_at, warehouse_at) - start
    return {
        "receipts": receipts,
        "lines": lines,
        "seconds": elapsed,
        "receipts_per_s": receipts / elapsed,
        "lines_per_s": lines / elapsed,
        "profiles_seconds": profiles_at - start,
        "warehouse_seconds": warehouse_at - start,
    }


def backlog(
    pipe: Pipeline, conn: psycopg.Connection[Any], store: RedisProfileStore, count: int, tmp: Path
) -> dict[str, Any]:
    """Sell ``count`` before the pipeline runs, then time the pipeline draining them."""
    settings = pipe.settings
    names = TopicNames(settings.kafka.topic_prefix)
    base = store.totals()[1], warehouse_receipts(conn)
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sim = simulate(settings, FLAT_OUT, count, seed=11, truth=tmp / "truth-backlog.json")
    acked = first_ack(settings, names.checkouts, 0, sim)
    if sim.wait() != 0:
        raise SystemExit(f"simulate exited with {sim.returncode}")
    producer_s = time.monotonic() - acked
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    receipts, carded = sold(tmp, "backlog")
    lines = lines_in(settings, names.checkouts)
    pipe.start(settings.local.data_dir / "logs")
    while end_offsets(settings, names.purchases_customer) == 0:
        pipe.check()
        time.sleep(0.02)
    start, pids = time.monotonic(), pipe.pids()
    cpu0 = {n: tree_cpu(p) for n, p in pids.items()}
    profiles_at, warehouse_at = wait_visible(pipe, conn, store, base, receipts, carded)
    cpu = {n: tree_cpu(p) - cpu0[n] for n, p in pids.items()}
    cpu["simulate"] = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    return {
        **figures(receipts, lines, start, profiles_at, warehouse_at),
        "producer_receipts_per_s": receipts / producer_s,
        "cpu_seconds_per_million_receipts": {n: v / receipts * 1e6 for n, v in cpu.items()},
        "simulate_peak_rss_bytes": child1.ru_maxrss * 1024,
    }


def live(
    pipe: Pipeline, conn: psycopg.Connection[Any], store: RedisProfileStore, count: int, tmp: Path, lines_before: int
) -> dict[str, Any]:
    """Sell ``count`` unpaced while the pipeline runs: first checkout acknowledged to last receipt visible."""
    settings = pipe.settings
    checkouts = TopicNames(settings.kafka.topic_prefix).checkouts
    offsets, base = end_offsets(settings, checkouts), (store.totals()[1], warehouse_receipts(conn))
    sim = simulate(settings, FLAT_OUT, count, seed=12, truth=tmp / "truth-live.json")
    acked = first_ack(settings, checkouts, offsets, sim)
    if sim.wait() != 0:
        raise SystemExit(f"simulate exited with {sim.returncode}")
    receipts, carded = sold(tmp, "live")
    profiles_at, warehouse_at = wait_visible(pipe, conn, store, base, receipts, carded)
    return figures(receipts, lines_in(settings, checkouts) - lines_before, acked, profiles_at, warehouse_at)


def latency(
    pipe: Pipeline,
    store: RedisProfileStore,
    rate: float,
    seconds: float,
    sample: int,
    tmp: Path,
    profile_agent: Path | None = None,
) -> dict[str, Any]:
    conn = psycopg.connect(str(pipe.settings.warehouse.url), autocommit=True)
    obs = Observer(pipe.settings, store, conn, sample)
    threads = [threading.Thread(target=t, daemon=True) for t in (obs.follow, obs.poll_profiles, obs.poll_warehouse)]
    for t in threads:
        t.start()
    obs.ready.wait(30)  # the follower holds its partitions before the first sale
    time.sleep(1)
    count = int(rate * seconds)
    checkouts = TopicNames(pipe.settings.kafka.topic_prefix).checkouts
    offsets = end_offsets(pipe.settings, checkouts)
    sim = simulate(pipe.settings, rate, count, seed=int(rate) + 100, truth=tmp / f"truth-{rate:.0f}.json")
    metrics0, pids = pipe.scrape(), {**pipe.pids(), "simulate": sim.pid}
    cpu0 = {n: tree_cpu(p) for n, p in pids.items()}
    cpu0["benchmark (observer)"] = _self_cpu()
    started = time.monotonic()
    cpu1, elapsed = dict(cpu0), 0.0
    acked = first_ack(pipe.settings, checkouts, offsets, sim)
    spy = None if profile_agent is None else sample_agent(pipe, seconds, tmp)
    # The cores' use while selling: read before the simulator is reaped (its /proc entry goes with it).
    while sim.poll() is None:
        cpu1 = {n: tree_cpu(p) for n, p in pids.items()}
        cpu1["benchmark (observer)"], elapsed = _self_cpu(), time.monotonic() - started
        time.sleep(0.2)
    if sim.wait() != 0:
        raise SystemExit(f"simulate exited with {sim.returncode}")
    sold_in = time.monotonic() - acked
    # Let the tail arrive: up to a minute after the last sale.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (obs.seen < count or obs.pending_profile or obs.pending_warehouse):
        pipe.check()
        time.sleep(0.2)
    metrics1 = pipe.scrape()
    if spy is not None and profile_agent is not None:
        spy.wait()
        raw = (tmp / "agent-stacks.txt").read_text(encoding="utf-8")
        head = f"profile agent at {rate:,.0f} receipts/s offered, {SPY_RATE} samples/s for {int(seconds)} s:\n\n"
        profile_agent.parent.mkdir(parents=True, exist_ok=True)
        summary = summarise(raw, int(seconds), SPY_RATE, buckets=AGENT_BUCKETS, who="the agent's threads")
        profile_agent.write_text(head + summary)
    stages = {
        label: e2e_report.stage_breakdown(metrics0[proc], metrics1[proc], stage)
        for label, proc, stage in (
            ("router", "router", "router"),
            ("profiles", "profiles", "profiles"),
            ("warehouse sink", "sink", "warehouse"),
        )
        if proc in metrics0 and proc in metrics1
    }
    obs.give_up = time.time()
    obs.stop.set()
    for t in threads:
        t.join(30)
    conn.close()
    return {
        "offered_receipts_per_s": rate,
        "achieved_offered_per_s": count / sold_in,
        "receipts": count,
        "customer_topic_s": e2e_report.summary(obs.customer),
        "profile_s": e2e_report.summary(obs.profile),
        "warehouse_s": e2e_report.summary(obs.warehouse),
        "not_seen": {
            "customer_topic": count - obs.seen,
            "profile": len(obs.pending_profile),
            "warehouse": len(obs.pending_warehouse),
        },
        "cards": sorted(obs.cards)[:500],
        "stages": stages,
        "cpu_cores": {n: (cpu1[n] - cpu0[n]) / elapsed for n in cpu0} if elapsed else {},
    }


SPY_RATE = 100  # samples per second: what py-spy takes from the two cores is in the figures it disturbs


def sample_agent(pipe: Pipeline, seconds: float, tmp: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the running profile agent (every thread, not paused) while the registers sell."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [spy, "record", "--pid", str(pipe.procs["profiles"].pid), "--duration", str(int(seconds))]
    cmd += ["--rate", str(SPY_RATE), "--nonblocking", "--format", "raw", "-o", str(tmp / "agent-stacks.txt")]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def router_alone(settings: Settings, receipts: int) -> float:
    s = settings.model_copy(
        update={"kafka": {"topic_prefix": f"bench-router-{uuid.uuid4().hex[:6]}."}, "router": {"id": "bench-router"}}
    )
    create_topics(s)
    client = RegisterClient(s)
    for c in Simulator(42, stores=60, customers=3000).stream(receipts, datetime.now(UTC) - timedelta(hours=2), 10.0):
        client.send(c)
    client.flush(120)
    return receipts / processor_throughput.router(s, receipts)


def latency_only(
    pipe: Pipeline,
    conn: psycopg.Connection[Any],
    store: RedisProfileStore,
    loads: list[float],
    seconds: float,
    sample: int,
    tmp: Path,
    json_out: Path | None,
    profile_agent: Path | None = None,
) -> int:
    """Phase 3 alone: a warm-up sale (every stage joined and restored), then each load."""
    settings = pipe.settings
    print("warm-up: 500 receipts through the pipeline ...", flush=True)
    pipe.start(settings.local.data_dir / "logs")
    live(pipe, conn, store, 500, tmp, 0)
    conn.close()
    lat = []
    for i, rate in enumerate(loads):
        print(f"latency at {rate:,.0f} receipts/s for {seconds:.0f} s ...", flush=True)
        run = latency(pipe, store, rate, seconds, sample, tmp, profile_agent if i == len(loads) - 1 else None)
        run.pop("cards")
        lat.append(run)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "latency-only",
        "settings": EXTRA_SETTINGS,
        "latency": lat,
    }
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(e2e_report.latency_table(lat))
    for run in lat:
        print(f"\nStages at {run['offered_receipts_per_s']:,.0f} receipts/s offered:")
        print(e2e_report.stage_table(run))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a ~3 minute run: fewer receipts, shorter phases")
    parser.add_argument("--receipts", type=int, help="saturation phase (default 60,000; quick 10,000)")
    parser.add_argument("--loads", type=float, nargs="+", default=[500.0, 2000.0], help="offered receipts/s")
    parser.add_argument("--latency-seconds", type=float, help="seconds of selling per load (default 60; quick 15)")
    parser.add_argument("--sample", type=int, default=5, help="poll profile and warehouse for every N-th receipt")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--latency-only", action="store_true", help="only the latency phase (after a short warm-up), no saturation"
    )
    parser.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a setting (without RECEIPTFLOW_) for every pipeline process, e.g. processor_batch_wait_ms=500",
    )
    parser.add_argument(
        "--profile-agent",
        type=Path,
        help="with --latency-only: sample the profile agent with py-spy during the last load, summary to this file",
    )
    parser.add_argument("--json-out", type=Path, help="write the results here as JSON")
    parser.add_argument("--markdown-out", type=Path, help="update the 'End to end' section of this Markdown file")
    parser.add_argument("--peer-receipts", type=int, help="receipts for the peers (default 10,000; quick 3,000)")
    parser.add_argument("--skip-peers", action="store_true", help="leave out the router's peers")
    parser.add_argument(
        "--aggregate-receipts", type=int, help="receipts for the aggregation phase (default 20,000; quick 6,000)"
    )
    parser.add_argument(
        "--window-sizes",
        type=int,
        nargs="*",
        help="baskets of the chain-days release() runs on alone (default 50,000 and 200,000; quick 20,000)",
    )
    parser.add_argument("--skip-aggregate", action="store_true", help="leave out the aggregation phase")
    args = parser.parse_args()
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected NAME=VALUE")
        EXTRA_SETTINGS[name] = value
    if args.profile_agent and not args.latency_only:
        parser.error("--profile-agent needs --latency-only: the sampling would disturb the figures of a full run")
    if args.latency_only and args.markdown_out:
        parser.error("--markdown-out needs the saturation phases; leave out --latency-only")
    receipts = args.receipts or (10_000 if args.quick else 60_000)
    seconds = args.latency_seconds or (15.0 if args.quick else 60.0)

    with tempfile.TemporaryDirectory(prefix="receiptflow-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        pg_port = free_port()
        settings = Settings(
            local={"data_dir": tmp / "data", "kafka_controller_port": free_port()},
            kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "topic_partitions": args.partitions},
            redis={"url": f"redis://127.0.0.1:{free_port()}/0"},
            warehouse={"url": f"postgresql://postgres@127.0.0.1:{pg_port}/receiptflow"},
            metrics={"port": 0},
        )
        stack = Stack(settings)
        pipe = Pipeline(settings)
        started = time.monotonic()
        try:
            print("starting Kafka, Redis and PostgreSQL ...", flush=True)
            stack.up(with_postgres=True)
            settings = as_principal(settings, KafkaPrincipal.ADMIN)  # its password exists now
            pipe.settings = settings
            create_topics(settings)
            (settings.local.data_dir / "logs").mkdir(parents=True, exist_ok=True)
            store = RedisProfileStore.from_settings(settings)
            conn = psycopg.connect(str(settings.warehouse.url), autocommit=True)
            if args.latency_only:
                return latency_only(
                    pipe, conn, store, args.loads, seconds, args.sample, tmp, args.json_out, args.profile_agent
                )
            print(f"backlog: {receipts:,} receipts sold, then drained by the pipeline ...", flush=True)
            drained = backlog(pipe, conn, store, receipts, tmp)
            print(f"live: {receipts:,} receipts sold unpaced while the pipeline runs ...", flush=True)
            sat_live = live(pipe, conn, store, receipts, tmp, drained["lines"])
            conn.close()
            lat = []
            for rate in args.loads:
                print(f"latency at {rate:,.0f} receipts/s for {seconds:.0f} s ...", flush=True)
                lat.append(latency(pipe, store, rate, seconds, args.sample, tmp))
            peak = {n: peak_rss(p) for n, p in pipe.pids().items()}
            peak["simulate"] = drained.pop("simulate_peak_rss_bytes")
            cards = sorted({c for run in lat for c in run.pop("cards")})
            sizes = [store.memory_bytes(c) for c in cards]
            pipe.stop()
            print("router alone (same-run baseline) ...", flush=True)
            router_rate = router_alone(settings, 5_000 if args.quick else 20_000)
            agg_result = None
            if not args.skip_aggregate:
                sizes = args.window_sizes if args.window_sizes is not None else [20_000] if args.quick else None
                agg_result = aggregate_throughput.run(
                    settings,
                    args.aggregate_receipts or (6_000 if args.quick else 20_000),
                    "called by `end_to_end.py` as `make bench` runs it, after the pipeline stopped, on its broker",
                    window_sizes=tuple(sizes if sizes is not None else (50_000, 200_000)),
                )
            peer_result = None
            if not args.skip_peers:
                how = "called by `end_to_end.py` as `make bench` runs it, after the pipeline stopped, on its broker"
                peer_result = peers.run(settings, args.peer_receipts or (3_000 if args.quick else 10_000), how)
        finally:
            pipe.stop()
            stack.down()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": e2e_report.machine(),
        "python": platform.python_version(),
        "partitions": args.partitions,
        "sample": args.sample,
        "saturation": drained,
        "live": sat_live,
        "latency": lat,
        "peak_rss_bytes": peak,
        "redis_bytes_per_card": e2e_report.summary([float(s) for s in sizes]),
        "router_alone_receipts_per_s": router_rate,
        "end_to_end_vs_router": drained["receipts_per_s"] / router_rate,
        "live_vs_router": sat_live["receipts_per_s"] / router_rate,
        "aggregate": agg_result,
        "peers": peer_result,
        "wall_seconds": time.monotonic() - started,
    }
    text = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(e2e_report.markdown(result))
    if agg_result is not None:
        print(aggregate_report.markdown(agg_result))
    if peer_result is not None:
        print(e2e_report.peers_section(peer_result))
    print(e2e_report.targets_section(result))
    if args.markdown_out:
        e2e_report.update_section(args.markdown_out, e2e_report.markdown(result))
        if agg_result is not None:
            section = aggregate_report.markdown(agg_result)
            e2e_report.update_section(args.markdown_out, section, aggregate_report.SECTION)
        if peer_result is not None:
            section = e2e_report.peers_section(peer_result)
            e2e_report.update_section(args.markdown_out, section, e2e_report.PEERS_SECTION)
        e2e_report.update_section(args.markdown_out, e2e_report.targets_section(result), e2e_report.TARGETS_SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
