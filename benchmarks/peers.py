"""The router against its peers on one job: same input, each its own outputs, timed and compared.

The job is the router's (``receiptflow process --role router``): decode, validate (dead letters with
their reasons), truncate to the chain's policy, apply consent, drop duplicates, write
``purchases.customer``, ``purchases.marketing``, ``purchases.baskets`` and ``checkouts.dlq``. The
input is filled once: every card's sign-up consent, then seeded simulator checkouts with consent
changes, repeated deliveries, bad records and late deliveries mixed in. Then, one after the other:

* ``router (exactly-once)``: the project's router, one worker;
* ``quixstreams (exactly-once)``: ``benchmarks/peer_quix.py`` (state in quixstreams' RocksDB store);
* ``naive faust agent``: ``processor_throughput.py``'s per-event agent (state in process memory,
  ``await send`` per output, no transactions);
* ``raw consume→produce``: the input's checkouts copied unchanged (``processor_throughput.py``'s
  passthrough), the ceiling the client and broker allow on this machine, last;
* ``Kafka Streams (exactly-once)``: ``benchmarks/peer_kstreams.py`` starts the Java topology of
  ``benchmarks/kstreams/`` (``processing.guarantee=exactly_once_v2``, state in RocksDB), built by
  Maven on first use.

Every path reads the same input topics and writes its own output topics, created with
``LogAppendTime`` so a path is timed from its first output record to its last by the broker's clock
(start-up and group joins are not counted). The outputs are read back read-committed, decoded
(fastavro) and compared with the router's as multisets per topic (``peer_compare.py`` says which
fields are left out and why). Usage:
``python benchmarks/peers.py [--receipts N] [--json-out FILE] [--markdown-out docs/performance.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_report
import peer_compare
import peer_kstreams
import processor_throughput
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from receiptflow.cli.demo import end_offsets
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.errors import DecodeError
from receiptflow.kafka_auth import KafkaPrincipal, as_principal
from receiptflow.kafka_read import ReadToEnd
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator, Traffic
from receiptflow.stack import Stack
from receiptflow.stack.process import free_port
from receiptflow.topics import CATALOGUE, TopicNames, create_topics

HERE = Path(__file__).resolve().parent
OUTPUT_SUBJECTS = {
    "purchases.customer": "purchase",
    "purchases.marketing": "purchase",
    "purchases.baskets": "analytics_basket",
    "checkouts.dlq": "dead_letter",
}
# The folder `make bench` installs quixstreams into (its pins conflict with the project's).
QUIX_PATH = Path(sys.prefix) / "quixstreams"


def output_specs(only_outputs: bool = False) -> list[Any]:
    """The topic catalogue with the four outputs stamped with the broker's append time (for the timing)."""
    specs = []
    for s in CATALOGUE:
        if s.name in OUTPUT_SUBJECTS:
            specs.append(replace(s, config={**s.config, "message.timestamp.type": "LogAppendTime"}))
        elif not only_outputs:
            specs.append(s)
    return specs


def fill(settings: Settings, receipts: int, seed: int = 42) -> dict[str, int]:
    """Write the input once; returns what a correct router makes of it (receipts routed, dead letters)."""
    client = RegisterClient(settings)
    sim = Simulator(seed, stores=50, customers=3000)
    traffic = Traffic(
        sim, client.encode_checkout, dup_rate=0.01, bad_rate=0.005, consent_change_rate=0.02, out_of_order_rate=0.01
    )
    t0 = datetime.now(UTC) - timedelta(hours=2)
    for e in traffic.initial_consents(t0 - timedelta(days=1)):
        assert e.consent is not None
        client.send_consent(e.consent)
    client.flush(120)  # the sign-ups are written before the first sale
    counts = {"receipts": 0, "dead_letters": 0, "lines": 0, "consent_changes": 0, "duplicates": 0}
    names = TopicNames(settings.kafka.topic_prefix)
    for e in traffic.emissions(receipts, t0, rate=10.0):
        if e.kind in ("checkout", "duplicate") and e.checkout is not None:
            client.send(e.checkout)
            if e.kind == "checkout":
                counts["receipts"] += 1
                counts["lines"] += len(e.checkout.lines)
            else:
                counts["duplicates"] += 1
        elif e.kind == "consent" and e.consent is not None:
            client.send_consent(e.consent)
            counts["consent_changes"] += 1
        elif e.raw is not None:
            client.send_raw(names.checkouts, e.label.encode(), e.raw)
            counts["dead_letters"] += 1
    client.flush(120)
    return counts


