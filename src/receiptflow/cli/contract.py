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
from ..humanize import duration
from .common import console, err_console, iso_date, print_endpoints

if TYPE_CHECKING:
    from .common import Subparsers


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from ..broker_check import require_broker
    from ..topics import create_topics

    if args.action == "list":
        for line in topics_lines(settings, console.width):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return 0
    print_endpoints(settings, "topics create:")
    require_broker(settings)
    result = create_topics(settings)
    for name in result.created:
        console.print(f"created  {name}")
    for name in result.existing:
        console.print(f"exists   {name}")
    if result.acls is not None:
        console.print(f"acls     {result.acls} bindings: each principal only its topics and groups")
    for w in result.warnings:
        err_console.print(f"[yellow]warning[/yellow] {w}")
    return 0


def topics_lines(settings: Settings, width: int) -> list[str]:
    """The catalogue for a person, ``width`` columns wide: a header, then per topic its whole name, how
    long records are kept and the key on one line, and what it is for wrapped below."""
    import textwrap

    from ..topics import CATALOGUE, TopicNames

    names = TopicNames(settings.kafka.topic_prefix)
    rows = []
    for spec in CATALOGUE:
        config = dict(spec.config)
        retention = config.pop("retention.ms", None)
        compacted = "compact" in config.pop("cleanup.policy", "")
        kept = ", ".join(
            part
            for part in (duration(int(retention) / 1000) if retention else "", "compacted" if compacted else "")
            if part
        )
        extra = "".join(
            f"; {k.removesuffix('.ms')} {duration(int(v) / 1000)}" if k.endswith(".ms") else f"; {k}={v}"
            for k, v in config.items()
        )
        rows.append((names.physical(spec.name), kept, spec.key, f"{spec.description} (schema {spec.subject}{extra})"))
    name_w = max(len("TOPIC"), *(len(r[0]) for r in rows))
    kept_w = max(len("KEPT"), *(len(r[1]) for r in rows))
    lines = [f"{'TOPIC':<{name_w}}  {'KEPT':<{kept_w}}  KEY"]
    for name, kept, key, purpose in rows:
        lines.append(f"{name:<{name_w}}  {kept:<{kept_w}}  {key}")
        lines.extend(textwrap.wrap(purpose, max(width - 4, 20), initial_indent="    ", subsequent_indent="    "))
    return lines


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
    problems = [str(p) for p in check_backward(directory)]
    url = settings.kafka.schema_registry_url
    if url:
        from ..codec import SchemaCatalog
        from ..registry import check_against_registry, registry_client
        from ..topics import TopicNames

        catalog = SchemaCatalog.from_dir(directory)
        problems += check_against_registry(catalog, TopicNames(settings.kafka.topic_prefix), registry_client(url), url)
    for p in problems:
        err_console.print(f"[red]incompatible[/red] {p}", markup=True, highlight=False)
    if problems:
        return 1
    console.print(f"schemas in {directory}: every subject's newest version reads all older versions")
    if url:
        console.print(f"and the schema registry at {url} accepts each newest version under its topics' subjects")
    return 0


def add_schemas(sub: Subparsers) -> None:
    s = sub.add_parser("schemas", help="check that the Avro contract is backward compatible")
    s.add_argument("action", choices=("check",), help="check: every newest version reads all older ones")
    s.add_argument("dir", nargs="?", help="schemas directory (default: the bundled contract)")
    s.set_defaults(func=cmd_schemas)


def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    from ..policy import load_policy

    policy = load_policy(settings.privacy.policy_file)
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
