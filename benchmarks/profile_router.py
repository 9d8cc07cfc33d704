"""Where the exactly-once router's time goes: a sampling profile of one router worker on a filled topic.

An embedded broker is started, ``checkouts`` is filled with simulated receipts (the same simulator
and seed as ``processor_throughput.py``), then ``receiptflow process --role router`` is started and,
once its first output record is there, sampled by py-spy (``--nonblocking``: the worker is not
paused to take a sample) for ``--seconds``. The summary lists the functions with the most samples
on their own (self, with the sampled line: a call into C shows as the line that makes it) and
under them (cumulative), by project-relative module, and the shares of the big buckets: Avro
decode/encode, the pure core (models, validation, policy, route), the compiled fast path's calls,
the Kafka client's calls and the rest. Samples are of the main thread while it runs; the rest of the
time it waits with the GIL released (broker round trips: fetches, transaction commits).

Usage: ``python benchmarks/profile_router.py [--receipts N] [--seconds S] [--out FILE]``; the
environment (e.g. ``RECEIPTFLOW_FAST_PATH``) is passed to the router, so both paths can be profiled.
"""

from __future__ import annotations

import argparse
import linecache
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from processor_throughput import records_in

from receiptflow.config import Settings
from receiptflow.kafka_auth import KafkaPrincipal, as_principal
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.stack import Stack
from receiptflow.stack.process import free_port
from receiptflow.topics import TopicNames, create_topics

# py-spy's raw (collapsed) frame: "function (path/to/file.py:line)".
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Buckets:
    """How samples are put in buckets: first by the source of the leaf frame's line (a call into C
    shows as the line of the Python frame that makes it), then by the files of the frames, checked
    from the leaf up, first match wins; ``other`` for the rest."""

    by_line: tuple[tuple[str, re.Pattern[str]], ...]
    by_file: tuple[tuple[str, tuple[str, ...]], ...]
    other: str


ROUTER_BUCKETS = Buckets(
    by_line=(
        ("native extension (receiptflow_fast)", re.compile(r"fast\.(decode|route)\(")),
        ("Kafka client (confluent-kafka calls)", re.compile(r"_(producer|consumer)\.\w+\(")),
    ),
    by_file=(
        ("Avro encode/decode (fastavro, splicing)", ("fastavro/", "avro_splice.py", "codec.py", "encoding.py")),
        (
            "pure core (models, validation, policy, route)",
            (
                *("models.py", "receipt_parts.py", "field_values.py", "validation.py", "policy.py"),
                *("router/route.py", "router/consent.py"),
            ),
        ),
        ("Kafka client (confluent-kafka calls)", ("confluent_kafka/",)),
    ),
    other="other Python (router loop, merge, state, metrics)",
)


def _short(path: str) -> str:
    """A frame's file without machine-specific folders: from the package (or library) name on."""
    if not Path(path).is_absolute():
        return path  # py-spy gave it relative to its import root already (e.g. "redis/connection.py")
    for marker in ("site-packages/", "receiptflow/", "lib/python"):
        at = path.rfind(marker)
        if at >= 0:
            return path[at + len(marker) :] if marker != "receiptflow/" else "receiptflow/" + path[at + len(marker) :]
    # The top-level folders the build maps into the package (an editable install runs them in place).
    for folder in ("processors/", "producers/", "sinks/"):
        at = path.rfind("/" + folder)
        if at >= 0:
            return "receiptflow" + path[at:]
    return Path(path).name


def _frames(stack: str) -> list[tuple[str, str, str]]:
    """(function, short file, source text of the sampled line) from leaf-last collapsed frames."""
    out = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw.strip())
        if m is None:
            out.append((raw.strip(), "", ""))
        else:
            text = linecache.getline(m["file"], int(m["line"])).strip() if m["line"] else ""
            out.append((m["func"], _short(m["file"]) + (f":{m['line']}" if m["line"] else ""), text))
    return out


# The same for the profile agent (``end_to_end.py --profile-agent``): a faust worker on asyncio.
AGENT_BUCKETS = Buckets(
    by_line=(),
    by_file=(
        ("Redis client (commands packed, replies read)", ("redis/",)),
        ("Avro decode (fastavro)", ("fastavro/", "codec.py")),
        ("purchase objects (models)", ("models.py", "receipt_parts.py", "field_values.py")),
        (
            "profile rules and store (pure fold, keys, scripts)",
            tuple(
                f"profiles/{name}.py"
                for name in ("rules", "fold", "keys", "scripts", "store", "households", "consumer")
            ),
        ),
        ("faust and mode (consumer, streams, agent, acks)", ("faust/", "mode/", "aiokafka/")),
        ("asyncio event loop", ("asyncio/",)),
    ),
    other="other Python",
)


