"""Producing: ``produce`` (JSON Lines), ``simulate`` (the seeded fleet) and ``outbox``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import UsageError
from ..humanize import euros
from ..validation import CONSENT_CHANNELS
from .common import RATE_HELP, console, err_console, fraction, positive_float, positive_int, print_endpoints, rate

if TYPE_CHECKING:
    from ..producers.truth import GroundTruth
    from .common import Subparsers


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from ..broker_check import require_broker
    from ..producers.client import RegisterClient
    from ..producers.ingest import ConsentDefaults, ingest

    source = None if args.file in (None, "-") else Path(args.file)
    if source is not None and not source.is_file():
        what = "is a directory" if source.is_dir() else "does not exist"
        raise UsageError(f"{source} {what}: give a JSON Lines file, or - for standard input")
    print_endpoints(settings, "produce:")
    require_broker(settings)
    client = RegisterClient(settings)
    try:
        stream = sys.stdin.buffer if source is None else source.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from exc
    defaults = ConsentDefaults(args.channel or "", args.text_version or "", settings.privacy.consent_max_age)
    try:
        with stream:
            report = ingest(stream, args.kind, client, datetime.now(UTC), defaults)
    finally:
        client.close()
    for note in sorted(report.rejected + report.failed + report.warnings, key=lambda n: n.lineno):
        label = "warning" if note.reason == "unknown_fields" else f"rejected ({note.reason})"
        err_console.print(f"line {note.lineno}: {label}: {note.message}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"sent {report.sent}, acknowledged {report.acked}, failed {len(report.failed)}, rejected {len(report.rejected)}"
    )
    return 0 if report.ok else 1


def add_produce(sub: Subparsers) -> None:
    s = sub.add_parser("produce", help="publish checkouts (or consent changes) from a JSON Lines file")
    s.add_argument("file", nargs="?", help="file, or - / nothing for standard input")
    s.add_argument("--kind", choices=("checkout", "consent"), default="checkout", help="what each line holds")
    s.add_argument(
        "--text-version",
        metavar="VERSION",
        help="consent changes: the version of the consent text the customers saw, for lines without a "
        "text_version (a consent change without one is refused)",
    )
    s.add_argument(
        "--channel",
        choices=sorted(CONSENT_CHANNELS),
        help="consent changes: where the customers gave them, for lines without a channel "
        "(default: the line's source when it is a channel)",
    )
    s.set_defaults(func=cmd_produce)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from ..health import serving
    from ..producers.run import simulate

    print_endpoints(settings, "simulate:")
    # The registers' side: produce errors and the outbox depth, on the port after the sink's.
    with serving("simulate", settings, ("producer",), port=args.metrics_port, port_offset=2) as served:
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
            metrics=served.metrics,
        )
    if args.truth:
        truth.write(Path(args.truth))
    console.print(simulate_report(truth), soft_wrap=True)
    return 0


def simulate_report(truth: GroundTruth) -> str:
    """What a simulation sent, in one line: sign-ups (every card's first consent) apart from later changes."""
    signups = sum(1 for c in truth.consents if c.get("source") == "signup")
    return (
        f"sent {truth.receipts} checkouts ({truth.anonymous} anonymous, {euros(truth.spend_cents)}), "
        f"{len(truth.duplicates)} repeated deliveries, {len(truth.bad)} bad events, "
        f"{signups} consents given at sign-up and {len(truth.consents) - signups} consent changes, "
        f"{truth.out_of_order} out of order"
    )


def add_simulate(sub: Subparsers) -> None:
    s = sub.add_parser("simulate", help="send simulated checkouts from a seeded fleet of registers")
    s.add_argument("--stores", type=positive_int, default=20, help="stores selling")
    s.add_argument("--customers", type=positive_int, default=200, help="card holders among the shoppers")
    s.add_argument("--rate", type=rate, default=50.0, help=RATE_HELP)
    s.add_argument("--duration", type=positive_float, default=60.0, help="seconds")
    s.add_argument("--seed", type=int, default=1, help="seed of the simulated fleet (same seed, same sales)")
    s.add_argument("--dup-rate", type=fraction, default=0.0, help="share of sales delivered twice")
    s.add_argument("--bad-rate", type=fraction, default=0.0, help="share of sales followed by a bad event")
    s.add_argument(
        "--consent-change-rate",
        type=fraction,
        default=0.0,
        help="consent changes per sale (every card also signs up with its first consent)",
    )
    s.add_argument("--out-of-order-rate", type=fraction, default=0.0, help="share of sales delivered late")
    s.add_argument("--outbox", help="outbox file (default: under the data dir)")
    s.add_argument("--truth", help="write the ground-truth JSON here")
    s.add_argument(
        "--metrics-port", type=int, default=None, help="override the exporter port (RECEIPTFLOW_METRICS_PORT + 2)"
    )
    s.set_defaults(func=cmd_simulate)


def cmd_outbox(args: argparse.Namespace, settings: Settings) -> int:
    import sqlite3

    from ..producers.outbox import Outbox

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
            print_endpoints(settings, "outbox drain:")
            outbox.start()
            drained = outbox.drain(args.timeout)
            outbox.stop()
            console.print(f"sent {outbox.acked}, still pending {outbox.pending()}")
            return 0 if drained else 1
        console.print(f"{args.path}: {outbox.pending()} pending, {outbox.bytes_pending} bytes")
        return 0
    finally:
        outbox.close()


def add_outbox(sub: Subparsers) -> None:
    s = sub.add_parser("outbox", help="inspect or drain a register outbox file")
    s.add_argument(
        "action", choices=("status", "drain"), help="status: what it still holds; drain: send it to Kafka now"
    )
    s.add_argument("path", help="the register's outbox file")
    s.add_argument("--timeout", type=positive_float, default=120.0, help="drain: seconds to wait for Kafka")
    s.set_defaults(func=cmd_outbox)
