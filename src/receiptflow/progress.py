"""The one progress bar of the long commands (simulate, sink replay, profiles rebuild, segments run).

Five columns: what runs, the bar, done/total, the unit counted, the time left (once the work is done:
the time it took, instead of a remaining ``0:00:00``). The simulator draws
it too, so it sits in the shared core, below the producers and the command line.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_bar(what: str, unit: str, console: Console | None) -> Progress:
    """A bar labelled ``what`` that counts ``unit`` on ``console`` (None: rich's own); a context manager."""
    columns = (
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(elapsed_when_finished=True),
    )
    return Progress(*columns, console=console)
