"""``receiptflow demo``: the main job on the embedded default, end to end, with a summary that adds up.

Brings the stack up (Kafka, Redis; the DuckDB file lives under the data dir), provisions the topics,
starts the processor (exactly-once router + faust profile agent + analytics aggregator) as a worker
process and the warehouse sink in this process, lets a seeded fleet of registers sell for ``duration`` seconds,
waits until every acknowledged checkout has reached Redis and the warehouse, and prints the counts
of each stage side by side.

Every figure is a difference between before and after this run, so a demo run on a data dir that
already holds earlier runs still has to add up. The stack is left running so the data can be
looked at afterwards (the summary says how); ``receiptflow stack down`` stops it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from rich.console import Console
from rich.table import Table

from ..config import Settings
from ..errors import BrokerError, StackError
from ..humanize import euros
from ..metrics import Metrics
from ..processors.profiles.store import RedisProfileStore
from ..producers.run import simulate
from ..topics import TopicNames, create_topics
from .demo_analytics import Check, analytics_checks, demo_env, sale_start, wait_for_windows

console = Console(highlight=False)


def end_offsets(settings: Settings, topic: str) -> int:
    """Sum of the log-end offsets of a topic's partitions (records written, for non-transactional writers)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": "receiptflow-demo-offsets", "enable.auto.commit": False}))
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                md = consumer.list_topics(topic, timeout=10)
                total = 0
                for p in md.topics[topic].partitions:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    total += high
                return total
            except KafkaException as exc:
                # A just-created partition can answer "not leader" for a moment after its metadata
                # already names a leader: retry retriable errors until the deadline.
                # (librdkafka does not flag every such answer as retriable, so retry until the deadline.)
                if time.monotonic() > deadline:
                    raise BrokerError(f"cannot read the end offsets of {topic}: {exc}") from exc
                time.sleep(0.2)
    finally:
        consumer.close()


