"""The embedded stack: ``stack``, ``cluster`` and ``demo``.

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from ..config import Settings
from ..errors import StackError
from .common import RATE_HELP, console, positive_float, positive_int, print_data_dir, print_endpoints, rate

if TYPE_CHECKING:
    from ..stack.kafka_cluster import KafkaCluster
    from .common import Subparsers


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from ..stack import Stack

    stack = Stack(settings)
    if args.action == "fetch":
        statuses = stack.fetch(with_registry=args.with_registry)
    elif args.action == "up":
        print_endpoints(settings, "stack up:")
        statuses = stack.up(with_postgres=args.with_postgres, with_registry=args.with_registry)
    elif args.action == "down":
        print_data_dir(settings)
        statuses = stack.down()
    else:
        print_data_dir(settings)
        statuses = stack.status()
    table = Table("component", "state", "pid", "endpoint")
    for s in statuses:
        table.add_row(s.name, s.state, str(s.pid or "-"), s.endpoint)
    console.print(table)
    ours = any(s.name == "redis" and s.state == "running" for s in statuses)
    if args.action == "up" and ours and settings.redis.acl_file is None:
        secrets = settings.local.data_dir.resolve() / "secrets"
        console.print(
            f"redis: ACL users on, default user off; role passwords in {secrets}/redis-<user> (owner only)",
            markup=False,
        )
    kafka_ours = any(s.name == "kafka" and s.state == "running" for s in statuses)
    if args.action == "up" and kafka_ours and settings.local.kafka_auth:
        secrets = settings.local.data_dir.resolve() / "secrets"
        console.print(
            f"kafka: SASL/SCRAM logins and ACLs on; each component's principal and its password in "
            f"{secrets}/kafka-<user> (owner only), admin the super user",
            markup=False,
        )
    registry = next((s for s in statuses if s.name == "registry"), None)
    if registry is not None and not settings.kafka.schema_registry_url:
        console.print(
            f"registry: export RECEIPTFLOW_SCHEMA_REGISTRY_URL={registry.endpoint} so every producer and "
            "consumer takes its schema ids from it",
            markup=False,
        )
    return 0


def add_stack(sub: Subparsers) -> None:
    s = sub.add_parser("stack", help="start, stop or inspect the embedded Kafka + Redis (+ PostgreSQL)")
    s.add_argument(
        "action",
        choices=("up", "down", "status", "fetch"),
        help="up: start what is not running; down: stop what this data dir started; status: what runs; "
        "fetch: only download the Kafka jars",
    )
    s.add_argument("--with-postgres", action="store_true", help="also start a local PostgreSQL server")
    s.add_argument(
        "--with-registry",
        action="store_true",
        help="also start (fetch: build) the schema registry, Apicurio with Confluent's API",
    )
    s.set_defaults(func=cmd_stack)


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from ..stack.kafka_cluster import KafkaCluster

    print_data_dir(settings)
    cluster = KafkaCluster(settings, nodes=args.nodes)
    if args.action == "up":
        refuse_cluster_beside_a_broker(settings, cluster)
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


def refuse_cluster_beside_a_broker(settings: Settings, cluster: KafkaCluster) -> None:
    """Refuse ``cluster up`` while a broker that is not one of its nodes holds one of its ports.

    The single-node stack's broker listens on the bootstrap port, node 1's port: the cluster would
    take it for node 1 and start the other nodes as a second cluster (topics then fail with
    INVALID_REPLICATION_FACTOR).
    """
    from ..stack.kafka import EmbeddedKafka

    single = EmbeddedKafka(settings).status()
    if single.state == "running":
        raise StackError(
            f"the single-node stack's broker runs at {single.endpoint} (pid {single.pid}, data dir "
            f"{settings.local.data_dir}); a cluster beside it would be a second cluster: stop it first with "
            "`.venv/bin/receiptflow stack down`, then run `cluster up`"
        )
    foreign = [s.endpoint for s in cluster.status() if s.state == "external"]
    if foreign:
        raise StackError(
            f"a broker that is not a node of this cluster answers at {', '.join(foreign)}: stop it first "
            "(`.venv/bin/receiptflow stack down` in its data dir), or choose other ports with "
            "RECEIPTFLOW_BOOTSTRAP_SERVERS"
        )


def add_cluster(sub: Subparsers) -> None:
    s = sub.add_parser(
        "cluster", help="a local multi-node Kafka cluster (replication, failover) on ports from the bootstrap port"
    )
    s.add_argument("action", choices=("up", "down", "status"), help="start, stop or inspect the cluster's nodes")
    s.add_argument("--nodes", type=int, default=3, help="number of nodes (broker + controller each), at least 2")
    s.set_defaults(func=cmd_cluster)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from .demo import run_demo

    return run_demo(
        settings, duration=args.duration, rate=args.rate, seed=args.seed, stores=args.stores, customers=args.customers
    )


def add_demo(sub: Subparsers) -> None:
    s = sub.add_parser(
        "demo", help="the main job on the embedded stack: registers → Kafka → processor → Redis + warehouse"
    )
    s.add_argument("--duration", type=positive_float, default=60.0, help="seconds of simulated traffic")
    s.add_argument("--rate", type=rate, default=50.0, help=RATE_HELP)
    s.add_argument("--seed", type=int, default=2010, help="seed of the simulated fleet (same seed, same sales)")
    s.add_argument("--stores", type=positive_int, default=30, help="stores selling")
    s.add_argument("--customers", type=positive_int, default=300, help="card holders among the shoppers")
    s.set_defaults(func=cmd_demo)
