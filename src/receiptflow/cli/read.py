"""Reading topics: ``consume`` (decoded JSON lines) and ``dlq`` (list and replay dead letters).

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ..config import Settings
from ..humanize import local_time
from .common import console, err_console, non_negative_int, print_endpoints

if TYPE_CHECKING:
    from ..dlq import DeadLetter
    from .common import Subparsers


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from ..broker_check import require_broker
    from ..consume import consume_json

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

    from ..broker_check import require_broker
    from ..dlq import iter_dead_letters, replay_letters

    require_broker(settings)
    if args.action == "list":
        reasons: Counter[str] = Counter()
        shown: list[DeadLetter] = []
        for d in iter_dead_letters(settings, from_offset=args.from_offset or 0, reason=args.reason):
            reasons[d.reason] += 1
            if args.max is None or len(shown) < args.max:
                shown.append(d)
        print_dead_letters(console, shown)
        summary = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "none"
        err_console.print(f"{sum(reasons.values())} dead letters ({summary})")
        return 0
    print_endpoints(settings, "dlq replay:")
    with err_console.status("replaying...") as status:
        result = replay_letters(
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
        f"replayed {result.replayed} dead letters from offset {result.started_at}, {result.sent} records sent "
        f"({result.skipped_empty} without a value){repeats}",
        soft_wrap=True,
    )
    if result.erased:
        console.print(
            f"skipped {result.erased} dead letters of erased cards: their records are not restored", soft_wrap=True
        )
    if result.unreadable:
        console.print(
            f"skipped {result.unreadable} dead letters that do not open (their data key is missing without an "
            "erasure, or the letter was altered): restore the vault's Redis from its backup to replay them",
            soft_wrap=True,
        )
    return 0


DLQ_HEADER = ("offset", "rejected", "reason", "from", "consumer", "card", "why")


def card_cell(d: DeadLetter) -> str:
    """The card of a letter as a list shows it: the start of its salted hash, never the card id."""
    if d.card_hash is None:
        return "-"
    return d.card_hash[:12] + (" erased" if d.payload == "withheld" else "")


def dead_letter_row(d: DeadLetter) -> tuple[str, str, str, str, str, str, str]:
    field = f" ({d.field})" if d.field else ""
    when = local_time(d.failed_at, seconds=False) if d.failed_at is not None else "-"
    return (
        str(d.offset),
        when,
        d.reason,
        f"{d.source_topic}[{d.source_partition}]@{d.source_offset}",
        d.consumer,
        card_cell(d),
        d.message + field,
    )


def print_dead_letters(out: Console, letters: Sequence[DeadLetter]) -> None:
    """At a terminal a table that fits its width (the reason wraps); into a pipe one whole line per letter."""
    rows = [dead_letter_row(d) for d in letters]
    if not rows:
        return  # the count on stderr says "0 dead letters"
    if out.is_terminal:
        table = Table(*DLQ_HEADER)
        for column in table.columns[:3]:
            column.no_wrap = True
        for column in table.columns[3:]:
            column.overflow = "fold"  # folds rather than being cut short
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    last = len(DLQ_HEADER) - 1
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(DLQ_HEADER[:last])]
    for row in [DLQ_HEADER, *rows]:
        cells = [c.ljust(w) if i else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        out.print("  ".join([*cells, row[last]]), markup=False, highlight=False, soft_wrap=True)


def add_dlq(sub: Subparsers) -> None:
    s = sub.add_parser("dlq", help="list dead letters, or replay them to their source topic after a fix")
    s.add_argument(
        "action",
        choices=("list", "replay"),
        help="list: the letters, why and who rejected them (a card by its salted hash, never its id); "
        "replay: send them back to their source (never a record of an erased card)",
    )
    s.add_argument("--reason", help="only dead letters of this reason code")
    s.add_argument(
        "--from-offset",
        type=non_negative_int,
        default=None,
        help="dead-letter topic offset to start at (list default: 0; replay default: where the last replay stopped)",
    )
    s.add_argument("--max", type=non_negative_int, default=None, help="list: print at most this many")
    s.add_argument("--to-topic", help="replay: send here instead of each record's source topic")
    s.set_defaults(func=cmd_dlq)