class OutputReader:
    """Reads a path's four output topics read-committed from the start, keeping every record."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self.names = {prefix + logical: logical for logical in OUTPUT_SUBJECTS}
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"peers-read-{uuid.uuid4().hex[:6]}",
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "enable.auto.commit": False,
                }
            )
        )
        meta = self.consumer.list_topics(timeout=30)
        parts = [TopicPartition(t, p, 0) for t in self.names for p in meta.topics[t].partitions]
        self.consumer.assign(parts)
        self.pending = {(tp.topic, tp.partition) for tp in parts}  # not yet read to their end
        self.records: dict[str, list[tuple[bytes | None, bytes, int]]] = {t: [] for t in OUTPUT_SUBJECTS}

    def count(self, *logical: str) -> int:
        return sum(len(self.records[t]) for t in logical)

    def collect(self, timeout: float = 60) -> None:
        """Read what is committed now: until every partition reported its end and nothing more came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self.consumer.consume(5000, timeout=0.5)
            for m in batch:
                err, tp = m.error(), (m.topic() or "", m.partition() or 0)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self.pending.discard(tp)
                    continue
                self.pending.add(tp)
                value = m.value()
                if value is not None:
                    self.records[self.names[tp[0]]].append((m.key(), value, m.timestamp()[1]))
            if not batch and not self.pending:
                return

    def close(self) -> None:
        self.consumer.close()

    def decoded(self, codec: Codec) -> dict[str, list[peer_compare.Record]]:
        return {
            t: [(k, codec.decode(v, expect=OUTPUT_SUBJECTS[t]).value) for k, v, _ in recs]
            for t, recs in self.records.items()
        }

    def span(self) -> float:
        """Seconds from the first output record to the last (broker append times)."""
        stamps = [ts for recs in self.records.values() for _, _, ts in recs]
        return (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0


def wait_done(
    reader: OutputReader, settings: Settings, prefix: str, expected: int, proc: subprocess.Popen[bytes]
) -> None:
    """Until ``expected`` customer records and dead letters are committed (or nothing comes for 60 s)."""
    names = TopicNames(prefix)
    stalled_since, last = time.monotonic(), -1
    while True:
        # Cheap first: the end offsets (transaction markers included) must have got there.
        ends = end_offsets(settings, names.purchases_customer) + end_offsets(settings, names.checkouts_dlq)
        if ends >= expected:
            reader.collect()
            if reader.count("purchases.customer", "checkouts.dlq") >= expected:
                return
        now = time.monotonic()
        if ends != last:
            stalled_since, last = now, ends
        if proc.poll() is not None or now - stalled_since > 60:
            reader.collect()
            return
        time.sleep(0.25)


def first_error(log: Path) -> str:
    """The line of a path's log that says why it stopped: its first error with the cause below it, or the
    log's last line (a JVM's shutdown messages after an error would say nothing)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if " ERROR " in f" {line} " or line.startswith(("Traceback", "Exception")):
            cause = next((c for c in lines[i + 1 :] if "Exception" in c or "Error" in c), "")
            return f"first error in its log: {line[:200]!r} {cause[:200]!r}".rstrip()
    return f"its log ends: {lines[-1][:300]!r}" if lines else "its log is empty"


def start_path(
    name: str, settings: Settings, prefix: str, env: dict[str, str], log: Path, quix_path: Path
) -> subprocess.Popen[bytes]:
    """Start the path ``name`` reading ``settings``' input topics and writing ``prefix``'s outputs."""
    group = f"peers-{name}-{uuid.uuid4().hex[:6]}"
    out = open(log, "ab")  # noqa: SIM115 - the child keeps it
    if name == "router":
        cmd = [sys.executable, "-m", "receiptflow", "process", "--role", "router", "--loglevel", "warning"]
        return subprocess.Popen(cmd, env={**env, "RECEIPTFLOW_PROCESSOR_ID": group}, stdout=out, stderr=out)
    if name == "quixstreams":
        path = os.pathsep.join(p for p in (str(quix_path), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, str(HERE / "peer_quix.py"), prefix, group]
        return subprocess.Popen(cmd, env={**env, "PYTHONPATH": path}, stdout=out, stderr=out)
    if name == "faust":
        cmd = [sys.executable, str(HERE / "processor_throughput.py"), "--faust-worker"]
        child = {**env, "RECEIPTFLOW_PROCESSOR_ID": group, "BENCH_OUTPUT_PREFIX": prefix}
        return subprocess.Popen(cmd, env=child, stdout=out, stderr=out)
    out.close()
    inputs, outputs = TopicNames(settings.kafka.topic_prefix), TopicNames(prefix)
    topics = peer_kstreams.PeerTopics(
        inputs.checkouts,
        inputs.consents,
        outputs.purchases_customer,
        outputs.purchases_marketing,
        outputs.analytics_baskets,
        outputs.checkouts_dlq,
    )
    return peer_kstreams.start(settings, topics, group, env["RECEIPTFLOW_ANALYTICS_KEY"].encode(), log=log)


def input_of_cards(settings: Settings, cards: list[str], codec: Codec) -> list[dict[str, Any]]:
    """Every checkout and consent change of ``cards`` in the input, as written: topic, partition, offset,
    broker append time, event time, and the receipt id or the consent state."""
    names = TopicNames(settings.kafka.topic_prefix)
    kinds = {names.checkouts: "checkout", names.consents: "consent_change"}
    consumer = Consumer(
        settings.kafka_config(**{"group.id": f"peers-input-{uuid.uuid4().hex[:6]}", "enable.partition.eof": True})
    )
    out: list[dict[str, Any]] = []
    try:
        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in kinds for p in range(settings.kafka.topic_partitions)]
        for m in ReadToEnd(consumer, parts, what="reading the peers' input", stall=60).records(5000):
            try:
                value = codec.decode(m.value(), expect=kinds[m.topic() or ""]).value
            except DecodeError:
                continue  # a bad record of the input: it names no card
            if value.get("card_id") not in cards:
                continue
            entry = {
                "topic": kinds[m.topic() or ""],
                "partition": m.partition(),
                "offset": m.offset(),
                "appended_at_ms": m.timestamp()[1],
                "card_id": value["card_id"],
                "event_time": str(value["event_time"]),
            }
            if "receipt_id" in value:
                entry["receipt_id"] = value["receipt_id"]
            else:
                entry["consent"] = {k: value[k] for k in ("product_data_marketing", "electronic_marketing")}
            out.append(entry)
    finally:
        consumer.close()
    return sorted(out, key=lambda e: (e["appended_at_ms"], e["topic"] != "consent_change"))


RAW = "raw consume→produce (bytes copied, no transactions)"
PATHS = {
    "router": "router (exactly-once)",
    "quixstreams": "quixstreams (exactly-once)",
    "faust": "naive faust agent",
    "kstreams": "Kafka Streams (exactly-once)",
}


def raw_row(base: Settings, tag: str, receipts: int) -> dict[str, Any]:
    """The ceiling on the same input: every ``checkouts`` record copied unchanged to a topic of its own by
    a confluent-kafka consumer and producer (no decoding, no state, no transactions), timed from the first
    record consumed to the last acknowledged and counted per receipt like the paths."""
    raw = base.model_copy(update={"kafka": {"topic_prefix": f"peers-{tag}-raw."}})
    create_topics(raw, output_specs(only_outputs=True))
    source = TopicNames(base.kafka.topic_prefix).checkouts
    print(f"peers: {RAW} ...", flush=True)
    count = processor_throughput.records_in(base, source)
    seconds = processor_throughput.raw_passthrough(
        base, source, TopicNames(raw.kafka.topic_prefix).purchases_customer, count
    )
    return {"path": RAW, "workers": 1, "seconds": seconds, "receipts_per_s": receipts / seconds, "compared": False}


def run(
    settings: Settings, receipts: int, how: str, skip: tuple[str, ...] = (), quix_path: Path = QUIX_PATH
) -> dict[str, Any]:
    """Fill the input on ``settings``' broker, run every path, compare; the results as a dict (``how``: the
    words saying how it was run, for the report)."""
    tag = uuid.uuid4().hex[:6]
    base = settings.model_copy(update={"kafka": {"topic_prefix": f"peers-{tag}."}})
    create_topics(base, output_specs())
    logs = base.local.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **processor_throughput._env(base),
        # One analytics key for every path: the basket pseudonyms are compared.
        "RECEIPTFLOW_ANALYTICS_KEY": secrets.token_hex(16),
    }
    print(f"peers: writing {receipts:,} receipts with consents, duplicates and bad records ...", flush=True)
    counts = fill(base, receipts)
    expected = counts["receipts"] + counts["dead_letters"]
    names = list(PATHS)
    codec = Codec()
    rows: list[dict[str, Any]] = []
    reference: dict[str, list[peer_compare.Record]] | None = None
    for name in [n for n in names if n not in skip]:
        prefix = base.kafka.topic_prefix if name == "router" else f"peers-{tag}-{name}."
        if name != "router":
            create_topics(base.model_copy(update={"kafka": {"topic_prefix": prefix}}), output_specs(only_outputs=True))
        row: dict[str, Any] = {"path": PATHS[name], "workers": 1}
        rows.append(row)
        if name == "quixstreams" and not (quix_path / "quixstreams").is_dir():
            row["error"] = f"quixstreams is not installed in {quix_path} (make bench installs it)"
            continue
        print(f"peers: {PATHS[name]} ...", flush=True)
        reader = OutputReader(base, prefix)
        try:
            proc = start_path(name, base, prefix, env, logs / f"{name}.log", quix_path)
        except Exception as exc:  # noqa: BLE001 - an optional peer that cannot start is reported, not fatal
            row["error"] = f"did not start: {exc}"
            reader.close()
            continue
        try:
            wait_done(reader, base, prefix, expected, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.collect()
        reader.close()
        got = reader.count("purchases.customer", "checkouts.dlq")
        seconds = reader.span()
        row.update(
            seconds=seconds,
            receipts_per_s=counts["receipts"] / seconds if seconds else 0.0,
            outputs={t: len(r) for t, r in reader.records.items()},
        )
        if got < expected:
            why = first_error(logs / f"{name}.log")
            row["error"] = f"{got:,} of {expected:,} customer records and dead letters; {why}"
            continue
        decoded = reader.decoded(codec)
        if reference is None:
            reference = decoded
            row["difference"] = None
        else:
            row["difference"] = peer_compare.first_difference(reference, decoded, PATHS[name])
            cards = peer_compare.differing_cards(reference, decoded) if row["difference"] is not None else []
            if cards:
                # The input is gone with the broker after the run: keep what decides these cards' records.
                row["input_of_differing_cards"] = input_of_cards(base, cards, codec)
    if "raw" not in skip:
        rows.append(raw_row(base, tag, counts["receipts"]))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "how": how,
        "cores": os.cpu_count(),
        "receipts": counts["receipts"],
        "input": counts,
        "partitions": base.kafka.topic_partitions,
        "ignored_fields": {t: sorted(f) for t, f in peer_compare.IGNORED.items()},
        "paths": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=15_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--bootstrap", help="use this broker instead of starting an embedded one")
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted([*PATHS, "raw"]), help="leave these paths out")
    parser.add_argument("--json-out", type=Path, help="write the results here as JSON")
    parser.add_argument("--markdown-out", type=Path, help="update the peers section of this Markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="receiptflow-peers-") as tmp:
        # The peers (quixstreams, the Kafka Streams topology) connect without logins: their own broker runs
        # without SASL and ACLs, which a throughput comparison does not need.
        base = {"data_dir": Path(tmp), "metrics_port": 0, "topic_partitions": args.partitions, "kafka_auth": False}
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
            result = run(settings, args.receipts, how, tuple(args.skip))
        finally:
            if stack is not None:
                stack.down()
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(e2e_report.peers_section(result))
    if args.markdown_out:
        e2e_report.update_section(args.markdown_out, e2e_report.peers_section(result), e2e_report.PEERS_SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
