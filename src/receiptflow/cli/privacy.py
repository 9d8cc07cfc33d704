"""Subject access and erasure: ``export`` and ``erase``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..config import Settings
from .common import console, err_console, print_endpoints

if TYPE_CHECKING:
    from .common import Subparsers


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from ..jobs.subject import export_card
    from ..topics import require_broker

    require_broker(settings)  # the export says what the topics still hold
    doc = export_card(settings, args.card)
    console.print_json(json.dumps(doc, default=str))
    return 0


def add_export(sub: Subparsers) -> None:
    s = sub.add_parser("export", help="subject access: everything held about a card, as JSON")
    s.add_argument("card")
    s.set_defaults(func=cmd_export)


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from ..jobs.subject import erase_card, record_existing

    if args.record_existing:
        if args.card is not None:
            err_console.print("erase --record-existing takes no card")
            return 2
        print_endpoints(settings, "erase --record-existing:")
        n = record_existing(settings)
        console.print(f"recorded {n} earlier erasure(s) on the erased-cards topic")
        return 0
    if args.card is None:
        err_console.print("erase needs a CARD (or --record-existing)")
        return 2
    if not args.yes:
        err_console.print(f"erase deletes everything held about card {args.card}; repeat with --yes to proceed")
        return 2
    print_endpoints(settings, "erase:")
    e = erase_card(settings, args.card)
    rows = ", ".join(f"{t} {n}" for t, n in sorted(e.warehouse_rows.items()))
    resumed = f"completed the erasure recorded at {e.at.isoformat()}; " if e.resumed else ""
    console.print(
        f"erased: {resumed}{e.redis_keys} Redis keys, warehouse rows: {rows}, {e.tombstones} tombstone(s); "
        f"{len(e.audit_ids)} audit entries up to {e.audit_id} (subject {e.subject}); "
        "`receiptflow export` says until when topics may still hold its records"
    )
    return 0


def add_erase(sub: Subparsers) -> None:
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
