"""What the command modules share: the consoles, the endpoint and data-folder lines, the argument types."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..config import Settings
from ..errors import ConfigError

if TYPE_CHECKING:
    from typing import TypeAlias

    # What ``ArgumentParser.add_subparsers()`` returns: each command module adds its parsers to it.
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

    from ..jobs.looks import Looker

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)
log = logging.getLogger("receiptflow")


def print_endpoints(settings: Settings, what: str) -> None:
    d = settings.describe()
    err_console.print(
        f"[bold]{what}[/bold] kafka={d['kafka']} redis={d['redis']} warehouse={d['warehouse']} data_dir={d['data_dir']}"
    )


def print_data_dir(settings: Settings) -> None:
    """One line on stderr naming the data folder a command uses (the one absolute path, see config)."""
    err_console.print(f"data dir {settings.local.data_dir}", markup=False, highlight=False, soft_wrap=True)


def duckdb_file(settings: Settings) -> Path | None:
    """The DuckDB warehouse file, None when the warehouse is PostgreSQL."""
    from ..sinks.runner import duckdb_path

    url = settings.resolved_warehouse_url
    return duckdb_path(url) if url.startswith("duckdb:") else None


def require_data_dir(settings: Settings, command: str) -> None:
    """Refuse to start a local install's command in a data folder that does not exist.

    The embedded stack's role passwords and install secrets live there; a new, empty folder would
    get new ones that no server knows (a production install is given its secrets instead).
    """
    if settings.is_production or settings.local.data_dir.is_dir():
        return
    raise ConfigError(
        f"{command}: no data folder at {settings.local.data_dir} ({settings.data_dir_origin}); it holds the embedded "
        "stack's passwords and warehouse: run it from the folder where `stack up` ran, or set RECEIPTFLOW_DATA_DIR"
    )


def require_warehouse(settings: Settings, command: str) -> None:
    """Refuse to read a DuckDB warehouse that is not there: opening it would create an empty one.

    Run from another directory, the default data folder is another folder, and an empty warehouse
    would answer as if the card or the month held nothing.
    """
    path = duckdb_file(settings)
    if path is None or path.exists():
        return
    require_data_dir(settings, command)
    raise ConfigError(
        f"{command}: no warehouse at {path} (data dir {settings.local.data_dir}: {settings.data_dir_origin}); "
        "run it from the folder that holds the stack's data, or set RECEIPTFLOW_DATA_DIR"
    )


def _number(kind: Callable[[str], float], low: float | None, high: float | None, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if math.isnan(value) or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, None, "a whole number of at least 1")
non_negative_int = _number(int, 0, None, "a whole number of at least 0")
positive_float = _number(float, 1e-9, None, "a number above 0")
non_negative_float = _number(float, 0.0, None, "a number of at least 0")
fraction = _number(float, 0.0, 1.0, "a share between 0 and 1")
# Checkouts per second a simulated fleet may be asked for: far above what a whole chain sells (tens a
# second) and the simulator sends (about a thousand), so it only refuses a slip such as 1e12, which
# would queue more sales than any outbox holds and never finish.
MAX_RATE = 100_000
rate = _number(float, 1e-9, MAX_RATE, f"a rate above 0 and at most {MAX_RATE:,} checkouts per second")
RATE_HELP = f"checkouts per second, at most {MAX_RATE:,}"


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD, e.g. 2026-12-24") from None


def zoned_time(text: str) -> datetime:
    """An ISO-8601 time with its zone, as ``--from-time`` takes it."""
    from ..errors import ValidationError
    from ..field_values import parse_time

    try:
        return parse_time(text, "time")
    except ValidationError as exc:
        problem = f"{text!r} has no zone" if exc.reason == "naive_time" else f"{text!r} is not a time"
        raise argparse.ArgumentTypeError(
            f"{problem}: use ISO-8601 with a zone, e.g. 2026-12-24T08:00:00+02:00"
        ) from None


def card_id(text: str) -> str:
    """A loyalty card id as a command takes it: not empty or blank, nothing invisible in it (the
    same rule as the card ids a checkout may carry, so no card that could be stored is refused)."""
    from ..errors import ValidationError
    from ..validation import check_text

    try:
        check_text(text, "it")  # "it is empty", "it contains U+200B"
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a card id: {exc.message}") from None
    return text


def add_look_options(parser: argparse.ArgumentParser, when: str = "") -> None:
    """``--as`` and ``--reason``: who looks at a card and why, recorded in the audit of looks before the look."""
    parser.add_argument(
        "--as",
        dest="principal",
        metavar="LOGIN",
        help=f"your staff login, recorded in the audit of looks{when} (default: RECEIPTFLOW_OPERATOR; required)",
    )
    parser.add_argument(
        "--reason",
        help=f"why you look (a ticket, the card holder's request), recorded in the audit of looks{when}; required",
    )


def looker_of(args: argparse.Namespace, settings: Settings) -> Looker:
    """Who looks and why, from ``--as``/``RECEIPTFLOW_OPERATOR`` and ``--reason``; UsageError when either is missing."""
    from ..jobs.looks import looker

    return looker(args.principal or settings.privacy.operator, args.reason)
