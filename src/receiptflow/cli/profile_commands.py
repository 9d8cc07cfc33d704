"""Profiles: ``profile`` (one card, as a role sees it), ``profiles rebuild`` and ``segments run``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from rich.table import Table

from ..config import Settings
from ..humanize import DEFAULT_ZONE, euros, percent
from ..progress import progress_bar
from .common import (
    add_look_options,
    card_id,
    console,
    err_console,
    looker_of,
    print_endpoints,
    require_data_dir,
    require_warehouse,
)

if TYPE_CHECKING:
    from ..jobs.looks import Looker
    from ..redis_auth import RedisRole
    from .common import Subparsers

T = TypeVar("T")


def cmd_profile(args: argparse.Namespace, settings: Settings) -> int:
    from ..redis_auth import RedisRole, given_password

    # Each view reads as its own role (deploy/redis/users.acl): marketing its projection only, with the
    # marketing key and no erasure salt; the card holder's own view the profile hashes; full, support.
    who = looker_of(args, settings) if args.view == "full" else None  # before anything connects
    role = {"marketing": RedisRole.MARKETING, "customer": RedisRole.CUSTOMER}.get(args.view, RedisRole.SUPPORT)
    if given_password(settings, role) is None:
        require_data_dir(settings, "profile")  # the generated role passwords are there
    if args.view == "marketing":
        from ..processors.profiles.projections import MarketingReader

        reader = MarketingReader.from_settings(settings)
        fields = reader.fields(args.card)
        from ..processors.profiles.marketing import marketing_doc

        doc = marketing_doc(args.card, fields) if fields else None
        as_of = f", figures as of {fields['at']}" if fields.get("at") else ""
    else:
        doc = _profile_doc(settings, role, args.card, args.view, who)
        as_of = ""
    if doc is None:
        err_console.print(f"no profile for card {args.card}")
        return 1
    if args.json:
        console.print_json(json.dumps(doc))
        return 0
    from .show import document_table

    shown = {k: v for k, v in doc.items() if k not in ("card_id", "view")}
    console.print(f"card {doc['card_id']}, {args.view} view (times in {DEFAULT_ZONE}{as_of})", markup=False)
    console.print(document_table(shown))
    return 0


def _profile_doc(
    settings: Settings, role: RedisRole, card: str, view: str, who: Looker | None
) -> dict[str, Any] | None:
    """The customer or full view of ``card`` read as ``role``; None when no profile is held. A look by
    ``who`` (the full view) is recorded in the audit of looks first: no entry, no look."""
    from ..processors.profiles.households import load_households, members
    from ..processors.profiles.store import RedisProfileStore
    from ..processors.profiles.views import render

    store = RedisProfileStore.from_settings(settings, role)
    if who is not None:
        from ..jobs.looks import record_look

        record_look(store.client, who, "profile-full", store.erased_hash(card))
    profile = store.get(card, with_seen=view == "full")
    if profile is None:
        return None
    household: dict[str, int] | None = None
    if settings.profiles.households_file is not None:
        cards = members(load_households(settings.profiles.households_file), card)
        household = {c: p.points for c, p in store.get_many(cards, with_seen=False).items()}
    segments = store.segments(card)
    return render(profile, view, datetime.now(UTC), household=household, segments=segments)


def add_profile(sub: Subparsers) -> None:
    s = sub.add_parser("profile", help="show a card's profile from Redis, as one role sees it")
    s.add_argument("card", type=card_id, help="the loyalty card id")
    s.add_argument(
        "--view",
        choices=("customer", "marketing", "full"),
        default="customer",
        help="customer: the card holder's own view; marketing: only what consent allows; full: everything",
    )
    s.add_argument("--json", action="store_true", help="the stored values as JSON (cents, UTC), for machines")
    add_look_options(s, " (--view full)")
    s.set_defaults(func=cmd_profile)


def _profile_batch(settings: Settings, what: str, unit: str, job: Callable[..., T]) -> T:
    """Run a batch job over the warehouse and the profile store, with a progress bar on stderr.

    ``job(warehouse, store, progress=..., metrics=...)``; the job's metrics go to
    ``RECEIPTFLOW_METRICS_TEXTFILE`` when it is set, since nothing scrapes a batch command live.
    """
    from ..metrics import Metrics, write_textfile
    from ..processors.profiles.store import RedisProfileStore
    from ..sinks import open_sink

    metrics = Metrics()
    store = RedisProfileStore.from_settings(settings)
    sink = open_sink(settings)
    try:
        with progress_bar(what, unit, err_console) as bar:
            task = bar.add_task(what, total=None)
            result = job(
                sink.warehouse,
                store,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                metrics=metrics,
            )
    finally:
        sink.close()
    if settings.metrics.textfile is not None:
        write_textfile(metrics, settings.metrics.textfile)
    return result


def cmd_profiles(args: argparse.Namespace, settings: Settings) -> int:
    from ..jobs.profile_rebuild import rebuild

    if args.redis_url is not None:
        settings = settings.model_copy(update={"redis": {"url": args.redis_url}})
    print_endpoints(settings, f"profiles {args.action}:")
    require_warehouse(settings, f"profiles {args.action}")
    if args.action == "project":
        from ..jobs.profile_rebuild import project_all

        job = partial(project_all, cards_per_batch=args.cards_per_batch)
        written = _profile_batch(settings, "project", "cards", job)
        console.print(f"rewrote {written} marketing projections as of today (UTC)")
        return 0
    from ..broker_check import require_broker

    require_broker(settings)  # it reads the erased-cards topic first
    from ..jobs.subject import record_erased_in_profiles
    from ..processors.profiles.store import RedisProfileStore

    # Before any profile is written: the target may be a new Redis that never saw an erasure.
    record_erased_in_profiles(settings, RedisProfileStore.from_settings(settings))
    stats = _profile_batch(
        settings,
        "rebuild",
        "purchases and consent changes",
        partial(rebuild, cards_per_batch=args.cards_per_batch),
    )
    console.print(
        f"rebuilt {stats.cards} profiles: {stats.purchases} purchases and {stats.consent_changes} consent changes "
        f"applied in {stats.round_trips} round trips; {stats.erased} purchases of erased cards left out"
    )
    return 0


def add_profiles(sub: Subparsers) -> None:
    s = sub.add_parser(
        "profiles", help="rebuild every customer profile, or its marketing projection, from the warehouse"
    )
    s.add_argument(
        "action",
        choices=("rebuild", "project"),
        help="rebuild: from the warehouse, with the live path's rules; project: rewrite every marketing "
        "projection as of today (run daily)",
    )
    s.add_argument("--redis-url", help="rebuild into this Redis instead of RECEIPTFLOW_REDIS_URL")
    s.add_argument("--cards-per-batch", type=int, default=500, help="cards read from the warehouse at a time")
    s.set_defaults(func=cmd_profiles)


def cmd_segments(args: argparse.Namespace, settings: Settings) -> int:
    from ..jobs.segments import load_model, month_bounds, run_segments

    month_bounds(args.month)  # a usage error before anything connects
    model = load_model(settings.profiles.segments_file)
    print_endpoints(settings, f"segments run ({args.month}, model {model.version}):")
    require_warehouse(settings, "segments run")
    run = _profile_batch(
        settings,
        "segments",
        "cards",
        partial(
            run_segments,
            month=args.month,
            model=model,
            default_product_data=settings.privacy.default_product_data_marketing,
        ),
    )
    if run.cards == 0:
        console.print(f"no receipts in {run.month}: {months_with_data(settings)}", soft_wrap=True)
        return 0
    console.print(f"{run.month}: {run.cards} active cards, model {run.model}")
    visits = [
        (f"{name} (from {low} receipts)", run.per_visits_class.get(name, 0)) for low, name in model.visits_classes
    ]
    money = [(f"{name} (from {euros(low)})", run.per_money_class.get(name, 0)) for low, name in model.money_classes]
    segments = [
        ("none (no product-data consent or no grocery spend)" if name == "-" else name, n)
        for name, n in sorted(run.per_segment.items(), key=lambda kv: (kv[0] == "-", -kv[1], kv[0]))
    ]
    for title, rows in (("visits class", visits), ("money class", money), ("grocery segment", segments)):
        console.print(bar_chart(title, rows, run.cards, console.width))
    console.print(
        f"stored in {run.stored + run.stored_without_segment} profiles ({run.stored} with a grocery segment); "
        f"{run.no_profile} cards without a profile and {run.erased} erased cards skipped"
    )
    return 0


def bar_chart(title: str, rows: Sequence[tuple[str, int]], total: int, width: int) -> Table:
    """Cards per class as bars scaled to the largest class, with count and share: a chart in the terminal."""
    table = Table(title, "cards", "share", "", box=None, title_justify="left", pad_edge=False)
    table.columns[0].no_wrap = True
    longest = max([len(label) for label, _ in rows] + [len(title)])
    room = max(width - longest - 20, 5)
    top = max([n for _, n in rows] + [1])
    for label, n in rows:
        table.add_row(label, str(n), percent(n / total if total else 0.0, 0), "█" * round(room * n / top))
    return table


def months_with_data(settings: Settings) -> str:
    """Which months the warehouse holds receipts for (by the register's local date), for an empty month."""
    from ..sinks.read_only import query

    found = query(
        settings,
        "SELECT CAST(EXTRACT(YEAR FROM event_local_date) AS INTEGER) AS y, "
        "CAST(EXTRACT(MONTH FROM event_local_date) AS INTEGER) AS m, count(*) AS n "
        "FROM receipts GROUP BY 1, 2 ORDER BY 1, 2",
    )
    if not found.rows:
        return "the warehouse holds no receipts yet"
    held = ", ".join(f"{y:04d}-{m:02d} ({n} receipts)" for y, m, n in found.rows)
    return f"the warehouse holds receipts for {held}"


def add_segments(sub: Subparsers) -> None:
    s = sub.add_parser("segments", help="assign a month's active cards to segments and store them in the profiles")
    s.add_argument("action", choices=("run",), help="run: classify the month and store it in the profiles")
    s.add_argument("--month", required=True, help="YYYY-MM (receipts by the register's local date)")
    s.set_defaults(func=cmd_segments)
