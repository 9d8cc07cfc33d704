"""A local multi-node KRaft cluster (``receiptflow cluster up``) made of embedded Kafka nodes.

Every node is an :class:`~receiptflow.stack.kafka.EmbeddedKafka` (broker + controller) from the
same jars, with replicated internal topics, for trying replication and the loss of a broker locally;
layout ``<data dir>/kafka-cluster/node-<id>/...`` and ``<data dir>/run/kafka-node-<id>.pid``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from ..config import Settings
from ..errors import StackError
from .kafka import ClusterNode, EmbeddedKafka, parse_bootstrap
from .kafka_dist import java_binary, random_cluster_id, resolve_jars
from .process import ComponentStatus


class KafkaCluster:
    """A local multi-node KRaft cluster (every node broker + controller) from the same jars.

    For trying the project against replication, leader changes and the loss of a node before a real
    cluster is at hand: ``nodes`` nodes on consecutive port pairs from the bootstrap port, internal
    topics and new topics replicated ``min(nodes, 3)`` times with ``min.insync.replicas`` 2, so one
    node can be lost without losing an acknowledged record or stopping writes. The cluster id is
    kept under ``<data dir>/kafka-cluster`` so the nodes keep their data across restarts.
    """

    def __init__(self, settings: Settings, nodes: int = 3, ready_timeout: float = 120.0) -> None:
        if nodes < 2:
            raise StackError("a cluster has at least 2 nodes (the single-node broker is EmbeddedKafka)")
        self.settings = settings
        host, base = parse_bootstrap(settings.kafka.bootstrap_servers)
        self.host = host
        self.ports = [(base + 2 * i, base + 2 * i + 1) for i in range(nodes)]
        self.home = settings.local.data_dir.expanduser().resolve() / "kafka-cluster"
        self.ready_timeout = ready_timeout
        self._nodes: list[EmbeddedKafka] | None = None
        self.replication = min(nodes, 3)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{port}" for port, _ in self.ports)

    def _cluster_id(self, create: bool = False) -> str:
        """The cluster's id, made on the first ``up`` ("" before that: status and down need none)."""
        id_file = self.home / "cluster.id"
        if id_file.is_file():
            return id_file.read_text(encoding="utf-8").strip()
        if not create:
            return ""
        java = java_binary(self.settings)
        cluster_id = random_cluster_id(java, f"{resolve_jars(self.settings)}/*", dict(os.environ))
        self.home.mkdir(parents=True, exist_ok=True)
        id_file.write_text(cluster_id + "\n", encoding="utf-8")
        return cluster_id

    @property
    def nodes(self) -> list[EmbeddedKafka]:
        if self._nodes is None:
            voters = ",".join(f"{i + 1}@{self.host}:{cport}" for i, (_, cport) in enumerate(self.ports))
            cluster_id = self._cluster_id()
            self._nodes = [
                EmbeddedKafka(
                    self.settings,
                    ready_timeout=self.ready_timeout,
                    node=ClusterNode(i + 1, port, cport, voters, self.replication, cluster_id),
                )
                for i, (port, cport) in enumerate(self.ports)
            ]
        return self._nodes

    def up(self) -> list[ComponentStatus]:
        """Start every node that is not running, then wait until each answers (they need a quorum)."""
        if not self._cluster_id():
            self._cluster_id(create=True)
            self._nodes = None  # built before the id existed
        launched = [(node, node.start()) for node in self.nodes]
        for node, started in launched:
            if not isinstance(started, ComponentStatus):
                node.wait_started(started)
        return self.status()

    def start_node(self, node_id: int) -> ComponentStatus:
        """Start one node again (after :meth:`kill_node` or ``down``); waits until it answers."""
        return self.nodes[node_id - 1].up()

    def kill_node(self, node_id: int) -> int:
        """SIGKILL one node (no clean shutdown). Returns its PID."""
        return self.nodes[node_id - 1].kill()

    def down(self, timeout: float = 30.0) -> list[ComponentStatus]:
        """Stop every node of ours at once (SIGTERM, then SIGKILL after ``timeout``).

        At once, because one after the other the last nodes lose their controller quorum and their
        controlled shutdown waits for a controller that is gone.
        """
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            return list(pool.map(lambda node: node.down(timeout), self.nodes))

    def status(self) -> list[ComponentStatus]:
        return [node.status() for node in self.nodes]
