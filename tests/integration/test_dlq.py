"""Dead letters: listed with their reasons, replayed to their source after a fix, idempotently."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import iter_dead_letters, replay
from receiptflow.models import Purchase
from receiptflow.processors.router import Router
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, read_all


def test_dead_letters_are_listed_and_replayed_after_a_fix(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    create_topics(settings)
    names = TopicNames(settings.topic_prefix)
    codec = Codec()
    now = datetime.now(UTC)
    sales = list(Simulator(3, stores=5, customers=20).stream(40, now - timedelta(hours=1), rate=0.02))
    # A register whose clock ran an hour fast: its receipts look like they come from the future.
    fast = [replace(c, receipt_id=f"FAST-{i}", event_time=now + timedelta(hours=1)) for i, c in enumerate(sales[:5])]
    client = RegisterClient(settings)
    for c in sales + fast:
        client.send(c)
    client.send_raw(names.checkouts, b"junk-1", b"not avro at all")
    client.flush()

    Router(settings, name="router-1").run(max_idle=3)
    letters = list(iter_dead_letters(settings))
    assert sorted(d.reason for d in letters) == ["future_event_time"] * 5 + ["undecodable"]
    listed = subprocess.run(
        [sys.executable, "-m", "receiptflow", "dlq", "list"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "6 dead letters (future_event_time: 5, undecodable: 1)" in listed.stderr
    assert f"{names.checkouts}[" in listed.stdout and "is after" in listed.stdout

    # The fix: processing now happens when those receipts are no longer in the future (here: a
    # processor clock two hours on). Replaying twice must not route anything twice.
    for _ in range(2):
        result = replay(settings, reason="future_event_time")
        assert result.replayed == 5
        fixed = Router(settings, name="router-2", clock=lambda: datetime.now(UTC) + timedelta(hours=2))
        fixed.run(max_idle=3)

    customer = [
        Purchase.from_avro(codec.decode(m.value(), expect="purchase").value).receipt_id
        for m in read_all(settings, names.purchases_customer)
    ]
    assert sorted(customer) == sorted([c.receipt_id for c in sales] + [c.receipt_id for c in fast])
    # The still-bad record stays in the dead-letter topic; nothing new was rejected.
    assert len(list(iter_dead_letters(settings))) == 6
