"""The one-line heartbeat every long-running process logs at INFO: records so far, the rate, the lag.

A person tailing a worker's log sees every 30 s that it is alive and keeping up, without Prometheus:
``router: 120,345 records, 410/s over the last 30 s, lag 0``. The line is made by a pure function;
:class:`Heartbeat` remembers the previous count and decides when the next line is due. It is fed by
the lag reporting that every consuming role already runs every few seconds (:mod:`.lag`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter

log = logging.getLogger("receiptflow.heartbeat")

HEARTBEAT_SECONDS = 30.0


def heartbeat_line(name: str, records: int, previous: int, seconds: float, lag: int | None) -> str:
    """``name: N records, R/s over the last S s, lag L`` (lag "unknown" before the first report)."""
    rate = (records - previous) / seconds if seconds > 0 else 0.0
    behind = "unknown" if lag is None else f"{lag:,}"
    return f"{name}: {records:,} records, {rate:,.0f}/s over the last {seconds:.0f} s, lag {behind}"


def counter_total(counter: Counter) -> Callable[[], int]:
    """A function giving the sum of a (labelled) counter's ``_total`` samples: records so far."""

    def total() -> int:
        return int(sum(s.value for metric in counter.collect() for s in metric.samples if s.name.endswith("_total")))

    return total


class Heartbeat:
    """Logs :func:`heartbeat_line` once every ``every`` seconds when :meth:`beat` is called."""

    def __init__(
        self,
        name: str,
        records: Callable[[], int],
        every: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.records = records
        self.every = every
        self.clock = clock
        self._at = clock()
        self._count = records()

    def beat(self, lag: int | None) -> str | None:
        """The line when one is due (and log it), else None."""
        now = self.clock()
        if now - self._at < self.every:
            return None
        count = self.records()
        line = heartbeat_line(self.name, count, self._count, now - self._at, lag)
        self._at, self._count = now, count
        log.info("%s", line)
        return line
