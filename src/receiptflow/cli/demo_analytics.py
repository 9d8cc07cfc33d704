"""The demo's analytics: a sale day that is over, waiting for its windows, and the check against the truth.

The aggregator publishes a chain's day only once the day is over (see ``processors/aggregate``). So
the demo's registers sell on a past day -- the day before today, or the day before the earliest day
an earlier demo run used, so that no basket of this run falls in a window already closed (it would
be late and dropped) -- and its processor closes a window once it has read everything and heard
nothing for a few seconds, instead of waiting the production grace.

The summary then checks, per window of this run: the baskets the aggregator counted equal the
simulator's, every cell it published is in the warehouse, and the money of the whole-day cells plus
the days withheld (fewer than k baskets) equals the simulator's total.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

from ..config import Settings
from ..consume import reader
from ..humanize import euros
from ..metrics import Metrics
from ..processors.aggregate.clients import read_closed
from ..processors.aggregate.marker import Marker
from ..topics import TopicNames

HELSINKI = ZoneInfo("Europe/Helsinki")
# The demo's day is over: its windows close a few seconds after the aggregator has read everything.
DEMO_ANALYTICS_ENV = {"RECEIPTFLOW_ANALYTICS_GRACE_SECONDS": "60", "RECEIPTFLOW_ANALYTICS_IDLE_CLOSE_SECONDS": "3"}

Check = tuple[str, int, int, Callable[[int], str]]


def closed_windows(settings: Settings) -> dict[str, Marker]:
    """Every closed window's marker (window id -> marker), read to the end of ``analytics.windows``."""
    return read_closed(reader(settings, "demo-windows"), TopicNames(settings.kafka.topic_prefix).analytics_windows)


def sale_start(settings: Settings, now: datetime) -> datetime:
    """10:00 in Helsinki on a day that is over and that no earlier demo run sold on."""
    day = now.astimezone(HELSINKI).date() - timedelta(days=1)
    used = [m.local_date for m in closed_windows(settings).values()]
    if used:
        day = min(day, min(used) - timedelta(days=1))
    return datetime.combine(day, clock_time(10), HELSINKI)


def wait_for_windows(settings: Settings, metrics: Metrics, truth: Any, deadline: float) -> dict[str, Marker]:
    """Wait until every window of this run is closed and its cells are in the warehouse (or the deadline)."""
    want = set(truth.windows)
    markers: dict[str, Marker] = {}
    while time.monotonic() < deadline:
        markers = {w: m for w, m in closed_windows(settings).items() if w in want}
        stored = metrics.registry.get_sample_value("receiptflow_warehouse_rows_total", {"table": "analytics.cells"})
        if set(markers) == want and (stored or 0) >= sum(m.cells for m in markers.values()):
            break
        time.sleep(1.0)
    return markers


def analytics_checks(truth: Any, markers: dict[str, Marker], warehouse: Any) -> tuple[list[Check], str]:
    """The summary's analytics rows (expected from the simulator, observed in the markers and the
    warehouse) and one line saying how much the cells published."""
    ids = sorted(markers)
    day_cells: dict[str, tuple[int, int]] = {}
    refund_cells: dict[str, int] = {}
    stored = 0
    if ids:
        marks = ", ".join(f"'{w}'" for w in ids)  # window ids are chain/date: letters, digits, '-', '_', '/'
        rows = warehouse.query(
            f"SELECT window_id, family, baskets, amount_cents FROM analytics.cells WHERE window_id IN ({marks}) "
            "AND family IN ('chain_day', 'refunds')"
        )
        for window, family, baskets, cents in rows:
            if family == "chain_day":
                day_cells[str(window)] = (int(baskets), int(cents))
            else:
                refund_cells[str(window)] = int(cents)
        stored = int(warehouse.query(f"SELECT count(*) FROM analytics.cells WHERE window_id IN ({marks})")[0][0])
    counted = sum(m.sale_baskets + m.refund_baskets + m.late_baskets for m in markers.values())
    money = sum(
        day_cells.get(w, (0, m.sale_cents))[1] + refund_cells.get(w, m.refund_cents) for w, m in markers.items()
    )
    published = sum(n for n, _ in day_cells.values())
    checks: list[Check] = [
        ("anonymous baskets in closed windows", sum(b for b, _ in truth.windows.values()), counted, str),
        ("analytics cells in the warehouse", sum(m.cells for m in markers.values()), stored, str),
        ("whole-day cells + days withheld", sum(c for _, c in truth.windows.values()), money, euros),
    ]
    k = max((m.k for m in markers.values()), default=0)
    line = (
        f"analytics: {len(markers)} chain-days closed; {published} sale baskets in published whole-day cells, "
        f"{sum(m.sale_baskets for m in markers.values()) - published} in days of fewer than k = {k} baskets "
        "(withheld)"
    )
    return checks, line


def demo_env(environ: dict[str, str]) -> dict[str, str]:
    """The processor's environment: the demo's analytics timing unless the environment sets its own."""
    return {**DEMO_ANALYTICS_ENV, **environ}


__all__ = ["DEMO_ANALYTICS_ENV", "analytics_checks", "closed_windows", "demo_env", "sale_start", "wait_for_windows"]
