"""What the command modules share: the consoles, the endpoint line and the argument types."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING

from rich.console import Console

from ..config import Settings

if TYPE_CHECKING:
    from typing import TypeAlias

    # What ``ArgumentParser.add_subparsers()`` returns: each command module adds its parsers to it.
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)
log = logging.getLogger("receiptflow")


def print_endpoints(settings: Settings, what: str) -> None:
    d = settings.describe()
    err_console.print(
        f"[bold]{what}[/bold] kafka={d['kafka']} redis={d['redis']} warehouse={d['warehouse']} data_dir={d['data_dir']}"
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


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD, e.g. 2026-12-24") from None
