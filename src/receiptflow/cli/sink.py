"""The warehouse sink: ``sink run`` and ``sink replay``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import UsageError
from ..progress import progress_bar
from .common import console, err_console, positive_float, print_endpoints, zoned_time

if TYPE_CHECKING:
    from .common import Subparsers


def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from ..health import serving
    from ..sinks import open_sink, run_sink

    if args.action == "replay":
        _check_replay(args, settings)  # before any server is asked
    print_endpoints(settings, "warehouse sink:")
    from ..broker_check import require_broker

    require_broker(settings)
    if args.action == "replay":
        # A batch with its own summary: no exporter, so it never fights a running `sink run` for its port.
        return _sink_replay(args, settings)
    # The processor serves on metrics_port; the sink on the next port, so both run on one host.
    with serving("sink run", settings, ("sink",), port=args.metrics_port, port_offset=1) as served:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        sink = open_sink(settings)
        try:
            stats = run_sink(
                settings,
                sink,
                stop=stop,
                metrics=served.metrics,
                readiness=served.readiness["sink"],
                idle_exit_after=args.idle_exit,
                batch_size=settings.sink.batch_max,
                batch_timeout=settings.sink.batch_seconds,
            )
        finally:
            sink.close()
    console.print(f"sink stopped: {stats}")
    return 0


def _check_replay(args: argparse.Namespace, settings: Settings) -> None:
    """Raise UsageError for a replay without a starting point or of a topic the sink does not read."""
    from ..sinks.replay import sink_topics

    if args.from_time is None and not args.from_beginning:
        raise UsageError("sink replay needs --from-time TIME or --from-beginning")
    known = sink_topics(settings)
    unknown = [t for t in args.topic or () if t not in known]
    if unknown:
        raise UsageError(f"sink replay reads {', '.join(known)}; not {', '.join(unknown)}")


def _sink_replay(args: argparse.Namespace, settings: Settings) -> int:
    from ..sinks import DEFAULT_GROUP, open_sink
    from ..sinks.replay import replay_group, replay_warehouse

    sink = open_sink(settings, group_id=replay_group(DEFAULT_GROUP))
    # Offsets of the replayed topics, so the bar moves with what is read, including transaction markers.
    try:
        with progress_bar("replay", "offsets", err_console) as bar:
            task = bar.add_task("replay", total=None)
            stats = replay_warehouse(
                settings,
                sink,
                from_time=args.from_time,
                topics=args.topic or None,
                batch_size=settings.sink.batch_max,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        sink.close()
    new = stats.inserted
    console.print(
        f"replayed {stats.records} records: {new.receipts} receipts, {new.items} item rows, "
        f"{new.groups} group rows, {new.cells} analytics cells and "
        f"{new.consent_changes} consent changes were missing and are now stored"
    )
    return 0


def add_sink(sub: Subparsers) -> None:
    s = sub.add_parser("sink", help="run the warehouse sink until stopped, or replay a topic into the warehouse")
    s.add_argument(
        "action", choices=("run", "replay"), help="run: until stopped; replay: the retained topics, then exit"
    )
    s.add_argument(
        "--from-time",
        type=zoned_time,
        help="replay: from the first record at or after this ISO-8601 time (with zone, e.g. 2026-12-24T08:00:00+02:00)",
    )
    s.add_argument("--from-beginning", action="store_true", help="replay: the whole retained topics")
    s.add_argument(
        "--topic",
        action="append",
        help="replay: only this topic (repeatable; default: purchases.customer, purchases.analytics and consents)",
    )
    s.add_argument("--idle-exit", type=positive_float, default=None, help="exit after this many idle seconds")
    s.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="run: serve /metrics here (default: RECEIPTFLOW_METRICS_PORT + 1; 0 turns it off); replay serves none",
    )
    s.set_defaults(func=cmd_sink)
