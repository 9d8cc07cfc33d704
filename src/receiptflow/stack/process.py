"""Local process management for the embedded stack: PID files, ports, readiness, clean stops.

Servers are started detached (their own session, output to a log file) and tracked by a PID file
under ``<data dir>/run``. Before a PID from a file is signalled, its command line is checked to be
the server we started (a PID may have been reused after a reboot). Readiness is always a real
check (an admin request, a PING, a connection) polled with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PortInUseError, ReadinessTimeoutError, StackError


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    state: str  # running, stopped, external
    pid: int | None
    endpoint: str


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, chosen *below* the kernel's ephemeral range.

    A server port inside the ephemeral range can be taken by a client's outgoing connection, and a
    client that keeps reconnecting to a stopped server on such a port can even connect to itself
    (TCP simultaneous open), which then blocks the server from binding its port again on restart.
    """
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    if low > 12000:
        for _ in range(200):
            port = rng.randrange(10000, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, what: str) -> None:
    if port_open(host, port):
        raise PortInUseError(f"port {host}:{port} needed by {what} is taken by another program")


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], bool] | None = None,
    details: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; ReadinessTimeoutError after ``timeout`` seconds.

    ``alive`` lets a caller fail fast when the process it waits for has already exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001, S110 - a check that errors is simply "not ready yet"
            pass
        if alive is not None and not alive():
            extra = details() if details else ""
            raise StackError(f"{what} exited before it became ready{extra}")
        if time.monotonic() >= deadline:
            extra = details() if details else ""
            raise ReadinessTimeoutError(f"{what} not ready after {timeout:.0f}s{extra}")
        time.sleep(interval)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owned_pid(pid_file: Path, markers: Sequence[str]) -> int | None:
    """The PID in ``pid_file`` if that process is alive and its command line has every marker.

    A stale PID file (dead process, or a reused PID running something else) is removed.
    """
    pid = read_pid(pid_file)
    if pid is None:
        return None
    line = cmdline(pid)
    if is_alive(pid) and all(m in line for m in markers):
        return pid
    with contextlib.suppress(OSError):
        pid_file.unlink()
    return None


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n--- " + str(path) + " ---\n" + "\n".join(text)


def spawn(argv: Sequence[str], log_file: Path, pid_file: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    """Start a detached server (own session, so a Ctrl-C in our terminal does not reach it)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(  # type: ignore[call-overload]
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc  # type: ignore[no-any-return]


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns when the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)


def _reap(pid: int) -> None:
    # When we are the parent (tests start servers in-process), collect the exit status so the
    # process does not linger as a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
