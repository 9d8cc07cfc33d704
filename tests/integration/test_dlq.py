"""Dead letters: listed with their reasons, replayed to their source after a fix, idempotently."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import iter_dead_letters, replay_letters
from receiptflow.models import Purchase
from receiptflow.processors.router.worker import Router
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, read_all


def test_dead_letters_are_listed_and_replayed_after_a_fix(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
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
    # processor clock two hours on). A second replay starts where the first stopped: nothing to send.
    # Replaying the same letters again on purpose (--from-offset 0) must not route anything twice.
    for from_offset, sent in ((None, 5), (None, 0), (0, 5)):
        result = replay_letters(settings, reason="future_event_time", from_offset=from_offset)
        assert (result.replayed, result.skipped_repeats) == (sent, 0)
        fixed = Router(settings, name="router-2", clock=lambda: datetime.now(UTC) + timedelta(hours=2))
        fixed.run(max_idle=3)

    customer = [
        Purchase.from_avro(codec.decode(m.value(), expect="purchase").value).receipt_id
        for m in read_all(settings, names.purchases_customer)
    ]
    assert sorted(customer) == sorted([c.receipt_id for c in sales] + [c.receipt_id for c in fast])
    # The still-bad record stays in the dead-letter topic; nothing new was rejected.
    assert len(list(iter_dead_letters(settings))) == 6


def test_replay_sends_only_what_was_there_and_twice_is_harmless(make_settings: Callable[..., Settings]) -> None:
    """Issue 15: with the processor running, a replay of 3 letters reported 9 and left 12 in the DLQ."""
    settings = make_settings()
    create_topics(settings)
    now = datetime.now(UTC)
    sales = list(Simulator(5, stores=5, customers=20).stream(3, now - timedelta(hours=1), rate=0.02))
    client = RegisterClient(settings)
    for i, c in enumerate(sales):
        client.send(replace(c, receipt_id=f"MISMATCH-{i}", total_cents=c.total_cents + 1))
    client.flush()

    stop = threading.Event()
    router = Router(settings, name="router-live")
    worker = threading.Thread(target=router.run, args=(stop,), daemon=True)
    worker.start()
    try:
        _wait_for_letters(settings, 3)
        for expected_replayed, expected_repeats, letters_after in ((3, 0, 6), (0, 3, 6)):
            done = subprocess.run(
                [sys.executable, "-m", "receiptflow", "dlq", "replay", "--reason", "totals_mismatch"],
                env=env_for(settings),
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert f"replayed {expected_replayed} dead letters" in done.stdout, done.stdout
            if expected_repeats:
                assert f"skipped {expected_repeats} that an earlier replay already sent" in done.stdout
            _wait_for_letters(settings, letters_after)
            time.sleep(3)  # nothing more arrives: the replay did not feed on its own output
            assert len(list(iter_dead_letters(settings))) == letters_after
    finally:
        stop.set()
        worker.join(60)


def _wait_for_letters(settings: Settings, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (found := len(list(iter_dead_letters(settings, idle=1)))) < count:
        assert time.monotonic() < deadline, f"{found} dead letters, expected {count}"
        time.sleep(0.5)
