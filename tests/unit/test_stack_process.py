"""Process helpers of the embedded stack: free ports, readiness deadlines, PID files, clean stops.

Only loopback sockets and short-lived child processes (``python -c``); no server is started.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiptflow.config import Settings
from receiptflow.errors import ConfigError, DependencyMissingError, PortInUseError, ReadinessTimeoutError, StackError
from receiptflow.stack import EmbeddedKafka, EmbeddedRedis, Stack, free_port, kafka_version, wait_until
from receiptflow.stack.kafka import parse_bootstrap
from receiptflow.stack.kafka_dist import java_binary, pom_path
from receiptflow.stack.process import (
    cmdline,
    ensure_port_free,
    free_port_run,
    is_alive,
    owned_pid,
    port_open,
    read_pid,
    stop_pid,
)


@pytest.fixture
def listener() -> Iterator[int]:
    """A plain TCP listener on a free loopback port (speaks no protocol at all)."""
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        yield port


@pytest.fixture
def sleeper() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A child process whose command line carries a unique marker."""
    marker = f"marker-{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    # Right after fork the child still shows our command line until it execs.
    wait_until(lambda: marker in cmdline(proc.pid), 10, 0.01, what="child exec")
    yield proc, marker
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# --- ports ---------------------------------------------------------------------------------------------
def test_free_port_is_bindable_and_never_repeats() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    for port in ports[:5]:
        assert not port_open("127.0.0.1", port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # would raise if the port were taken


def test_free_port_runs_are_bindable_below_the_ephemeral_range_and_never_overlap() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    bases = [free_port_run(6) for _ in range(20)]
    ports = [b + i for b in bases for i in range(6)]
    assert len(set(ports)) == len(ports)  # no port handed out twice, within or across runs
    assert all(p < low for p in ports)  # no client's outgoing connection can be given one
    for port in ports[:6]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_port_taken_by_a_plain_listener_is_a_port_in_use_error(listener: int) -> None:
    assert port_open("127.0.0.1", listener)
    with pytest.raises(PortInUseError, match=str(listener)):
        ensure_port_free("127.0.0.1", listener, "test")


def test_redis_refuses_a_port_taken_by_a_non_redis_program(listener: int, tmp_path: Path) -> None:
    server = EmbeddedRedis(
        Settings(redis={"url": f"redis://127.0.0.1:{listener}/0"}, local={"data_dir": tmp_path}), ready_timeout=2
    )
    with pytest.raises(PortInUseError, match=str(listener)):
        server.up()
    assert not (tmp_path / "run" / "redis.pid").exists()


def test_kafka_refuses_a_port_taken_by_a_non_kafka_program(listener: int, tmp_path: Path) -> None:
    broker = EmbeddedKafka(Settings(kafka={"bootstrap_servers": f"127.0.0.1:{listener}"}, local={"data_dir": tmp_path}))
    start = time.monotonic()
    with pytest.raises(PortInUseError, match=str(listener)):
        broker.up()
    assert time.monotonic() - start < 10
    assert not (tmp_path / "run" / "kafka.pid").exists()


def test_kafka_refuses_a_taken_controller_port(listener: int, tmp_path: Path) -> None:
    settings = Settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
        local={"kafka_controller_port": listener, "data_dir": tmp_path},
    )
    with pytest.raises(PortInUseError, match=f"{listener}.*controller"):
        EmbeddedKafka(settings).up()


# --- readiness -----------------------------------------------------------------------------------------
def test_wait_until_times_out_with_a_readiness_error() -> None:
    start = time.monotonic()
    with pytest.raises(ReadinessTimeoutError, match=r"thing not ready after 0\.3s"):
        wait_until(lambda: False, 0.3, 0.05, what="thing")
    assert 0.3 <= time.monotonic() - start < 2


def test_wait_until_reports_the_last_probe_error_and_details() -> None:
    def probe() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(ReadinessTimeoutError, match=r"(?s)nobody home.*LOG TAIL"):
        wait_until(probe, 0.2, 0.05, what="server", details=lambda: "\nLOG TAIL")


def test_wait_until_fails_fast_when_the_process_died() -> None:
    start = time.monotonic()
    with pytest.raises(StackError, match="exited before it became ready") as info:
        wait_until(lambda: False, 30, 0.05, what="server", alive=lambda: False)
    assert not isinstance(info.value, ReadinessTimeoutError)
    assert time.monotonic() - start < 1


def test_wait_until_treats_errors_as_not_ready_yet() -> None:
    calls: list[int] = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return True

    wait_until(flaky, 5, 0.01, what="flaky")
    assert len(calls) == 3


