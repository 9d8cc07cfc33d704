"""The contract and its settings: ``topics``, ``schemas`` and ``policy``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from ..config import Settings
from .common import console, err_console, iso_date, print_endpoints

if TYPE_CHECKING:
    from .common import Subparsers


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from ..topics import CATALOGUE, TopicNames, create_topics, require_broker

    if args.action == "list":
        names = TopicNames(settings.topic_prefix)
        table = Table("topic", "schema", "key", "config", "purpose")
        for s in CATALOGUE:
            cfg = ", ".join(f"{k}={v}" for k, v in s.config.items())
            table.add_row(names.physical(s.name), s.subject, s.key, cfg, s.description)
        console.print(table)
        return 0
    print_endpoints(settings, "topics create:")
    require_broker(settings)
    result = create_topics(settings)
    for name in result.created:
        console.print(f"created  {name}")
    for name in result.existing:
        console.print(f"exists   {name}")
    for w in result.warnings:
        err_console.print(f"[yellow]warning[/yellow] {w}")
    return 0


def add_topics(sub: Subparsers) -> None:
    s = sub.add_parser("topics", help="list the topic catalogue or create the topics (idempotent)")
    s.add_argument(
        "action", choices=("create", "list"), help="create: make the missing topics; list: show the catalogue"
    )
    s.set_defaults(func=cmd_topics)


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from importlib import resources

    from ..schemacheck import check_backward

    directory = Path(args.dir) if args.dir else Path(str(resources.files("receiptflow.schemas")))
    problems = check_backward(directory)
    for p in problems:
        err_console.print(f"[red]incompatible[/red] {p}")
    if problems:
        return 1
    console.print(f"schemas in {directory}: every subject's newest version reads all older versions")
    return 0


def add_schemas(sub: Subparsers) -> None:
    s = sub.add_parser("schemas", help="check that the Avro contract is backward compatible")
    s.add_argument("action", choices=("check",), help="check: every newest version reads all older ones")
    s.add_argument("dir", nargs="?", help="schemas directory (default: the bundled contract)")
    s.set_defaults(func=cmd_schemas)


def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    from ..policy import load_policy

    policy = load_policy(settings.policy_file)
    day = args.at or datetime.now(UTC).date()
    table = Table("chain", "group", "level", "version", title=f"granularity in force on {day.isoformat()}")
    for row in policy.describe_at(day):
        table.add_row(*row)
    console.print(table)
    console.print(f"unknown chains: {policy.default_level.value.lower()}")
    return 0


def add_policy(sub: Subparsers) -> None:
    s = sub.add_parser("policy", help="show the granularity policy in force")
    s.add_argument("action", choices=("show",), help="show: the level per chain and product group")
    s.add_argument("--at", type=iso_date, help="date (YYYY-MM-DD), default today")
    s.set_defaults(func=cmd_policy)
