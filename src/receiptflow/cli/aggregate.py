"""The analytics aggregator: ``aggregate run``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..config import Settings
from .common import console, positive_float, print_endpoints

if TYPE_CHECKING:
    from .common import Subparsers

# The processor serves on the metrics port, the sink on the next, the simulator on the one after: then this.
PORT_OFFSET = 3


def cmd_aggregate(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from ..broker_check import require_broker
    from ..health import serving
    from ..processors.aggregate.clients import instance
    from ..processors.aggregate.worker import Aggregator

    if args.instance is not None:
        settings = settings.model_copy(update={"aggregate": {"instance": args.instance}})
    print_endpoints(settings, f"aggregator (instance {instance(settings)}):")
    require_broker(settings)
    with serving("aggregate run", settings, ("aggregate",), port=args.metrics_port, port_offset=PORT_OFFSET) as served:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        aggregator = Aggregator(settings, metrics=served.metrics, readiness=served.readiness["aggregate"])
        stats = aggregator.run(stop, args.idle_exit)
    console.print(f"aggregator stopped: {stats}")
    return 0


def add_aggregate(sub: Subparsers) -> None:
    s = sub.add_parser(
        "aggregate",
        help="run the analytics aggregator: anonymous baskets in, cells of at least k baskets out, once per day",
    )
    s.add_argument("action", choices=("run",), help="run: until stopped (or idle, with --idle-exit)")
    s.add_argument("--idle-exit", type=positive_float, default=None, help="exit after this many idle seconds")
    s.add_argument("--instance", help="stable aggregator name (RECEIPTFLOW_ANALYTICS_INSTANCE)")
    s.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"serve /metrics here (default: RECEIPTFLOW_METRICS_PORT + {PORT_OFFSET}; 0 turns it off)",
    )
    s.set_defaults(func=cmd_aggregate)
