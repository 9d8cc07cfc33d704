"""Subject access and erasure: ``export`` and ``erase``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..humanize import euros, local_time
from .common import (
    add_look_options,
    card_id,
    console,
    err_console,
    looker_of,
    print_data_dir,
    print_endpoints,
    require_warehouse,
)

if TYPE_CHECKING:
    from .common import Subparsers


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from ..broker_check import require_broker
    from ..jobs.subject import export_card

    who = looker_of(args, settings)  # before anything connects
    print_data_dir(settings)
    require_warehouse(settings, "export")
    require_broker(settings)  # the export says what the topics still hold
    doc = export_card(settings, args.card, who=who)
    console.print_json(json.dumps(doc, default=str))
    err_console.print(export_summary(doc), markup=False, highlight=False, soft_wrap=True)
    for entry in doc.get("consent_history") or []:
        err_console.print(f"  {entry['when']}: {entry['what']}; {entry['how']}", markup=False, highlight=False)
    return 0


def export_summary(doc: Mapping[str, Any]) -> str:
    """The export in one line for the person who asked: what is held, in euros and local time."""
    parts: list[str] = []
    profile = doc.get("profile")
    if profile:
        last = profile.get("last_purchase")
        when = f", last {local_time(last)}" if last else ""
        parts.append(f"profile {profile['visits']} visits, {euros(profile['spend_cents'])}{when}")
    warehouse = doc.get("warehouse") or {}
    receipts = warehouse.get("receipts") or []
    if receipts:
        total = sum(int(r.get("total_cents") or 0) for r in receipts)
        parts.append(
            f"warehouse {len(receipts)} receipts ({euros(total)}), {len(warehouse.get('receipt_items') or [])} lines"
        )
    consents = doc.get("consent_history") or []
    if consents:
        parts.append(f"{len(consents)} consent changes")
    erasure = doc.get("erasure")
    if erasure:
        state = "complete" if erasure.get("complete") else "incomplete: run erase again"
        parts.append(f"erased {local_time(erasure['erased_at'])} ({state})")
    held = "; ".join(parts) if parts else "nothing held"
    return f"card {doc['card_id']}: {held}"


def add_export(sub: Subparsers) -> None:
    s = sub.add_parser(
        "export", help="subject access: everything held about a card, as JSON (a one-line summary on stderr)"
    )
    s.add_argument("card", type=card_id, help="the loyalty card id")
    add_look_options(s)
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
    require_warehouse(settings, "erase")
    e = erase_card(settings, args.card)
    rows = ", ".join(f"{t} {n}" for t, n in sorted(e.warehouse_rows.items()))
    resumed = f"completed the erasure recorded at {local_time(e.at)}; " if e.resumed else ""
    console.print(
        f"erased: {resumed}{e.redis_keys} Redis keys, warehouse rows: {rows}, {e.tombstones} tombstone(s); "
        f"{len(e.audit_ids)} audit entries up to {e.audit_id} (subject {e.subject}); "
        f"`.venv/bin/receiptflow export {args.card} --reason '...'` says until when topics may still hold its "
        "records",
        soft_wrap=True,
    )
    return 0


def add_erase(sub: Subparsers) -> None:
    s = sub.add_parser(
        "erase",
        help="erase a card: record it on the erased-cards topic, then Redis, the warehouse and its consents; "
        "audited per step, refused before any change when a store is unavailable, resumable",
    )
    s.add_argument("card", nargs="?", type=card_id, help="the loyalty card id")
    s.add_argument("--yes", action="store_true", help="really erase")
    s.add_argument(
        "--record-existing",
        action="store_true",
        help="put cards erased before the erased-cards topic existed (in Redis or the warehouse) on it",
    )
    s.set_defaults(func=cmd_erase)
