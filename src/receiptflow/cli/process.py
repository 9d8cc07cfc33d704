"""The stream processor: ``process`` (the router, the profile agent, or both with the aggregator).

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from ..config import Settings
from .common import print_endpoints

if TYPE_CHECKING:
    from .common import Subparsers


def cmd_process(args: argparse.Namespace, settings: Settings) -> int:
    import faulthandler
    import signal
    import threading

    from ..health import serving
    from ..kafka_auth import KafkaPrincipal, as_principal
    from ..metrics import Role
    from ..processors.aggregate.worker import Aggregator
    from ..processors.profiles.agent import create_app, run_worker
    from ..processors.router.worker import Router
    from .supervise import run_workers

    if args.instance is not None:
        settings = settings.model_copy(update={"router": {"instance": args.instance}})
    print_endpoints(settings, f"processor ({args.role}, instance {settings.router.instance}):")
    from ..broker_check import require_broker

    # Each worker logs in to Kafka as its own principal; ACLs give each only its topics.
    router_settings = as_principal(settings, KafkaPrincipal.ROUTER)
    profiles_settings = as_principal(settings, KafkaPrincipal.PROFILES)
    own = profiles_settings if args.role == "profiles" else router_settings  # the process's checks
    require_broker(own)
    # main() configured logging already (WARNING unless -v): --loglevel must replace that.
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    # `kill -USR1 <pid>` prints every thread's stack to stderr: where a stuck worker waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    roles: tuple[Role, ...] = ("router", "aggregate", "profiles") if args.role == "all" else (args.role,)
    with serving(f"process --role {args.role}", own, roles, port=args.metrics_port) as served:
        if args.role == "profiles":
            run_worker(
                create_app(profiles_settings, metrics=served.metrics, readiness=served.readiness["profiles"]),
                loglevel=args.loglevel,
            )
            return 0
        stop = threading.Event()
        router = Router(router_settings, metrics=served.metrics, readiness=served.readiness["router"])
        if args.role == "router":
            run_workers([router], stop)
            return 0
        # All: the router and the aggregator on threads, the faust worker (which owns the event loop) on
        # the main thread.
        aggregator = Aggregator(
            as_principal(settings, KafkaPrincipal.AGGREGATOR),
            metrics=served.metrics,
            readiness=served.readiness["aggregate"],
        )
        run_workers(
            [router, aggregator],
            stop,
            lambda: run_worker(
                create_app(profiles_settings, metrics=served.metrics, readiness=served.readiness["profiles"]),
                loglevel=args.loglevel,
            ),
        )
    return 0


def add_process(sub: Subparsers) -> None:
    s = sub.add_parser("process", help="run the stream processor until stopped")
    s.add_argument(
        "--role",
        choices=("all", "router", "profiles"),
        default="all",
        help="router: checkouts -> purchase topics (exactly-once); profiles: faust agent -> Redis; all: both, "
        "and the analytics aggregator (`aggregate run` alone)",
    )
    s.add_argument("--instance", help="stable worker name (RECEIPTFLOW_PROCESSOR_INSTANCE)")
    s.add_argument("--loglevel", default="warning", help="debug, info, warning or error")
    s.add_argument("--metrics-port", type=int, default=None, help="override RECEIPTFLOW_METRICS_PORT")
    s.set_defaults(func=cmd_process)
