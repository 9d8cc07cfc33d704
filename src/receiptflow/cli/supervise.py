"""Worker supervision: how ``receiptflow process`` runs its roles in one process.

The Kafka workers (the router, the aggregator) run until their stop event is set; SIGTERM or SIGINT
sets it. One worker alone runs on the main thread. Several run on threads of their own, and the faust
profile worker, which owns the event loop, on the main thread; a worker's failure stops the others too
(the stop event, and a SIGTERM to this process for the faust worker), so they fail as one process, and
the first error is raised once all of them have stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Protocol


class Worker(Protocol):
    """A long-running Kafka worker (:class:`~receiptflow.worker_loop.KafkaWorker`): runs until ``stop`` is set."""

    name: str

    def run(self, stop: threading.Event | None = None, max_idle: float | None = None) -> object: ...


def _stop_on_signals(stop: threading.Event) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


def run_workers(workers: Sequence[Worker], stop: threading.Event, run_agent: Callable[[], None] | None = None) -> None:
    """Run ``workers`` (and ``run_agent``, the faust worker, on this thread) until stopped; either failing stops all."""
    if len(workers) == 1 and run_agent is None:
        _stop_on_signals(stop)
        workers[0].run(stop)
        return
    failure: list[BaseException] = []

    def guarded(worker: Worker) -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
            stop.set()
            if run_agent is not None:
                os.kill(os.getpid(), signal.SIGTERM)  # stop the faust worker too: fail as one process

    if run_agent is None:
        _stop_on_signals(stop)
    threads = [threading.Thread(target=guarded, args=(w,), name=w.name, daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        if run_agent is not None:
            with contextlib.suppress(SystemExit):  # the faust worker's way of ending
                run_agent()
        else:
            while not stop.wait(0.5) and any(t.is_alive() for t in threads):
                pass
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    if failure:
        raise failure[0]
