"""The ``receiptflow`` command line: one console script, one subcommand per job.

Subcommands only parse arguments, build a :class:`~receiptflow.config.Settings`, call the module that
does the work and print; long-running ones first print which broker, Redis and warehouse they use
(never a secret). Exit codes: 0 success, 1 the job failed or rejected input, 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError as PydanticValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .config import KAFKA_LOGGER, Settings, load_settings, redact_url
from .errors import ConfigError, ReceiptflowError, UsageError

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)
log = logging.getLogger("receiptflow")


def _print_endpoints(settings: Settings, what: str) -> None:
    d = settings.describe()
    err_console.print(
        f"[bold]{what}[/bold] kafka={d['kafka']} redis={d['redis']} warehouse={d['warehouse']} data_dir={d['data_dir']}"
    )


# --- stack -------------------------------------------------------------------------------------
def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from .stack import Stack

    stack = Stack(settings)
    if args.action == "fetch":
        statuses = [stack.fetch()]
    elif args.action == "up":
        _print_endpoints(settings, "stack up:")
        statuses = stack.up(with_postgres=args.with_postgres)
    elif args.action == "down":
        statuses = stack.down()
    else:
        statuses = stack.status()
    table = Table("component", "state", "pid", "endpoint")
    for s in statuses:
        table.add_row(s.name, s.state, str(s.pid or "-"), s.endpoint)
    console.print(table)
    ours = any(s.name == "redis" and s.state == "running" for s in statuses)
    if args.action == "up" and ours and settings.redis_acl_file is None:
        secrets = settings.data_dir.resolve() / "secrets"
        console.print(
            f"redis: ACL users on, default user off; role passwords in {secrets}/redis-<user> (owner only)",
            markup=False,
        )
    return 0


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from .stack.kafka import KafkaCluster

    cluster = KafkaCluster(settings, nodes=args.nodes)
    if args.action == "up":
        statuses = cluster.up()
    elif args.action == "down":
        statuses = cluster.down()
    else:
        statuses = cluster.status()
    table = Table("node", "state", "pid", "endpoint")
    for s in statuses:
        table.add_row(s.name, s.state, str(s.pid or "-"), s.endpoint)
    console.print(table)
    if args.action == "up":
        console.print(
            f"bootstrap servers: {cluster.bootstrap_servers} (replication factor {cluster.replication}, "
            "min.insync.replicas 2): export RECEIPTFLOW_BOOTSTRAP_SERVERS and "
            f"RECEIPTFLOW_TOPIC_REPLICATION_FACTOR={cluster.replication}"
        )
    return 0


# --- topics ------------------------------------------------------------------------------------
def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from .topics import CATALOGUE, TopicNames, create_topics, require_broker

    if args.action == "list":
        names = TopicNames(settings.topic_prefix)
        table = Table("topic", "schema", "key", "config", "purpose")
        for s in CATALOGUE:
            cfg = ", ".join(f"{k}={v}" for k, v in s.config.items())
            table.add_row(names.physical(s.name), s.subject, s.key, cfg, s.description)
        console.print(table)
        return 0
    _print_endpoints(settings, "topics create:")
    require_broker(settings)
    result = create_topics(settings)
    for name in result.created:
        console.print(f"created  {name}")
    for name in result.existing:
        console.print(f"exists   {name}")
    for w in result.warnings:
        err_console.print(f"[yellow]warning[/yellow] {w}")
    return 0


# --- schemas -----------------------------------------------------------------------------------
def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from importlib import resources

    from .schemacheck import check_backward

    directory = Path(args.dir) if args.dir else Path(str(resources.files("receiptflow.schemas")))
    problems = check_backward(directory)
    for p in problems:
        err_console.print(f"[red]incompatible[/red] {p}")
    if problems:
        return 1
    console.print(f"schemas in {directory}: every subject's newest version reads all older versions")
    return 0


# --- policy ------------------------------------------------------------------------------------
def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    from .policy import load_policy

    policy = load_policy(settings.policy_file)
    day = args.at or datetime.now(UTC).date()
    table = Table("chain", "group", "level", "version", title=f"granularity in force on {day.isoformat()}")
    for row in policy.describe_at(day):
        table.add_row(*row)
    console.print(table)
    console.print(f"unknown chains: {policy.default_level.value.lower()}")
    return 0


# --- produce -----------------------------------------------------------------------------------
def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from .producers.client import RegisterClient
    from .producers.ingest import ingest
    from .topics import require_broker

    source = None if args.file in (None, "-") else Path(args.file)
    if source is not None and not source.is_file():
        what = "is a directory" if source.is_dir() else "does not exist"
        raise UsageError(f"{source} {what}: give a JSON Lines file, or - for standard input")
    _print_endpoints(settings, "produce:")
    require_broker(settings)
    client = RegisterClient(settings)
    try:
        stream = sys.stdin.buffer if source is None else source.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from exc
    with stream:
        report = ingest(stream, args.kind, client, datetime.now(UTC))
    for note in sorted(report.rejected + report.failed + report.warnings, key=lambda n: n.lineno):
        label = "warning" if note.reason == "unknown_fields" else f"rejected ({note.reason})"
        err_console.print(f"line {note.lineno}: {label}: {note.message}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"sent {report.sent}, acknowledged {report.acked}, failed {len(report.failed)}, rejected {len(report.rejected)}"
    )
    return 0 if report.ok else 1


# --- process / sink ----------------------------------------------------------------------------
def cmd_process(args: argparse.Namespace, settings: Settings) -> int:
    import faulthandler
    import os
    import signal
    import threading

    from .metrics import Metrics, serve
    from .processors.app import create_app, run_worker
    from .processors.router import Router

    if args.instance is not None:
        settings = settings.model_copy(update={"processor_instance": args.instance})
    _print_endpoints(settings, f"processor ({args.role}, instance {settings.processor_instance}):")
    from .topics import require_broker

    require_broker(settings)
    # main() configured logging already (WARNING unless -v): --loglevel must replace that.
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    # `kill -USR1 <pid>` prints every thread's stack to stderr: where a stuck worker waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    metrics = Metrics()
    serve(metrics, settings.metrics_port if args.metrics_port is None else args.metrics_port, settings.metrics_addr)
    if args.role == "profiles":
        run_worker(create_app(settings, metrics=metrics), loglevel=args.loglevel)
        return 0
    stop = threading.Event()
    router = Router(settings, metrics=metrics)
    if args.role == "router":
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        router.run(stop)
        return 0
    # Both: the router on a thread, the faust worker (which owns the event loop) on the main thread.
    failure: list[BaseException] = []

    def route() -> None:
        try:
            router.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
            os.kill(os.getpid(), signal.SIGTERM)  # stop the faust worker too: fail as one process

    thread = threading.Thread(target=route, name="router", daemon=True)
    thread.start()
    try:
        run_worker(create_app(settings, metrics=metrics), loglevel=args.loglevel)
    except SystemExit:
        pass
    finally:
        stop.set()
        thread.join(60)
    if failure:
        raise failure[0]
    return 0


def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from .metrics import Metrics, serve
    from .sinks import open_sink, run_sink

    _print_endpoints(settings, "warehouse sink:")
    from .topics import require_broker

    require_broker(settings)
    metrics = Metrics()
    # The processor serves on metrics_port; the sink on the next port, so both run on one host.
    default_port = settings.metrics_port + 1 if settings.metrics_port else 0
    serve(metrics, default_port if args.metrics_port is None else args.metrics_port, settings.metrics_addr)
    if args.action == "replay":
        return _sink_replay(args, settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sink = open_sink(settings)
    try:
        stats = run_sink(
            settings,
            sink,
            stop=stop,
            metrics=metrics,
            idle_exit_after=args.idle_exit,
            batch_size=settings.sink_batch_max,
            batch_timeout=settings.sink_batch_seconds,
        )
    finally:
        sink.close()
    console.print(f"sink stopped: {stats}")
    return 0


def _sink_replay(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .models import parse_time
    from .sinks import DEFAULT_GROUP, open_sink
    from .sinks.replay import replay, replay_group, sink_topics

    if args.from_time is None and not args.from_beginning:
        err_console.print("sink replay needs --from-time TIME or --from-beginning")
        return 2
    from_time = parse_time(args.from_time, "--from-time") if args.from_time is not None else None
    known = sink_topics(settings)
    unknown = [t for t in args.topic or () if t not in known]
    if unknown:
        err_console.print(f"sink replay reads {', '.join(known)}; not {', '.join(unknown)}")
        return 2
    sink = open_sink(settings, group_id=replay_group(DEFAULT_GROUP))
    # Offsets of the replayed topics, so the bar moves with what is read, including transaction markers.
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("offsets"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err_console) as bar:
            task = bar.add_task("replay", total=None)
            stats = replay(
                settings,
                sink,
                from_time=from_time,
                topics=args.topic or None,
                batch_size=settings.sink_batch_max,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        sink.close()
    console.print(
        f"replayed {stats.records} records: {stats.receipts_inserted} receipts, {stats.items_inserted} item rows, "
        f"{stats.groups_inserted} group rows, {stats.analytics_lines_inserted} analytics lines and "
        f"{stats.consent_changes_inserted} consent changes were missing and are now stored"
    )
    return 0


# --- simulate ----------------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from .producers.run import simulate

    _print_endpoints(settings, "simulate:")
    truth = simulate(
        settings,
        stores=args.stores,
        customers=args.customers,
        rate=args.rate,
        duration=args.duration,
        seed=args.seed,
        console=err_console,
        dup_rate=args.dup_rate,
        bad_rate=args.bad_rate,
        consent_change_rate=args.consent_change_rate,
        out_of_order_rate=args.out_of_order_rate,
        outbox_path=Path(args.outbox) if args.outbox else None,
    )
    if args.truth:
        truth.write(Path(args.truth))
    console.print(
        f"sent {truth.receipts} checkouts ({truth.anonymous} anonymous, {truth.spend_cents} cents), "
        f"{len(truth.duplicates)} repeated deliveries, {len(truth.bad)} bad events, "
        f"{len(truth.consents)} consent changes, {truth.out_of_order} out of order"
    )
    return 0


# --- outbox ------------------------------------------------------------------------------------
def cmd_outbox(args: argparse.Namespace, settings: Settings) -> int:
    import sqlite3

    from .producers.outbox import Outbox

    path = Path(args.path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UsageError(f"{path} {what}: give the path of a register's outbox file")
    try:
        outbox = Outbox(path, settings)
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path} is not a register outbox ({exc})") from exc
    try:
        if args.action == "drain":
            _print_endpoints(settings, "outbox drain:")
            outbox.start()
            drained = outbox.drain(args.timeout)
            outbox.stop()
            console.print(f"sent {outbox.acked}, still pending {outbox.pending()}")
            return 0 if drained else 1
        console.print(f"{args.path}: {outbox.pending()} pending, {outbox.bytes_pending} bytes")
        return 0
    finally:
        outbox.close()


# --- consume -----------------------------------------------------------------------------------
def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from .consume import consume_json
    from .topics import require_broker

    require_broker(settings)
    count = 0
    for line in consume_json(settings, args.topic, from_beginning=args.from_beginning, max_records=args.max):
        console.print(line, markup=False, soft_wrap=True)
        count += 1
    err_console.print(f"{count} records")
    return 0


# --- dlq ---------------------------------------------------------------------------------------
def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from collections import Counter

    from .dlq import iter_dead_letters, replay
    from .topics import require_broker

    require_broker(settings)
    if args.action == "list":
        reasons: Counter[str] = Counter()
        for d in iter_dead_letters(settings, from_offset=args.from_offset or 0, reason=args.reason):
            reasons[d.reason] += 1
            if args.max is None or sum(reasons.values()) <= args.max:
                where = f"{d.source_topic}[{d.source_partition}]@{d.source_offset}"
                field = f" ({d.field})" if d.field else ""
                console.print(f"{d.offset:>8}  {d.reason:<18} {where:<28} {d.message}{field}", markup=False)
        summary = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "none"
        err_console.print(f"{sum(reasons.values())} dead letters ({summary})")
        return 0
    _print_endpoints(settings, "dlq replay:")
    with err_console.status("replaying...") as status:
        result = replay(
            settings,
            from_offset=args.from_offset,
            reason=args.reason,
            to_topic=args.to_topic,
            progress=lambda n: status.update(f"replayed {n}"),
        )
    repeats = (
        f"; skipped {result.skipped_repeats} that an earlier replay already sent and were rejected again "
        "(fix their cause, or replay them on purpose with --from-offset)"
        if result.skipped_repeats
        else ""
    )
    console.print(
        f"replayed {result.replayed} dead letters from offset {result.started_at} "
        f"({result.skipped_empty} without a value){repeats}",
        soft_wrap=True,
    )
    return 0


# --- profile -----------------------------------------------------------------------------------
def cmd_profile(args: argparse.Namespace, settings: Settings) -> int:
    from .processors.households import load_households, members
    from .processors.profile_store import RedisProfileStore
    from .processors.profile_views import render
    from .redis_auth import RedisRole

    # Only the full view shows the dedup set (support's login); the others read profile hashes
    # alone, all the marketing reader may read (deploy/redis/users.acl).
    role = RedisRole.SUPPORT if args.view == "full" else RedisRole.MARKETING
    store = RedisProfileStore.from_settings(settings, role)
    profile = store.get(args.card, with_seen=args.view == "full")
    if profile is None:
        err_console.print(f"no profile for card {args.card}")
        return 1
    household: dict[str, int] | None = None
    if settings.households_file is not None and args.view != "marketing":
        cards = members(load_households(settings.households_file), args.card)
        household = {c: p.points for c, p in store.get_many(cards, with_seen=False).items()}
    segments = store.segments(args.card)
    doc = render(profile, args.view, datetime.now(UTC), household=household, segments=segments)
    console.print_json(json.dumps(doc)) if args.json else console.print(doc)
    return 0


# --- profiles rebuild / segments ---------------------------------------------------------------
def _progress_bar(what: str, unit: str) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeRemainingColumn())
    return Progress(*columns, console=err_console)


def _profile_batch(settings: Settings, what: str, unit: str, job: Callable[..., T]) -> T:
    """Run a batch job over the warehouse and the profile store, with a progress bar on stderr.

    ``job(sink, store, progress=..., metrics=...)``; the job's metrics go to
    ``RECEIPTFLOW_METRICS_TEXTFILE`` when it is set, since nothing scrapes a batch command live.
    """
    from .metrics import Metrics, write_textfile
    from .processors.profile_store import RedisProfileStore
    from .sinks import open_sink

    metrics = Metrics()
    store = RedisProfileStore.from_settings(settings)
    sink = open_sink(settings)
    try:
        with _progress_bar(what, unit) as bar:
            task = bar.add_task(what, total=None)
            result = job(
                sink,
                store,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                metrics=metrics,
            )
    finally:
        sink.close()
    if settings.metrics_textfile is not None:
        write_textfile(metrics, settings.metrics_textfile)
    return result


def cmd_profiles(args: argparse.Namespace, settings: Settings) -> int:
    from .jobs.profile_rebuild import rebuild

    if args.redis_url is not None:
        settings = settings.model_copy(update={"redis_url": args.redis_url})
    _print_endpoints(settings, "profiles rebuild:")
    from .topics import require_broker

    require_broker(settings)  # it reads the erased-cards topic first
    from .jobs.subject import record_erased_in_profiles
    from .processors.profile_store import RedisProfileStore

    # Before any profile is written: the target may be a new Redis that never saw an erasure.
    record_erased_in_profiles(settings, RedisProfileStore.from_settings(settings))
    stats = _profile_batch(
        settings,
        "rebuild",
        "purchases and consent changes",
        partial(rebuild, cards_per_batch=args.cards_per_batch),
    )
    console.print(
        f"rebuilt {stats.cards} profiles: {stats.purchases} purchases and {stats.consent_changes} consent changes "
        f"applied in {stats.round_trips} round trips; {stats.erased} purchases of erased cards left out"
    )
    return 0


def cmd_segments(args: argparse.Namespace, settings: Settings) -> int:
    from .jobs.segments import load_model, month_bounds, run_segments

    month_bounds(args.month)  # a usage error before anything connects
    model = load_model(settings.segments_file)
    _print_endpoints(settings, f"segments run ({args.month}, model {model.version}):")
    run = _profile_batch(
        settings,
        "segments",
        "cards",
        partial(
            run_segments,
            month=args.month,
            model=model,
            default_product_data=settings.default_product_data_marketing,
        ),
    )
    table = Table("grocery segment", "cards", title=f"{run.month}: {run.cards} active cards, model {run.model}")
    for name, n in sorted(run.per_segment.items()):
        table.add_row("none (no product-data consent or no grocery spend)" if name == "-" else name, str(n))
    console.print(table)
    console.print(
        f"stored in {run.stored + run.stored_without_segment} profiles ({run.stored} with a grocery segment); "
        f"{run.no_profile} cards without a profile and {run.erased} erased cards skipped"
    )
    return 0


# --- subject access and erasure -----------------------------------------------------------------
def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from .jobs.subject import export_card
    from .topics import require_broker

    require_broker(settings)  # the export says what the topics still hold
    doc = export_card(settings, args.card)
    console.print_json(json.dumps(doc, default=str))
    return 0


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from .jobs.subject import erase_card, record_existing

    if args.record_existing:
        if args.card is not None:
            err_console.print("erase --record-existing takes no card")
            return 2
        _print_endpoints(settings, "erase --record-existing:")
        n = record_existing(settings)
        console.print(f"recorded {n} earlier erasure(s) on the erased-cards topic")
        return 0
    if args.card is None:
        err_console.print("erase needs a CARD (or --record-existing)")
        return 2
    if not args.yes:
        err_console.print(f"erase deletes everything held about card {args.card}; repeat with --yes to proceed")
        return 2
    _print_endpoints(settings, "erase:")
    e = erase_card(settings, args.card)
    rows = ", ".join(f"{t} {n}" for t, n in sorted(e.warehouse_rows.items()))
    resumed = f"completed the erasure recorded at {e.at.isoformat()}; " if e.resumed else ""
    console.print(
        f"erased: {resumed}{e.redis_keys} Redis keys, warehouse rows: {rows}, {e.tombstones} tombstone(s); "
        f"{len(e.audit_ids)} audit entries up to {e.audit_id} (subject {e.subject}); "
        "`receiptflow export` says until when topics may still hold its records"
    )
    return 0


# --- demo --------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from .demo import run_demo

    return run_demo(
        settings, duration=args.duration, rate=args.rate, seed=args.seed, stores=args.stores, customers=args.customers
    )


# --- argument types: a bad value is argparse's one-line usage error (exit 2), never a traceback ----
def _number(kind: Callable[[str], float], low: float | None, high: float | None, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if math.isnan(value) or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, None, "a whole number of at least 1")
non_negative_int = _number(int, 0, None, "a whole number of at least 0")
positive_float = _number(float, 1e-9, None, "a number above 0")
fraction = _number(float, 0.0, 1.0, "a share between 0 and 1")


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD, e.g. 2026-12-24") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="receiptflow", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"receiptflow {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("stack", help="start, stop or inspect the embedded Kafka + Redis (+ PostgreSQL)")
    s.add_argument("action", choices=("up", "down", "status", "fetch"))
    s.add_argument("--with-postgres", action="store_true", help="also start a local PostgreSQL server")
    s.set_defaults(func=cmd_stack)

    s = sub.add_parser(
        "cluster", help="a local multi-node Kafka cluster (replication, failover) on ports from the bootstrap port"
    )
    s.add_argument("action", choices=("up", "down", "status"))
    s.add_argument("--nodes", type=int, default=3, help="number of nodes (broker + controller each), at least 2")
    s.set_defaults(func=cmd_cluster)

    s = sub.add_parser("topics", help="list the topic catalogue or create the topics (idempotent)")
    s.add_argument("action", choices=("create", "list"))
    s.set_defaults(func=cmd_topics)

    s = sub.add_parser("schemas", help="check that the Avro contract is backward compatible")
    s.add_argument("action", choices=("check",))
    s.add_argument("dir", nargs="?", help="schemas directory (default: the bundled contract)")
    s.set_defaults(func=cmd_schemas)

    s = sub.add_parser("policy", help="show the granularity policy in force")
    s.add_argument("action", choices=("show",))
    s.add_argument("--at", type=iso_date, help="date (YYYY-MM-DD), default today")
    s.set_defaults(func=cmd_policy)

    s = sub.add_parser("produce", help="publish checkouts (or consent changes) from a JSON Lines file")
    s.add_argument("file", nargs="?", help="file, or - / nothing for standard input")
    s.add_argument("--kind", choices=("checkout", "consent"), default="checkout")
    s.set_defaults(func=cmd_produce)

    s = sub.add_parser("process", help="run the stream processor until stopped")
    s.add_argument(
        "--role",
        choices=("all", "router", "profiles"),
        default="all",
        help="router: checkouts -> purchase topics (exactly-once); profiles: faust agent -> Redis; all: both",
    )
    s.add_argument("--instance", help="stable worker name (RECEIPTFLOW_PROCESSOR_INSTANCE)")
    s.add_argument("--loglevel", default="warning")
    s.add_argument("--metrics-port", type=int, default=None, help="override RECEIPTFLOW_METRICS_PORT")
    s.set_defaults(func=cmd_process)

    s = sub.add_parser("sink", help="run the warehouse sink until stopped, or replay a topic into the warehouse")
    s.add_argument("action", choices=("run", "replay"))
    s.add_argument("--from-time", help="replay: from the first record at or after this ISO-8601 time (with zone)")
    s.add_argument("--from-beginning", action="store_true", help="replay: the whole retained topics")
    s.add_argument(
        "--topic",
        action="append",
        help="replay: only this topic (repeatable; default: purchases.customer, purchases.analytics and consents)",
    )
    s.add_argument("--idle-exit", type=positive_float, default=None, help="exit after this many idle seconds")
    s.add_argument("--metrics-port", type=int, default=None, help="override RECEIPTFLOW_METRICS_PORT")
    s.set_defaults(func=cmd_sink)

    s = sub.add_parser("simulate", help="send simulated checkouts from a seeded fleet of registers")
    s.add_argument("--stores", type=positive_int, default=20)
    s.add_argument("--customers", type=positive_int, default=200)
    s.add_argument("--rate", type=positive_float, default=50.0, help="checkouts per second")
    s.add_argument("--duration", type=positive_float, default=60.0, help="seconds")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--dup-rate", type=fraction, default=0.0, help="share of sales delivered twice")
    s.add_argument("--bad-rate", type=fraction, default=0.0, help="share of sales followed by a bad event")
    s.add_argument("--consent-change-rate", type=fraction, default=0.0, help="consent changes per sale")
    s.add_argument("--out-of-order-rate", type=fraction, default=0.0, help="share of sales delivered late")
    s.add_argument("--outbox", help="outbox file (default: under the data dir)")
    s.add_argument("--truth", help="write the ground-truth JSON here")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("outbox", help="inspect or drain a register outbox file")
    s.add_argument("action", choices=("status", "drain"))
    s.add_argument("path")
    s.add_argument("--timeout", type=positive_float, default=120.0)
    s.set_defaults(func=cmd_outbox)

    s = sub.add_parser("dlq", help="list dead letters, or replay them to their source topic after a fix")
    s.add_argument("action", choices=("list", "replay"))
    s.add_argument("--reason", help="only dead letters of this reason code")
    s.add_argument(
        "--from-offset",
        type=int,
        default=None,
        help="dead-letter topic offset to start at (list default: 0; replay default: where the last replay stopped)",
    )
    s.add_argument("--max", type=non_negative_int, default=None, help="list: print at most this many")
    s.add_argument("--to-topic", help="replay: send here instead of each record's source topic")
    s.set_defaults(func=cmd_dlq)

    s = sub.add_parser("consume", help="print a topic's records as decoded JSON lines (read-committed)")
    s.add_argument("topic")
    s.add_argument("--from-beginning", action="store_true")
    s.add_argument("--max", type=int, default=None)
    s.set_defaults(func=cmd_consume)

    s = sub.add_parser("profile", help="show a card's profile from Redis, as one role sees it")
    s.add_argument("card")
    s.add_argument(
        "--view",
        choices=("customer", "marketing", "full"),
        default="customer",
        help="customer: the card holder's own view; marketing: only what consent allows; full: everything",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("profiles", help="rebuild every customer profile from the warehouse")
    s.add_argument("action", choices=("rebuild",))
    s.add_argument("--redis-url", help="rebuild into this Redis instead of RECEIPTFLOW_REDIS_URL")
    s.add_argument("--cards-per-batch", type=int, default=500, help="cards read from the warehouse at a time")
    s.set_defaults(func=cmd_profiles)

    s = sub.add_parser("segments", help="assign a month's active cards to segments and store them in the profiles")
    s.add_argument("action", choices=("run",))
    s.add_argument("--month", required=True, help="YYYY-MM (receipts by the register's local date)")
    s.set_defaults(func=cmd_segments)

    s = sub.add_parser("export", help="subject access: everything held about a card, as JSON")
    s.add_argument("card")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser(
        "erase",
        help="erase a card: record it on the erased-cards topic, then Redis, the warehouse and its consents; "
        "audited per step, refused before any change when a store is unavailable, resumable",
    )
    s.add_argument("card", nargs="?")
    s.add_argument("--yes", action="store_true", help="really erase")
    s.add_argument(
        "--record-existing",
        action="store_true",
        help="put cards erased before the erased-cards topic existed (in Redis or the warehouse) on it",
    )
    s.set_defaults(func=cmd_erase)

    s = sub.add_parser(
        "demo", help="the main job on the embedded stack: registers → Kafka → processor → Redis + warehouse"
    )
    s.add_argument("--duration", type=positive_float, default=60.0, help="seconds of simulated traffic (default 60)")
    s.add_argument("--rate", type=positive_float, default=50.0, help="checkouts per second (default 50)")
    s.add_argument("--seed", type=int, default=2010)
    s.add_argument("--stores", type=positive_int, default=30)
    s.add_argument("--customers", type=positive_int, default=300)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # librdkafka reports every failed connection attempt; the commands say what is wrong themselves.
    KAFKA_LOGGER.setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    settings: Settings | None = None
    try:
        try:
            settings = load_settings()
        except PydanticValidationError as exc:
            raise ConfigError(_settings_problem(exc)) from exc
        code: int = args.func(args, settings)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, UsageError | ConfigError):
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return 2
        if isinstance(exc, ReceiptflowError):
            message = str(exc) + _server_hint(exc, settings)
            err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
            return 1
        # A defect of ours: one line for the person, the traceback only on request.
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} "
            "(run again with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1


def _server_hint(exc: BaseException, settings: Settings | None) -> str:
    """What to do when the error comes from a server that does not answer (empty when it does not)."""
    cause = exc.__cause__
    local = settings is None or not settings.is_production
    start = "start the embedded stack with `.venv/bin/receiptflow stack up`" if local else "check that it is up"
    if type(cause).__module__.startswith("redis") and "Connection" in type(cause).__name__:
        where = redact_url(settings.redis_url) if settings is not None else "Redis"
        return f" -- Redis at {where} does not answer: {start}, or set RECEIPTFLOW_REDIS_URL"
    if type(cause).__module__.startswith("psycopg") and "OperationalError" in type(cause).__name__:
        where = redact_url(settings.resolved_warehouse_url) if settings is not None else "PostgreSQL"
        return f" -- the warehouse at {where} does not answer: {start}, or set RECEIPTFLOW_WAREHOUSE_URL"
    return ""


def _settings_problem(exc: PydanticValidationError) -> str:
    """One line naming each bad RECEIPTFLOW_ variable and what is wrong with it."""
    parts = []
    for error in exc.errors():
        name = "RECEIPTFLOW_" + "_".join(str(p) for p in error["loc"]).upper()
        parts.append(f"{name}: {error['msg']}")
    return "; ".join(parts) + " (fix the environment or .env)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
