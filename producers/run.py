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

from ..config import Settings
from ..errors import BrokerError
from ..metrics import Metrics
from ..progress import progress_bar
from ..registry import codec_for
from ..topics import TopicNames
from .outbox import Outbox
from .simulator import Simulator, Traffic
from .truth import GroundTruth

# Waiting for the outbox to empty stops early when the broker has taken nothing for this long.
DRAIN_STALL_SECONDS = 15.0


def _drain(outbox: Outbox, timeout: float) -> bool:
    """Wait for the outbox to empty: at most ``timeout`` s, and at most DRAIN_STALL_SECONDS without progress."""
    deadline = time.monotonic() + timeout
    last, progress_at = outbox.pending(), time.monotonic()
    while last > 0:
        now = time.monotonic()
        if now > deadline or now - progress_at > DRAIN_STALL_SECONDS:
            return False
        time.sleep(0.1)
        pending = outbox.pending()
        if pending < last:
            last, progress_at = pending, time.monotonic()
    return True


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
    codec = codec_for(settings)
    sim = Simulator(seed, stores=stores, customers=customers)
    traffic = Traffic(
        sim,
        lambda c: codec.encode("checkout", c.to_avro()),
        dup_rate=dup_rate,
        bad_rate=bad_rate,
        consent_change_rate=consent_change_rate,
        out_of_order_rate=out_of_order_rate,
    )
    outbox = Outbox(
        outbox_path or settings.local.data_dir / "outbox" / f"simulator-{seed}.sqlite3",
        settings,
        codec=codec,
        metrics=metrics,
    )
    outbox.start()
    t0 = start or datetime.now(UTC)
    try:
        if initial_consents:
            for e in traffic.initial_consents(t0 - timedelta(days=1)):
                assert e.consent is not None
                outbox.accept_consent(e.consent)
        _sell(traffic, outbox, TopicNames(settings.kafka.topic_prefix), max(1, int(rate * duration)), t0, rate, console)
        if not _drain(outbox, drain_timeout):
            path = outbox.path
            raise BrokerError(
                f"Kafka at {settings.kafka.bootstrap_servers} is not taking records: {outbox.pending()} records are "
                f"kept in the outbox {path} and nothing is lost; send them once it answers with "
                f"`.venv/bin/receiptflow outbox drain {path}`"
            )
    finally:
        outbox.close()
    return sim.truth


def _sell(
    traffic: Traffic,
    outbox: Outbox,
    names: TopicNames,
    total: int,
    t0: datetime,
    rate: float,
    console: Console | None,
) -> None:
    """Hand ``total`` checkouts (and the faults that come with them) to the outbox at ``rate`` a second."""
    begin = time.monotonic()
    with progress_bar("registers", "checkouts", console) as progress:
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
