"""The audit of looks: ``audit`` lists who looked at which card, when and why (the ``auditor`` role).

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..config import Settings
from ..humanize import DEFAULT_ZONE, local_time
from .common import card_id, console, err_console, iso_date, require_data_dir

if TYPE_CHECKING:
    from ..jobs.looks import AuditReport
    from .common import Subparsers

TAMPERED = 3  # the exit status when an audit stream lost entries other than by the auditor's trims


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from ..jobs.looks import day_bounds, read_looks, trim_looks
    from ..redis_auth import RedisRole, given_password

    since, before = day_bounds(args.since, args.until)  # a usage error before anything connects
    if given_password(settings, RedisRole.AUDITOR) is None:
        require_data_dir(settings, "audit")  # the generated role passwords are there
    if args.trim_before is not None:
        bound, _ = day_bounds(args.trim_before, None)
        assert bound is not None
        removed = trim_looks(settings, bound)
        console.print(f"removed {removed} looks recorded before {local_time(bound)}", highlight=False)
        return 0
    report = read_looks(settings, args.card, since, before)
    if args.json:
        doc = {"looks": [look.as_json() for look in report.looks], "streams": _streams(report)}
        console.print_json(json.dumps(doc))
    else:
        _print(report)
    tampered = [c for c in report.checks if c.removed]
    for c in tampered:
        err_console.print(
            f"[red]warning:[/red] {c.removed} entries of {c.stream} were removed other than by the auditor's trims "
            f"({c.added} added, {c.held} held, {c.trimmed} trimmed): restore the stream from a backup of Redis's AOF "
            "and find who removed them",
            highlight=False,
            soft_wrap=True,
        )
    return TAMPERED if tampered else 0


def _streams(report: AuditReport) -> list[dict[str, object]]:
    return [
        {"stream": c.stream, "added": c.added, "held": c.held, "trimmed": c.trimmed, "removed": c.removed}
        for c in report.checks
    ]


def _print(report: AuditReport) -> None:
    """One line per look, oldest first: when (local time), what, who, how, why, which card (its hash)."""
    console.print(f"looks at cards, times in {DEFAULT_ZONE}:", highlight=False)
    for look in report.looks:
        how = f"{look.via}, os user {look.os_user}" if look.os_user else look.via
        what = f"{look.kind} ({look.detail})" if look.detail else look.kind
        console.print(
            f"{local_time(look.at)}  {what} by {look.principal} ({how}), reason: {look.reason or '-'}; "
            f"card {look.subject}; entry {look.id}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"{len(report.looks)} looks", highlight=False)


def add_audit(sub: Subparsers) -> None:
    s = sub.add_parser(
        "audit",
        help="list the audited looks at cards (export, download, profile --view full, support's view, web link): "
        "who, when, why; as the auditor role",
    )
    s.add_argument("--card", type=card_id, help="only the looks at this card (found by its salted hash)")
    s.add_argument("--since", type=iso_date, help=f"from this local date on (YYYY-MM-DD, {DEFAULT_ZONE})")
    s.add_argument("--until", type=iso_date, help=f"up to and including this local date (YYYY-MM-DD, {DEFAULT_ZONE})")
    s.add_argument("--json", action="store_true", help="the looks and the streams' counts as JSON (UTC), for machines")
    s.add_argument(
        "--trim-before",
        type=iso_date,
        metavar="DATE",
        help="remove the looks recorded before this local date (the retention of docs/privacy.md), counted so "
        "that the listing tells them from removals by anyone else",
    )
    s.set_defaults(func=cmd_audit)
