"""The embedded stack: ``stack``, ``cluster`` and ``demo``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from ..config import Settings
from .common import console, positive_float, positive_int, print_endpoints

if TYPE_CHECKING:
    from .common import Subparsers


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from ..stack import Stack

    stack = Stack(settings)
    if args.action == "fetch":
        statuses = [stack.fetch()]
    elif args.action == "up":
        print_endpoints(settings, "stack up:")
        statuses = stack.up(with_postgres=args.with_postgres)
    elif args.action == "down":
        statuses = stack.down()
    else:
        statuses = stack.status()
    table = Table("component", "state", "pid", "endpoint")
    for s in statuses:
        table.add_row(s.name, s.state, str(s.pid or "-"), s.endpoint)
    console.print(table)
    ours = any(s.name == "redis" and s.state == "running" for s in statuses)
    if args.action == "up" and ours and settings.redis_acl_file is None:
        secrets = settings.data_dir.resolve() / "secrets"
        console.print(
            f"redis: ACL users on, default user off; role passwords in {secrets}/redis-<user> (owner only)",
            markup=False,
        )
    return 0


def add_stack(sub: Subparsers) -> None:
    s = sub.add_parser("stack", help="start, stop or inspect the embedded Kafka + Redis (+ PostgreSQL)")
    s.add_argument("action", choices=("up", "down", "status", "fetch"))
    s.add_argument("--with-postgres", action="store_true", help="also start a local PostgreSQL server")
    s.set_defaults(func=cmd_stack)


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from ..stack.kafka_cluster import KafkaCluster

    cluster = KafkaCluster(settings, nodes=args.nodes)
    if args.action == "up":
        statuses = cluster.up()
    elif args.action == "down":
        statuses = cluster.down()
    else:
        statuses = cluster.status()
    table = Table("node", "state", "pid", "endpoint")
    for s in statuses:
        table.add_row(s.name, s.state, str(s.pid or "-"), s.endpoint)
    console.print(table)
    if args.action == "up":
        console.print(
            f"bootstrap servers: {cluster.bootstrap_servers} (replication factor {cluster.replication}, "
            "min.insync.replicas 2): export RECEIPTFLOW_BOOTSTRAP_SERVERS and "
            f"RECEIPTFLOW_TOPIC_REPLICATION_FACTOR={cluster.replication}"
        )
    return 0


def add_cluster(sub: Subparsers) -> None:
    s = sub.add_parser(
        "cluster", help="a local multi-node Kafka cluster (replication, failover) on ports from the bootstrap port"
    )
    s.add_argument("action", choices=("up", "down", "status"))
    s.add_argument("--nodes", type=int, default=3, help="number of nodes (broker + controller each), at least 2")
    s.set_defaults(func=cmd_cluster)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ..demo import run_demo

    return run_demo(
        settings, duration=args.duration, rate=args.rate, seed=args.seed, stores=args.stores, customers=args.customers
    )


def add_demo(sub: Subparsers) -> None:
    s = sub.add_parser(
        "demo", help="the main job on the embedded stack: registers → Kafka → processor → Redis + warehouse"
    )
    s.add_argument("--duration", type=positive_float, default=60.0, help="seconds of simulated traffic (default 60)")
    s.add_argument("--rate", type=positive_float, default=50.0, help="checkouts per second (default 50)")
    s.add_argument("--seed", type=int, default=2010)
    s.add_argument("--stores", type=positive_int, default=30)
    s.add_argument("--customers", type=positive_int, default=300)
    s.set_defaults(func=cmd_demo)
