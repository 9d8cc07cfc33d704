"""Reading topics: ``consume`` (decoded JSON lines) and ``dlq`` (list and replay dead letters).

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..config import Settings
from .common import console, err_console, non_negative_int, print_endpoints

if TYPE_CHECKING:
    from .common import Subparsers


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from ..consume import consume_json
    from ..topics import require_broker

    require_broker(settings)
    count = 0
    for line in consume_json(settings, args.topic, from_beginning=args.from_beginning, max_records=args.max):
        console.print(line, markup=False, soft_wrap=True)
        count += 1
    err_console.print(f"{count} records")
    return 0


def add_consume(sub: Subparsers) -> None:
    s = sub.add_parser("consume", help="print a topic's records as decoded JSON lines (read-committed)")
    s.add_argument("topic", help="topic name, with RECEIPTFLOW_TOPIC_PREFIX if one is set")
    s.add_argument("--from-beginning", action="store_true", help="read the retained records, not only new ones")
    s.add_argument("--max", type=non_negative_int, default=None, help="stop after this many records")
    s.set_defaults(func=cmd_consume)


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from collections import Counter

    from ..dlq import iter_dead_letters, replay
    from ..topics import require_broker

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
    print_endpoints(settings, "dlq replay:")
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


def add_dlq(sub: Subparsers) -> None:
    s = sub.add_parser("dlq", help="list dead letters, or replay them to their source topic after a fix")
    s.add_argument(
        "action", choices=("list", "replay"), help="list: the letters and why; replay: send them back to their source"
    )
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
