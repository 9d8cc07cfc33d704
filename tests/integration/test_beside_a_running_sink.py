"""Beside a running DuckDB ``sink run``: the commands that need the warehouse stop at once, change nothing.

DuckDB lets one process open a file for writing and no other process open it meanwhile (not even
read-only). A real ``receiptflow sink run`` holds the warehouse here; ``export``, ``segments run``,
``erase``, ``sink replay`` and ``sql`` each end within seconds with one line that says the sink must
stop, and ``erase`` leaves nothing behind (no erased-cards record, the profile still there).
``sink replay`` used to die first on the sink's metrics port; it serves no metrics now.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from receiptflow.config import Settings
from receiptflow.jobs.subject import audit_log, erased_in_profiles
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.redis_auth import RedisRole
from receiptflow.stack import free_port
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, read_all

pytestmark = pytest.mark.integration

COMMANDS = [
    ["export", "CARD-BESIDE", "--as", "dpo", "--reason", "test"],
    ["segments", "run", "--month", "2026-12"],
    ["erase", "CARD-BESIDE", "--yes"],
    ["sink", "replay", "--from-beginning"],
    ["sql", "SELECT count(*) FROM receipts"],
]


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "sink run exited early"
        assert time.monotonic() < deadline, f"{path} not created within {timeout} s"
        time.sleep(0.2)
    time.sleep(1.0)  # the sink migrates, then consumes: it holds the file from its first open


def test_commands_beside_a_running_duckdb_sink_stop_at_once_and_change_nothing(settings: Settings) -> None:
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    env = env_for(settings)
    env["RECEIPTFLOW_METRICS_PORT"] = str(free_port())  # the sink serves on the next port
    warehouse = settings.local.data_dir / "warehouse.duckdb"
    log = (settings.local.data_dir.parent / "sink.log").open("wb")
    sink = subprocess.Popen(
        [sys.executable, "-m", "receiptflow", "sink", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for_file(warehouse, sink)
        for argv in COMMANDS:
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "receiptflow", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            took = time.monotonic() - started
            err = " ".join(done.stderr.split())
            assert done.returncode == 1, f"{argv}: exit {done.returncode}: {done.stderr[-1500:]}"
            assert "in use by another process" in err and "stop" in err, f"{argv}: {done.stderr[-1500:]}"
            assert "metrics port" not in err and "Traceback" not in err, argv
            assert took < 30, f"{argv} took {took:.0f} s to say so"
        assert sink.poll() is None, "the running sink was disturbed"
    finally:
        sink.terminate()
        sink.wait(timeout=60)
        log.close()
    # The refused erasure recorded nothing: no erased-cards record, no audit entry.
    assert read_all(settings, names.consents_erased, timeout=20) == []
    assert not erased_in_profiles(settings, "CARD-BESIDE")
    subject = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT).erased_hash("CARD-BESIDE")
    assert [e for e in audit_log(settings) if subject in e.values()] == []