def committed_records(settings: Settings, topic: str) -> int:
    """Records a read-committed reader sees in ``topic``.

    Log-end offsets overcount a transactionally written topic (commit markers take offsets, aborted
    records stay in the log), so the router's outputs are counted by reading them.
    """
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": "receiptflow-demo-count",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        partitions = list(md.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        count = 0
        deadline = time.monotonic() + 120
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot read {topic} to its end within 120 s")
            for msg in consumer.consume(5000, timeout=1.0):
                err = msg.error()
                if err is None:
                    count += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
        return count
    except KafkaException as exc:
        raise BrokerError(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()


@dataclass
class Snapshot:
    checkouts: int
    customer: int
    dlq: int
    profiles: int
    visits: int
    spend: int
    receipts: int
    receipts_cents: int


def _warehouse(sink: Any) -> tuple[int, int]:
    from ..sinks import warehouse_counts

    counts = warehouse_counts(sink.warehouse)
    return int(counts["receipts"]), int(counts["total_cents"])


def _snapshot(settings: Settings, store: RedisProfileStore, sink: Any) -> Snapshot:
    names = TopicNames(settings.kafka.topic_prefix)
    profiles, visits, spend = store.totals()
    receipts, cents = _warehouse(sink)
    return Snapshot(
        end_offsets(settings, names.checkouts),
        committed_records(settings, names.purchases_customer),
        committed_records(settings, names.checkouts_dlq),
        profiles,
        visits,
        spend,
        receipts,
        cents,
    )


def run_demo(
    settings: Settings,
    *,
    duration: float = 60.0,
    rate: float = 50.0,
    seed: int = 2010,
    stores: int = 30,
    customers: int = 300,
    settle_timeout: float = 180.0,
) -> int:
    from ..sinks import open_sink

    settings = _start_stack(settings)
    metrics = Metrics()
    store = RedisProfileStore.from_settings(settings)  # the profile writer
    sink = open_sink(settings)
    before = _snapshot(settings, store, sink)

    with _Pipeline(settings, sink, metrics) as pipeline:
        console.print(f"registers selling for {duration:.0f} s at {rate:.0f} checkouts/s (seed {seed})")
        truth = simulate(
            settings,
            stores=stores,
            customers=customers,
            rate=rate,
            duration=duration,
            seed=seed,
            console=console,
            start=sale_start(settings, datetime.now(UTC)),
        )
        # What the card profiles must hold: sales as visits (a refund is none), goods spend net of refunds.
        carded = sum(v[0] for v in truth.per_card.values())
        carded_spend = sum(v[1] for v in truth.per_card.values())
        settle_until = time.monotonic() + settle_timeout
        _wait_until_caught_up(pipeline, store, metrics, before, (truth.receipts, carded, carded_spend), settle_timeout)
        with console.status("waiting for the aggregator to close this run's days and the sink to store their cells..."):
            markers = wait_for_windows(settings, metrics, truth, max(settle_until, time.monotonic() + 30))

    after = _snapshot(settings, store, sink)
    analytics = analytics_checks(truth, markers, sink.warehouse)
    sink.close()
    return _summary(settings, truth, carded, carded_spend, before=before, after=after, analytics=analytics)


def _start_stack(settings: Settings) -> Settings:
    """The embedded stack up and the topics provisioned, saying what runs where; ``settings`` logged in as
    the admin principal (its password exists once the broker has started)."""
    from ..kafka_auth import KafkaPrincipal, as_principal
    from ..stack import Stack

    d = settings.describe()
    console.print(f"[bold]receiptflow demo[/bold]  kafka={d['kafka']}  redis={d['redis']}  warehouse={d['warehouse']}")
    with console.status("starting the embedded stack (first run downloads the Kafka jars)..."):
        for s in Stack(settings).up():
            console.print(f"  {s.name:<10} {s.state:<9} {s.endpoint}")
    settings = as_principal(settings, KafkaPrincipal.ADMIN)
    create_topics(settings)
    return settings


class _Pipeline:
    """The processor as a worker process and the warehouse sink in a thread of this one, while the demo runs.

    Started when made; stopped (the sink first, then the processor) when the ``with`` block ends.
    """

    def __init__(self, settings: Settings, sink: Any, metrics: Metrics) -> None:
        logs = settings.local.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / "processor.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.processor = subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "process", "--metrics-port", "0", "--loglevel", "warning"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=demo_env(os.environ.copy()),
        )
        self._stop = threading.Event()
        self._sink_error: list[BaseException] = []
        self._sink_thread = threading.Thread(
            target=self._run_sink, args=(settings, sink, metrics), name="warehouse-sink", daemon=True
        )
        self._sink_thread.start()

    def _run_sink(self, settings: Settings, sink: Any, metrics: Metrics) -> None:
        from ..sinks import run_sink

        try:
            run_sink(settings, sink, stop=self._stop, metrics=metrics)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            self._sink_error.append(exc)

    def check(self) -> None:
        """Raise when the processor has exited or the sink has failed."""
        if self.processor.poll() is not None:
            raise StackError(f"the processor exited with {self.processor.returncode}; see {self.log_path}")
        if self._sink_error:
            raise self._sink_error[0]

    def stop(self) -> None:
        self._stop.set()
        self._sink_thread.join(timeout=30)
        self.processor.terminate()
        try:
            self.processor.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.processor.kill()
            self.processor.wait()
        self._log.close()

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _wait_until_caught_up(
    pipeline: _Pipeline,
    store: RedisProfileStore,
    metrics: Metrics,
    before: Snapshot,
    expected: tuple[int, int, int],
    timeout: float,
) -> None:
    """Wait until the profiles and the warehouse hold the ``expected`` (receipts, card visits, card
    spend) of this run, or ``timeout`` seconds have passed (said, not raised: the summary shows what is missing)."""
    receipts, carded, carded_spend = expected
    deadline = time.monotonic() + timeout
    with console.status("waiting for the processor, profiles and warehouse to catch up...") as status:
        while True:
            pipeline.check()
            _, visits, spend = store.totals()
            rows = metrics.registry.get_sample_value("receiptflow_warehouse_rows_total", {"table": "receipts"}) or 0
            done_visits = visits - before.visits
            status.update(f"profiles {done_visits}/{carded} visits, warehouse {int(rows)}/{receipts} receipts")
            # Spend too: a refund adds no visit, so visits alone may be complete before it is applied.
            caught_up = visits - before.visits >= carded and spend - before.spend == carded_spend
            if caught_up and rows >= receipts:
                return
            if time.monotonic() > deadline:
                console.print("[red]timed out waiting for the pipeline to catch up[/red]")
                return
            time.sleep(0.5)


