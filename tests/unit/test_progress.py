"""The progress bar shows, once the work is done, how long it took (not a remaining 0:00:00)."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from receiptflow.progress import progress_bar

pytestmark = pytest.mark.unit


def test_a_finished_bar_shows_the_time_it_took() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    bar = progress_bar("registers", "checkouts", console)
    task = bar.add_task("sell", total=2)
    bar.start_task(task)
    bar.advance(task, 2)
    # Pretend it ran for 65 s: the task's start lies in the past.
    bar.tasks[0].start_time = time.monotonic() - 65
    bar.tasks[0].finished_time = 65.0
    row = bar.make_tasks_table(bar.tasks)
    console.print(row)
    text = out.getvalue()
    assert "0:01:05" in text and "2/2" in text
