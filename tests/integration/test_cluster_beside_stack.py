"""``cluster up`` refuses, with the reason, while the single-node stack's broker runs.

It used to take that broker for node 1 and start nodes 2 and 3 as a second cluster, after which
``topics create`` failed with INVALID_REPLICATION_FACTOR. Here the session's broker plays the stack:
``cluster up`` in its data dir and on its port must stop before starting anything.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest

from receiptflow.config import Settings
from receiptflow.stack.kafka import EmbeddedKafka, broker_answers
from receiptflow.stack.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.integration


def test_cluster_up_refuses_while_the_single_node_broker_runs(stack_settings: Settings, kafka_bootstrap: str) -> None:
    data_dir = stack_settings.local.data_dir
    env = {
        "PATH": "/usr/bin:/bin",
        "RECEIPTFLOW_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RECEIPTFLOW_DATA_DIR": str(data_dir),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "receiptflow", "cluster", "up", "--nodes", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        err = " ".join(done.stderr.split())
        assert done.returncode == 1, done.stdout + done.stderr
        assert "stack down" in err and kafka_bootstrap in err, err
        assert "Traceback" not in err
        # Nothing of a cluster was made, and the broker still serves.
        assert not (data_dir / "kafka-cluster").exists()
        assert not list((data_dir / "run").glob("kafka-node-*.pid"))
        assert broker_answers(kafka_bootstrap, login=EmbeddedKafka(stack_settings).admin_login())
    finally:
        if (data_dir / "kafka-cluster").exists():
            with contextlib.suppress(Exception):
                KafkaCluster(stack_settings.model_copy(update={"kafka": {"bootstrap_servers": kafka_bootstrap}})).down()
