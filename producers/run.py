"""Run the simulator against Kafka at a given rate with a progress display (``receiptflow simulate``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..config import Settings
from ..errors import BrokerError
from ..metrics import Metrics
from .client import RegisterClient
from .simulator import GroundTruth, Simulator


def simulate(
    settings: Settings,
    *,
    stores: int,
    customers: int,
    rate: float,
    duration: float,
    seed: int,
    console: Console | None = None,
    metrics: Metrics | None = None,
    start: datetime | None = None,
) -> GroundTruth:
    """Send ``rate * duration`` checkouts, paced in real time; returns what was sent (all acknowledged)."""
    sim = Simulator(seed, stores=stores, customers=customers)
    client = RegisterClient(settings, metrics=metrics)
    total = max(1, int(rate * duration))
    begin = time.monotonic()
    t0 = start or datetime.now(UTC)
    with Progress(
        TextColumn("registers"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("checkouts"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("send", total=total)
        for i, checkout in enumerate(sim.stream(total, t0, rate)):
            # Pace in real time: a register fleet sells at `rate`, it does not dump a backlog.
            ahead = begin + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            client.send(checkout)
            progress.advance(task)
    stats = client.flush(60)
    if stats.failed:
        raise BrokerError(f"{stats.failed} checkouts were not acknowledged: {stats.errors[:3]}")
    return sim.truth
