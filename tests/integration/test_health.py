"""``/readyz``, ``/healthz`` and ``/metrics`` of each long-running process, run as the CLI runs it.

The router, the faust profile agent and the warehouse sink each start as ``python -m receiptflow``
against the session's broker (and Redis, DuckDB). The exporter starts before the process's consumer
exists, so the first answer of ``/readyz`` is 503 naming what is missing; it turns 200 once the group
has assigned the partitions, the state is restored and the broker answers. Each process serves only
its role's metrics (plus the process collector) and its lag per group and assigned partition.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from receiptflow.config import Settings
from receiptflow.metrics import DEFINITIONS
from receiptflow.stack.process import free_port
from receiptflow.topics import TopicNames, create_topics

from .support import env_for

READY_WITHIN = 120.0  # seconds: a faust worker's start under a loaded machine included


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _first_answers(base: str, proc: subprocess.Popen[bytes], log: Path) -> list[tuple[int, dict[str, Any]]]:
    """Every answer of /readyz from the first one the server gives until the first 200."""
    answers: list[tuple[int, dict[str, Any]]] = []
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the process ended with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            status, body = _get(base + "/readyz")
        except OSError:  # not listening yet
            time.sleep(0.02)
            continue
        answers.append((status, json.loads(body)))
        if status == 200:
            return answers
        time.sleep(0.1)
    pytest.fail(f"/readyz not 200 within {READY_WITHIN} s; last {answers[-1:]}; log: {log.read_text()[-2000:]}")


def _families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def _lag_series(text: str) -> set[tuple[str, str, str]]:
    """(group, topic, partition) of every receiptflow_consumer_lag_records sample."""
    out = set()
    for line in text.splitlines():
        if line.startswith("receiptflow_consumer_lag_records{"):
            labels = dict(
                part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].replace('"', "").split(",")
            )
            out.add((labels["group"], labels["topic"], labels["partition"]))
    return out


@pytest.mark.parametrize("process", ["router", "profiles", "sink", "aggregate", "all"])
def test_readyz_is_503_until_the_process_is_ready_then_200(settings: Settings, process: str, tmp_path: Path) -> None:
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    # The roles the process runs, and the group and input topic of each.
    inputs = {
        "router": (settings.router.id, names.checkouts),
        "profiles": (f"{settings.router.id}-profiles", names.purchases_customer),
        "sink": ("receiptflow-warehouse", names.purchases_customer),
        "aggregate": (f"{settings.router.id}-aggregator", names.analytics_baskets),
    }
    roles = ["router", "aggregate", "profiles"] if process == "all" else [process]
    argv = [process, "run"] if process in ("sink", "aggregate") else ["process", "--role", process]
    port = free_port()
    log = tmp_path / f"{process}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiptflow", *argv, "--metrics-port", str(port)],
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        answers = _first_answers(base, proc, log)
        checks = {f"{role}.{check}" for role in roles for check in ("partitions_assigned", "state_restored")}
        checks.add("broker_reachable")
        first_status, first = answers[0]
        assert first_status == 503 and first["ready"] is False
        assert set(first["checks"]) == checks
        assert not all(first["checks"].values())
        last_status, last = answers[-1]
        assert last_status == 200 and last["checks"] == dict.fromkeys(checks, True)
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body)["alive"] is True

        # Only its roles' metrics, with the process collector's.
        status, text = _get(base + "/metrics")
        assert status == 200
        served = {n for n in _families(text) if n.startswith("receiptflow_") and not n.endswith("_created")}
        assert served == {d.name for d in DEFINITIONS if set(roles) & set(d.roles)}
        assert "process_resident_memory_bytes" in _families(text)

        # Lag per group and partition of each input topic, for every partition it holds (all three here).
        wanted = {
            (group, topic, str(p))
            for group, topic in (inputs[role] for role in roles)
            for p in range(settings.kafka.topic_partitions)
        }
        deadline = time.monotonic() + 60
        while not wanted <= _lag_series(_get(base + "/metrics")[1]):
            assert time.monotonic() < deadline, f"lag series {sorted(_lag_series(_get(base + '/metrics')[1]))}"
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(60)
