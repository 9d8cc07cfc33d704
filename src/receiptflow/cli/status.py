"""``status``: the pipeline at a glance in the terminal, for people without Grafana.

Each consumer group's lag per partition and records/s committed, the records/s written to each
topic, dead letters by reason and each process's readiness (:mod:`receiptflow.status` gathers it);
``--json`` for machines. Each command's arguments (``add_<command>``) stand next to its handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from rich.table import Table

from ..config import Settings
from ..errors import UsageError
from .common import console, non_negative_float

if TYPE_CHECKING:
    from ..status import Group, Status
    from .common import Subparsers


def _groups(settings: Settings) -> list[Group]:
    """The groups of the router, the aggregator, the profile agent and the sink, with the topics each reads."""
    from ..processors.aggregate.clients import group_id
    from ..sinks import DEFAULT_GROUP
    from ..status import Group
    from ..topics import TopicNames

    names = TopicNames(settings.kafka.topic_prefix)
    return [
        Group(settings.router.id, "router", (names.checkouts, names.consents)),
        Group(group_id(settings), "aggregator", (names.analytics_baskets,)),
        Group(f"{settings.router.id}-profiles", "profile agent", (names.purchases_customer, names.consents)),
        Group(DEFAULT_GROUP, "warehouse sink", (names.purchases_customer, names.purchases_analytics, names.consents)),
    ]


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from ..broker_check import require_broker
    from ..status import gather

    require_broker(settings)
    processes = None
    if args.endpoint:
        processes = {}
        for entry in args.endpoint:
            name, sep, address = entry.partition("=")
            if not sep or not name or ":" not in address:
                raise UsageError(f"--endpoint {entry!r} is not NAME=HOST:PORT, e.g. router=127.0.0.1:9108")
            processes[name] = address
    status = gather(settings, _groups(settings), sample=args.sample, processes=processes)
    if args.json:
        sys.stdout.write(json.dumps(status.to_json(), indent=2) + "\n")
        return 0
    _render(status, partitions=args.partitions)
    return 0


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}/s"


def _render(status: Status, *, partitions: bool) -> None:
    groups = Table(title="Consumer groups", title_justify="left")
    for column in ("group", "role", "lag", "committed"):
        groups.add_column(column, justify="right" if column in ("lag", "committed") else "left")
    for g in status.groups:
        groups.add_row(g.name, g.role, _n(g.lag), _rate(g.committed_per_second))
    console.print(groups)
    if partitions:
        table = Table(title="Lag per partition", title_justify="left")
        for column in ("group", "topic", "partition", "committed", "end", "lag"):
            table.add_column(column, justify="left" if column in ("group", "topic") else "right")
        for g in status.groups:
            for p in g.partitions:
                table.add_row(g.name, p.topic, str(p.partition), _n(p.committed), _n(p.end), _n(p.lag))
        console.print(table)
    if status.written_per_second:
        topics = Table(title="Written to topics", title_justify="left")
        topics.add_column("topic")
        topics.add_column("records", justify="right")
        for topic, rate in status.written_per_second.items():
            topics.add_row(topic, _rate(rate))
        console.print(topics)
    letters = Table(title="Dead letters", title_justify="left")
    letters.add_column("reason")
    letters.add_column("count", justify="right")
    for reason, count in status.dead_letters.items():
        letters.add_row(reason, _n(count))
    if not status.dead_letters:
        letters.add_row("none", "0")
    console.print(letters)
    processes = Table(title="Processes (/readyz)", title_justify="left")
    for column in ("process", "address", "state", "failing checks"):
        processes.add_column(column)
    for process in status.processes:
        colour = {"ready": "green", "not ready": "yellow"}.get(process.state, "red")
        state = f"[{colour}]{process.state}[/{colour}]"
        processes.add_row(process.name, process.address, state, ", ".join(process.failing))
    console.print(processes)


def add_status(sub: Subparsers) -> None:
    s = sub.add_parser("status", help="lag per consumer group and partition, rates, dead letters and process readiness")
    s.add_argument("--json", action="store_true", help="print JSON for machines")
    s.add_argument(
        "--sample",
        type=non_negative_float,
        default=2.0,
        help="seconds between the two readings of the offsets that give the rates (0: no rates)",
    )
    s.add_argument("--partitions", action="store_true", help="also list the lag of every partition")
    s.add_argument(
        "--endpoint",
        action="append",
        metavar="NAME=HOST:PORT",
        help="a process to ask for /readyz (repeatable; default RECEIPTFLOW_STATUS_ENDPOINTS)",
    )
    s.set_defaults(func=cmd_status)
