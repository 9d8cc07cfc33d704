"""The call watchdog reports a call that outlives its timeout plus grace, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from receiptflow.processors.router.watchdog import CallWatchdog
from receiptflow.processors.router.worker import HUNG_EXIT_CODE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_call_within_its_deadline_is_not_reported() -> None:
    hangs: list[str] = []
    clock = Clock()
    dog = CallWatchdog(hangs.append, grace=5, clock=clock)
    with dog.call("commit_transaction", 60):
        clock.now += 65  # timeout + grace exactly: still in time
        assert dog.check() is None
    clock.now += 1000  # nothing running any more
    assert dog.check() is None
    assert hangs == []


def test_a_call_past_its_timeout_and_grace_is_reported_with_its_name() -> None:
    hangs: list[str] = []
    clock = Clock()
    dog = CallWatchdog(hangs.append, grace=5, clock=clock)
    with dog.call("send_offsets_to_transaction", 30):
        clock.now += 35.5
        message = dog.check()
    assert message is not None and message.startswith("send_offsets_to_transaction has not returned after 36 s")
    assert hangs == [message]


def test_each_call_gets_its_own_deadline() -> None:
    hangs: list[str] = []
    clock = Clock()
    dog = CallWatchdog(hangs.append, grace=0, clock=clock)
    for _ in range(3):  # many short calls add up to far more than one timeout
        with dog.call("commit_transaction", 10):
            clock.now += 9
            dog.check()
    assert hangs == []


def test_the_background_thread_reports_a_blocked_call_once() -> None:
    reported = threading.Event()
    hangs: list[str] = []

    def on_hang(message: str) -> None:
        hangs.append(message)
        reported.set()

    dog = CallWatchdog(on_hang, grace=0.05, interval=0.02)
    dog.start()
    try:
        with dog.call("send_offsets_to_transaction", 0.05):
            assert reported.wait(5), "the watchdog did not report the blocked call"
            time.sleep(0.1)  # it reports once, not every interval
    finally:
        dog.stop()
    assert len(hangs) == 1 and "send_offsets_to_transaction" in hangs[0]


@pytest.mark.parametrize("timeout", [0.0, 0.5])
def test_the_thread_leaves_quick_calls_alone(timeout: float) -> None:
    hangs: list[str] = []
    dog = CallWatchdog(hangs.append, grace=0.5, interval=0.01)
    dog.start()
    try:
        for _ in range(20):
            with dog.call("commit_transaction", timeout):
                time.sleep(0.005)
    finally:
        dog.stop()
    assert hangs == []


def test_the_router_ends_a_hung_worker_at_once_with_its_stacks(tmp_path: Path) -> None:
    # The router's own reaction, in a child process: it must exit (status 70), not hang or raise,
    # and leave the stacks and the reason on stderr for whoever restarts it.
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from receiptflow.config import Settings\n"
            "from receiptflow.processors.router.worker import Router\n"
            "router = Router(Settings(kafka={'bootstrap_servers': '127.0.0.1:1'}, metrics={'port': 0}))\n"
            # A call whose deadline (its timeout plus the grace) is already past.
            "with router.watchdog.call('send_offsets_to_transaction', -router.watchdog.grace - 1):\n"
            "    router.watchdog.check()\n"
            "raise SystemExit('the watchdog did not end the worker')\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,  # the default data dir is relative: the router's generated analytics key goes there
    )
    assert child.returncode == HUNG_EXIT_CODE, child.stderr[-2000:]
    assert "send_offsets_to_transaction has not returned" in child.stderr
    assert "most recent call first" in child.stderr and "in _exit_hung" in child.stderr
