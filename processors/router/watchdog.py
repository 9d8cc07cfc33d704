"""A deadline for blocking client calls that may not honour their own timeout.

librdkafka can block in ``send_offsets_to_transaction`` well past the timeout it was given when the
consumer group's coordinator is lost (confluentinc/librdkafka#5456 "ignores timeout" and #5511
"hangs when the group coordinator is decommissioned", both open for the librdkafka this project
ships with). A router stuck there keeps its partitions and routes nothing, silently. The watchdog
gives each such call a deadline — its own timeout plus a grace — and calls ``on_hang`` once one has
passed. The router's default is to dump every thread's stack and exit at once: for the data that is
a SIGKILL, which the tests show loses and duplicates nothing (the restarted worker's
``init_transactions`` aborts the open transaction), and a supervisor brings the worker back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class CallWatchdog:
    """Watches one thread's blocking calls; ``check`` (or the background thread) reports a hang."""

    def __init__(
        self,
        on_hang: Callable[[str], None],
        *,
        grace: float = 15.0,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_hang = on_hang
        self.grace = grace
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._current: tuple[str, float, float] | None = None  # what, started, deadline
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def call(self, what: str, timeout: float) -> Iterator[None]:
        """Run the body under a deadline of ``timeout`` + grace seconds."""
        now = self.clock()
        with self._lock:
            self._current = (what, now, now + timeout + self.grace)
        try:
            yield
        finally:
            with self._lock:
                self._current = None

    def check(self) -> str | None:
        """Call ``on_hang`` (and return its message) if the current call is past its deadline."""
        with self._lock:
            current = self._current
        if current is None:
            return None
        what, started, deadline = current
        now = self.clock()
        if now <= deadline:
            return None
        message = f"{what} has not returned after {now - started:.0f} s, past its own timeout"
        self.on_hang(message)
        return message

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="call-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if self.check() is not None:
                return  # reported once; on_hang decides what happens to the process
