"""Run the simulated register fleet against Kafka in real time (``receiptflow simulate``, the demo).

Sales go through a durable :class:`~receiptflow.producers.outbox.Outbox`, exactly as a register
would send them: accepted on disk first, sent by the background sender. Injected faults (repeated
deliveries, bad input, consent changes, out-of-order delivery) travel the same way, and everything
is recorded in the simulator's ground truth.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..codec import Codec
from ..config import Settings
from ..errors import BrokerError
from ..metrics import Metrics
from ..topics import TopicNames
from .outbox import Outbox
from .simulator import GroundTruth, Simulator, Traffic


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
    dup_rate: float = 0.0,
    bad_rate: float = 0.0,
    consent_change_rate: float = 0.0,
    out_of_order_rate: float = 0.0,
    initial_consents: bool = True,
    outbox_path: Path | None = None,
    drain_timeout: float = 120.0,
) -> GroundTruth:
    """Sell ``rate * duration`` checkouts paced in real time; returns the ground truth once all are acknowledged."""
    codec = Codec()
    sim = Simulator(seed, stores=stores, customers=customers)
    traffic = Traffic(
        sim,
        lambda c: codec.encode("checkout", c.to_avro()),
        dup_rate=dup_rate,
        bad_rate=bad_rate,
        consent_change_rate=consent_change_rate,
        out_of_order_rate=out_of_order_rate,
    )
    names = TopicNames(settings.topic_prefix)
    outbox = Outbox(
        outbox_path or settings.data_dir / "outbox" / f"simulator-{seed}.sqlite3",
        settings,
        codec=codec,
        metrics=metrics,
    )
    outbox.start()
    total = max(1, int(rate * duration))
    t0 = start or datetime.now(UTC)
    try:
        if initial_consents:
            for e in traffic.initial_consents(t0 - timedelta(days=1)):
                assert e.consent is not None
                outbox.accept_consent(e.consent)
        begin = time.monotonic()
        with Progress(
            TextColumn("registers"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("checkouts"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("sell", total=total)
            sold = 0
            for e in traffic.emissions(total, t0, rate):
                if e.kind == "checkout" and e.checkout is not None:
                    # Pace in real time: a fleet sells at `rate`, it does not dump a backlog.
                    ahead = begin + sold / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                    outbox.accept(e.checkout)
                    sold += 1
                    progress.advance(task)
                elif e.kind == "duplicate" and e.checkout is not None:
                    outbox.accept(e.checkout)
                elif e.kind == "consent" and e.consent is not None:
                    outbox.accept_consent(e.consent)
                elif e.raw is not None:
                    outbox.accept_raw(names.checkouts, e.label.encode(), e.raw, e.label)
        if not outbox.drain(drain_timeout):
            raise BrokerError(f"{outbox.pending()} sales still in the outbox after {drain_timeout:.0f}s")
    finally:
        outbox.close()
    return sim.truth