def _bucket(frames: list[tuple[str, str, str]], buckets: Buckets = ROUTER_BUCKETS) -> str:
    _, _, text = frames[-1] if frames else ("", "", "")
    for name, pattern in buckets.by_line:
        if pattern.search(text):
            return name
    for _, file, _ in reversed(frames):
        for name, marks in buckets.by_file:
            if any(mark in file for mark in marks):
                return name
    return buckets.other


def summarise(
    collapsed: str,
    seconds: float,
    rate: int,
    top: int = 25,
    buckets: Buckets = ROUTER_BUCKETS,
    who: str = "the main thread",
) -> str:
    """A text summary of py-spy's collapsed stacks: totals, buckets, top self and cumulative functions."""
    self_: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    shares: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        total += n
        func, file, _ = frames[-1]
        self_[f"{func} ({file})"] += n  # with the line: which call of a function the time is in
        for name in {f"{func} ({file.rpartition(':')[0] or file})" for func, file, _ in frames}:
            cumulative[name] += n
        shares[_bucket(frames, buckets)] += n
    expected = seconds * rate
    lines = [
        f"samples of {who} while running: {total} of {expected:.0f} taken ({total / expected:.0%} running,"
        " the rest waiting with the GIL released)",
        "",
        "share of running samples by bucket:",
    ]
    lines += [f"  {share / total:6.1%}  {name}" for name, share in shares.most_common()]
    for title, counter in (("self", self_), ("cumulative", cumulative)):
        lines += ["", f"top {top} functions by {title} samples (share of running samples):"]
        lines += [f"  {n / total:6.1%}  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--out", type=Path, help="write the summary here as well")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="receiptflow-profile-") as tmp:
        data = Path(tmp)
        settings = Settings(
            kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "topic_partitions": 6, "topic_prefix": "profile."},
            local={"kafka_controller_port": free_port(), "data_dir": data},
            metrics={"port": 0},
            router={"id": "profile-router"},
        )
        stack = Stack(settings)
        stack.kafka.up()
        settings = as_principal(settings, KafkaPrincipal.ADMIN)  # its password exists now
        try:
            create_topics(settings)
            client = RegisterClient(settings)
            start = datetime.now(UTC) - timedelta(hours=2)
            for c in Simulator(42, stores=50, customers=3000).stream(args.receipts, start, rate=10.0):
                client.send(c)
            client.flush(120)
            env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTFLOW_") or k.endswith("FAST_PATH")}
            env.update(
                RECEIPTFLOW_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
                RECEIPTFLOW_DATA_DIR=str(data),
                RECEIPTFLOW_TOPIC_PREFIX=settings.kafka.topic_prefix,
                RECEIPTFLOW_TOPIC_PARTITIONS="6",
                RECEIPTFLOW_PROCESSOR_ID=settings.router.id,
                RECEIPTFLOW_METRICS_PORT="0",
            )
            cmd = [sys.executable, "-m", "receiptflow", "process", "--role", "router"]
            router = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                out_topic = TopicNames(settings.kafka.topic_prefix).purchases_customer
                while records_in(settings, out_topic) == 0:
                    if router.poll() is not None:
                        raise SystemExit("the router ended before routing anything")
                    time.sleep(0.05)
                raw = data / "stacks.txt"
                spy_cmd = [spy, "record", "--pid", str(router.pid), "--duration", str(int(args.seconds))]
                spy_cmd += ["--rate", str(args.rate), "--nonblocking", "--format", "raw", "-o", str(raw)]
                subprocess.run(spy_cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                routed = records_in(settings, out_topic)
            finally:
                router.terminate()
                router.wait(30)
            summary = summarise(raw.read_text(encoding="utf-8"), args.seconds, args.rate)
        finally:
            stack.down()
    mode = os.environ.get("RECEIPTFLOW_FAST_PATH", "default")
    head = f"router profile: {args.receipts} receipts in checkouts, {args.seconds:.0f} s sampled, fast path {mode}\n"
    if routed >= args.receipts:
        head += (
            f"(all {args.receipts} receipts were routed within the {args.seconds:.0f} s: the running share below"
            " includes the idle end; the shares of the running samples are the profile)\n"
        )
    head += "\n"
    print(head + summary, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(head + summary, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
