"""Process helpers of the embedded stack: ports, readiness deadlines, PID files."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from receiptflow.config import Settings
from receiptflow.errors import DependencyMissingError, PortInUseError, ReadinessTimeoutError, StackError
from receiptflow.stack import EmbeddedRedis, free_port, wait_until
from receiptflow.stack.kafka import java_binary
from receiptflow.stack.process import cmdline, ensure_port_free, owned_pid, port_open, stop_pid


def test_free_port_is_free_and_listener_is_detected() -> None:
    port = free_port()
    assert not port_open("127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert port_open("127.0.0.1", port)
        with pytest.raises(PortInUseError, match=str(port)):
            ensure_port_free("127.0.0.1", port, "test")


def test_wait_until_times_out_with_readiness_error() -> None:
    with pytest.raises(ReadinessTimeoutError, match="thing not ready"):
        wait_until(lambda: False, 0.3, "thing", interval=0.05)


def test_wait_until_fails_fast_when_process_died() -> None:
    with pytest.raises(StackError, match="exited before it became ready"):
        wait_until(lambda: False, 30, "server", alive=lambda: False)


def test_wait_until_treats_errors_as_not_ready() -> None:
    calls = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return True

    wait_until(flaky, 5, "flaky", interval=0.01)
    assert len(calls) == 3


def test_owned_pid_checks_command_line_and_removes_stale_files(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "marker-xyz"])
    try:
        pid_file = tmp_path / "x.pid"
        pid_file.write_text(str(proc.pid))
        # Right after fork the child still shows our command line until it execs.
        wait_until(lambda: "marker-xyz" in cmdline(proc.pid), 10, "child exec", interval=0.01)
        assert owned_pid(pid_file, ["marker-xyz"]) == proc.pid
        assert owned_pid(pid_file, ["something-else"]) is None
        assert not pid_file.exists()
    finally:
        stop_pid(proc.pid, timeout=5)
    assert proc.poll() is not None
    pid_file.write_text(str(proc.pid))
    assert owned_pid(pid_file, ["marker-xyz"]) is None


def test_redis_port_taken_by_a_non_redis_program(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        server = EmbeddedRedis(Settings(redis_url=f"redis://127.0.0.1:{port}/0", data_dir=tmp_path), ready_timeout=2)
        with pytest.raises(PortInUseError, match=str(port)):
            server.up()


def test_missing_java_is_a_clear_dependency_error(tmp_path: Path) -> None:
    with pytest.raises(DependencyMissingError, match="RECEIPTFLOW_JAVA_HOME"):
        java_binary(Settings(java_home=tmp_path / "no-jdk", data_dir=tmp_path))
