"""The warehouse: ``sql`` (one read-only query, printed for people or as JSON) and ``warehouse setup``
(the owner's job: migrations and the workers' PostgreSQL logins).

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ..config import Settings
from ..humanize import euros, local_time, percent
from .common import console, print_data_dir, print_endpoints, require_warehouse

if TYPE_CHECKING:
    from .common import Subparsers


def cell(column: str, value: Any) -> str:
    """One value as a person reads it: cents in euros, shares in per cent, moments in local time."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float | Decimal) and "cents" in column:
        return euros(round(value))
    if isinstance(value, float | Decimal) and "share" in column:
        return percent(float(value))
    if isinstance(value, datetime) and value.tzinfo is not None:
        return local_time(value)
    if isinstance(value, float | Decimal):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, date | datetime):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return str(value)


def heading(column: str) -> str:
    """``amount_cents`` → ``amount (€)``: the column as :func:`cell` shows it."""
    if column.endswith("_cents"):
        return column.removesuffix("_cents") + " (€)"
    if "_cents_" in column:
        return column.replace("_cents_", "_") + " (€)"
    return column


def table_of(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    table = Table(*(heading(c) for c in columns), title=title)
    for row in rows:
        table.add_row(*(cell(c, v) for c, v in zip(columns, row, strict=True)))
    return table


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from ..sinks.read_only import query

    print_data_dir(settings)
    require_warehouse(settings, "sql")
    result = query(settings, args.statement, role=args.role)
    if args.json:
        for row in result.rows:
            console.print(json.dumps(dict(zip(result.columns, row, strict=True)), default=_plain), markup=False)
        return 0
    console.print(table_of(result.columns, result.rows))
    console.print(f"{len(result.rows)} rows", highlight=False)
    return 0


def _plain(value: Any) -> Any:
    """JSON for what the drivers return beyond JSON's types: numbers stay numbers, times ISO 8601."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def add_sql(sub: Subparsers) -> None:
    s = sub.add_parser(
        "sql",
        help="run one read-only SQL query on the warehouse (DuckDB opened read-only; "
        "a read-only session on PostgreSQL) and print the rows",
    )
    s.add_argument(
        "statement",
        help='one query, quoted: "SELECT * FROM analytics.chain_daily_sales"; '
        "card-linked tables in the default schema, the anonymous cells and their views in analytics.",
    )
    s.add_argument(
        "--role",
        default=None,
        help="PostgreSQL: run as this group role, e.g. receiptflow_analyst (the login must be a member)",
    )
    s.add_argument("--json", action="store_true", help="one JSON object per row, stored values (cents, UTC)")
    s.set_defaults(func=cmd_sql)


def cmd_warehouse(args: argparse.Namespace, settings: Settings) -> int:
    from ..errors import UsageError
    from ..secrets import checked
    from ..sinks.logins import SINK_GROUP, SUPPORT_GROUP, Login, set_up_logins

    if not settings.resolved_warehouse_url.startswith("postgres"):
        raise UsageError(
            "warehouse setup is for a PostgreSQL warehouse: DuckDB has no logins (a sink migrates its file itself)"
        )
    w = settings.warehouse
    logins = [
        Login(user, group, checked(settings, variable, password.get_secret_value()))
        for user, group, variable, password in (
            (w.sink_user, SINK_GROUP, "RECEIPTFLOW_WAREHOUSE_SINK_PASSWORD", w.sink_password),
            (w.support_user, SUPPORT_GROUP, "RECEIPTFLOW_WAREHOUSE_SUPPORT_PASSWORD", w.support_password),
        )
        if password is not None
    ]
    print_endpoints(settings, "warehouse setup:")
    made = set_up_logins(settings.warehouse_connection_url(), logins)
    which = f"; logins {', '.join(made)} set up" if made else "; no login password given, so no login changed"
    console.print(f"warehouse migrated{which}", highlight=False)
    return 0


def add_warehouse(sub: Subparsers) -> None:
    s = sub.add_parser(
        "warehouse",
        help="setup: as the PostgreSQL owner, apply the migrations and create or update the workers' logins "
        "(RECEIPTFLOW_WAREHOUSE_SINK_PASSWORD, RECEIPTFLOW_WAREHOUSE_SUPPORT_PASSWORD)",
    )
    s.add_argument("action", choices=("setup",), help="setup: migrations, then the workers' logins")
    s.set_defaults(func=cmd_warehouse)