def _summary(
    settings: Settings,
    truth: Any,
    carded: int,
    carded_spend: int,
    *,
    before: Snapshot,
    after: Snapshot,
    analytics: tuple[list[Check], str],
) -> int:
    sent = after.checkouts - before.checkouts
    processed = after.customer - before.customer
    rejected = after.dlq - before.dlq
    visits = after.visits - before.visits
    spend = after.spend - before.spend
    rows = after.receipts - before.receipts
    cents = after.receipts_cents - before.receipts_cents
    checks: list[tuple[str, int, int, Callable[[int], str]]] = [
        ("checkouts acknowledged by Kafka", truth.receipts, sent, str),
        ("purchases.customer records", truth.receipts, processed, str),
        ("dead letters", 0, rejected, str),
        ("visits added to Redis profiles", carded, visits, str),
        ("spend added to Redis profiles", carded_spend, spend, euros),
        ("receipts added to the warehouse", truth.receipts, rows, str),
        ("warehouse total", truth.spend_cents, cents, euros),
        *analytics[0],
    ]
    table = Table("stage", "expected (simulator)", "observed", "ok", title="end-to-end summary of this run")
    ok = True
    for name, expected, observed, show in checks:
        good = expected == observed
        ok &= good
        table.add_row(name, show(expected), show(observed), "yes" if good else "[red]NO[/red]")
    console.print(table)
    console.print(
        f"{truth.receipts} checkouts from {len(truth.per_chain)} chains, {truth.anonymous} without a card; "
        f"{after.profiles} profiles in Redis in total"
    )
    console.print(analytics[1])
    console.print("\n[bold]Look at the data next[/bold] (from this folder, one command per line)")
    for line in next_commands(settings, card=next(iter(sorted(truth.per_card)), None)):
        # One line each, never wrapped: a person pastes them into a shell as they are.
        console.print(f"  {line}", markup=False, soft_wrap=True)
    card = next(iter(sorted(truth.per_card)), None)
    if card:
        _print_link(settings, card)
    if not ok:
        console.print("[red]the counts do not agree[/red]")
    return 0 if ok else 1


def _print_link(settings: Settings, card: str) -> None:
    """A sign-in link for the demo's card, audited as `web link` is, and the command for a new one."""
    from ..jobs.looks import audit_look, looker
    from ..web.state import Web

    # A link lets whoever opens it see the card: audited as `web link` is, before it is made.
    reason = "make demo: a sign-in link for a simulated card"
    audit_look(settings, looker("demo", reason), "web-link", card, detail="role=customer")
    # The link is printed, not a command: it works once, for a few minutes, in a browser.
    console.print(
        f"\n[bold]The card holder's page[/bold]: serve it with the first line, then open the link"
        f" (one-time, {settings.web.link_minutes} min; the last line prints a new one)"
    )
    console.print(f"  {own_command()} web", markup=False, soft_wrap=True)
    console.print(f"  {Web(settings).link('customer', card)}", markup=False, soft_wrap=True)
    again = f"web link {shlex.quote(card)} --as demo --reason 'a new link for the demo card'"
    console.print(f"  {own_command()} {again}", markup=False, soft_wrap=True)


# What a person runs after the demo; every line is run as printed by tests/integration/test_printed_commands.py.
NEXT_QUERY = (
    "SELECT chain, sales_date, product_group, baskets, amount_cents "
    "FROM analytics.group_sales WHERE store_id IS NULL ORDER BY chain, sales_date, amount_cents DESC"
)


def own_command() -> str:
    """How to call this installation's ``receiptflow`` from the working directory.

    The console script sits beside the running interpreter (``.venv/bin``), which is seldom on
    ``PATH``: a path relative to the working directory when it is below it, else an absolute one.
    """
    script = Path(sys.executable).parent / "receiptflow"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m receiptflow"
    try:
        return shlex.quote(str(script.absolute().relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(script.absolute()))


def next_commands(settings: Settings, *, card: str | None) -> list[str]:
    """The follow-up commands the demo prints, each a complete shell command line."""
    rf = own_command()
    names = TopicNames(settings.kafka.topic_prefix)
    lines = [f"{rf} consume {shlex.quote(names.purchases_customer)} --from-beginning --max 5"]
    if card:
        lines.append(f"{rf} profile {shlex.quote(card)}")
    lines.append(f'{rf} sql "{NEXT_QUERY}"')
    lines.append(f"{rf} stack status")
    lines.append(f"{rf} stack down")
    return lines
