"""Worker supervision: how ``receiptflow process`` runs the router, the profile agent, or both.

The router runs until its stop event is set (SIGTERM or SIGINT set it). With both roles in one
process the router runs on a thread and the faust worker, which owns the event loop, on the main
thread; a router failure stops the worker too (a SIGTERM to this process), so the two fail as one
process, and the router's error is raised once the worker has stopped.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from receiptflow.processors.router.worker import Router


def run_router(router: Router, stop: threading.Event) -> None:
    """Run the router on this thread until SIGTERM or SIGINT."""
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    router.run(stop)


def run_router_and_agent(router: Router, stop: threading.Event, run_agent: Callable[[], None]) -> None:
    """The router on a thread, ``run_agent`` (the faust worker) on this one; either failing stops both."""
    failure: list[BaseException] = []

    def route() -> None:
        try:
            router.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
            os.kill(os.getpid(), signal.SIGTERM)  # stop the faust worker too: fail as one process

    thread = threading.Thread(target=route, name="router", daemon=True)
    thread.start()
    try:
        run_agent()
    except SystemExit:
        pass
    finally:
        stop.set()
        thread.join(60)
    if failure:
        raise failure[0]