# --- PID files -------------------------------------------------------------------------------------------
def test_owned_pid_accepts_only_a_live_process_with_our_markers(
    sleeper: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, marker = sleeper
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{proc.pid}\n")
    assert owned_pid(pid_file, [marker]) == proc.pid
    assert pid_file.exists()

    # Alive, but not ours (another marker): the PID file is stale and goes.
    assert owned_pid(pid_file, [f"other-{uuid.uuid4().hex}"]) is None
    assert not pid_file.exists()


def test_stale_pid_file_of_a_dead_process_is_removed(
    sleeper: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, marker = sleeper
    stop_pid(proc.pid, timeout=5)
    assert proc.poll() is not None and not is_alive(proc.pid)
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{proc.pid}\n")
    assert owned_pid(pid_file, [marker]) is None
    assert not pid_file.exists()
    pid_file.write_text("not a pid\n")
    assert owned_pid(pid_file, [marker]) is None
    assert not pid_file.exists()


def test_a_server_of_ours_without_pid_file_is_adopted(
    sleeper: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, marker = sleeper
    pid_file = tmp_path / "run" / "x.pid"
    assert owned_pid(pid_file, [marker], adopt=False) is None
    assert owned_pid(pid_file, [marker]) == proc.pid
    assert read_pid(pid_file) == proc.pid


def test_stack_ignores_pid_files_of_foreign_processes(tmp_path: Path) -> None:
    stack = Stack(Settings(local={"data_dir": tmp_path}, kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"}))
    run = tmp_path / "run"
    run.mkdir()
    for name in ("kafka", "redis", "postgres"):
        (run / f"{name}.pid").write_text(f"{os.getpid()}\n")  # alive, but this pytest process
    assert stack.kafka.pid() is None
    assert stack.redis.pid() is None
    assert stack.postgres.pid() is None
    assert list(run.iterdir()) == []
    assert is_alive(os.getpid())


# --- stopping --------------------------------------------------------------------------------------------
def test_stop_pid_escalates_to_sigkill_when_sigterm_is_ignored() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
    start = time.monotonic()
    stop_pid(proc.pid, timeout=0.5)
    assert time.monotonic() - start < 5
    assert not is_alive(proc.pid)  # stop_pid reaped it (so Popen cannot see the signal any more)
    proc.wait(5)


def test_stop_pid_of_a_gone_process_returns(sleeper: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, _ = sleeper
    proc.kill()
    proc.wait()
    stop_pid(proc.pid, timeout=1)


# --- dependencies and configuration ----------------------------------------------------------------------
def test_missing_java_is_a_dependency_error_with_the_install_hint(tmp_path: Path) -> None:
    with pytest.raises(DependencyMissingError, match=r"RECEIPTFLOW_JAVA_HOME.*apt-get install openjdk-17"):
        java_binary(Settings(local={"java_home": tmp_path / "no-jdk", "data_dir": tmp_path}))


def test_kafka_version_comes_from_the_repo_pom() -> None:
    assert pom_path().name == "pom.xml"
    assert pom_path().parent.parts[-2:] == ("deploy", "kafka")
    assert kafka_version() == "4.1.1"


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [("127.0.0.1:9092", ("127.0.0.1", 9092)), ("localhost:1234,other:1", ("localhost", 1234))],
)
def test_parse_bootstrap(bootstrap: str, expected: tuple[str, int]) -> None:
    assert parse_bootstrap(bootstrap) == expected


def test_broker_config_is_single_node_kraft(tmp_path: Path) -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:19092", "topic_partitions": 4}, local={"data_dir": tmp_path}
    )
    props = EmbeddedKafka(settings).properties()
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == str((tmp_path / "kafka" / "data").resolve())
    assert props["num.partitions"] == "4"


def test_the_broker_requires_scram_logins_and_denies_what_no_acl_grants(tmp_path: Path) -> None:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:19092"}, local={"data_dir": tmp_path})
    broker = EmbeddedKafka(settings)
    props = broker.properties()
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == "User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert "PLAINTEXT://" not in props["listeners"].replace("SASL_PLAINTEXT://", "")
    # The admin password is generated per install (owner only) and is the one the broker's logins carry.
    secret = tmp_path / "secrets" / "kafka-admin"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    assert len(password) == 64
    assert f'password="{password}"' in props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert f'user_admin="{password}"' in props["listener.name.controller.plain.sasl.jaas.config"]
    assert broker.admin_login()["sasl.password"] == password
    broker._write_config()
    assert stat.S_IMODE(broker.config_file.stat().st_mode) == 0o600, "server.properties holds the password"


def test_without_kafka_auth_the_broker_is_plaintext_without_acls(tmp_path: Path) -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:19092"}, local={"data_dir": tmp_path, "kafka_auth": False}
    )
    props = EmbeddedKafka(settings).properties()
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert "authorizer.class.name" not in props and "super.users" not in props
    assert not (tmp_path / "secrets").exists()


def test_a_given_admin_password_the_broker_cannot_carry_is_refused(tmp_path: Path) -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:19092", "admin_password": 'a"b; c'}, local={"data_dir": tmp_path}
    )
    with pytest.raises(ConfigError, match="cannot be used by the embedded broker"):
        EmbeddedKafka(settings).properties()


def test_a_process_is_alive_until_its_last_thread_ends() -> None:
    # A killed JVM looks like this for a moment: a zombie main thread while other threads still run
    # (and still hold the listening socket). It must not count as gone yet.
    code = (
        "import ctypes, sys, threading\n"
        "threading.Thread(target=sys.stdin.read).start()\n"
        "print('ok', flush=True)\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline() == b"ok\n"

    def leader_state() -> str:
        return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    wait_until(lambda: leader_state() == "Z", 10, 0.01, what="main thread exit")
    assert is_alive(proc.pid)
    proc.stdin.close()  # the remaining thread's read returns: the last thread ends
    wait_until(lambda: not is_alive(proc.pid), 10, 0.01, what="process exit")
    assert proc.wait(5) == 0


def test_a_missing_pom_is_a_dependency_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import receiptflow.stack.kafka_dist as kafka_module  # noqa: PLC0415

    class NoPackageData:
        @staticmethod
        def files(_package: str) -> Path:
            return tmp_path / "site-packages" / "receiptflow"

    # As in an installed wheel without the source tree: neither deploy/kafka/pom.xml nor package data.
    monkeypatch.setattr(kafka_module, "REPO_POM", tmp_path / "deploy" / "kafka" / "pom.xml")
    monkeypatch.setattr(kafka_module, "resources", NoPackageData)
    with pytest.raises(DependencyMissingError, match=r"Kafka pom was not found.*deploy/kafka/pom\.xml"):
        kafka_version()
