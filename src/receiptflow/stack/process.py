"""Local process management for the embedded stack: ports, readiness deadlines, PID files, clean stops.

Servers are started detached (a session of their own, so a Ctrl-C in the terminal that ran
``receiptflow stack up`` does not reach them; output to a log file) and tracked by a PID file under
``<data dir>/run``. Before a PID is trusted or signalled it is checked to be the server we started
for *this* data dir: alive (not a zombie), and its command line (or working directory) carries the
markers the component names, e.g. ``kafka.Kafka`` plus the absolute path of its ``server.properties``.
A PID file whose process is gone or is something else (a reused PID after a reboot) is stale and is
removed. Readiness is always a real check (an admin request, a PING, a connection) polled against a
deadline with :func:`wait_until`, never a fixed sleep.

Nothing here prints; everything is logged on the ``receiptflow.stack`` loggers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import PortInUseError, ReadinessTimeoutError, StackError

log = logging.getLogger(__name__)

State = Literal["running", "stopped", "external", "file", "cached"]
"""``running``: a server of ours (PID known); ``stopped``: nothing answers; ``external``: something
we did not start answers at the endpoint and is used as it is; ``file``: a server-less store (the
DuckDB file); ``cached``: the Kafka jars are on disk (``stack fetch``)."""


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """What ``stack up|down|status`` reports about one component."""

    name: str
    state: State
    pid: int | None
    endpoint: str
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


# --- ports -----------------------------------------------------------------------------------------
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to on ``host`` right now, never the same one twice in this process.

    Ports are picked *below* the kernel's ephemeral range when it leaves room (Linux: 32768+): a
    server port inside that range can be taken by some client's outgoing connection while the
    server is down, and a client that keeps reconnecting to a stopped server on such a port can
    even connect to itself (TCP simultaneous open), which then keeps the server from binding its
    port on restart -- exactly what the crash-and-restart tests do. Otherwise the kernel picks
    (bind to port 0). Either way the port is only free *now*; the caller binds it soon after.
    """
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    if low > 12000:
        for _ in range(500):
            port = rng.randrange(10000, low)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise StackError(f"no free TCP port found on {host}")


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports nothing is bound to on ``host`` right now (a local
    cluster takes a pair per node), below the ephemeral range for the reasons :func:`free_port` gives."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(500):
        base = rng.randrange(10000, max(10001, low - count))
        ports = range(base, base + count)
        if not _handed_out.intersection(ports) and all(_bindable(host, p) for p in ports):
            _handed_out.update(ports)
            return base
    raise StackError(f"no run of {count} free TCP ports found on {host}")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Raise :class:`PortInUseError` naming the port when another program listens on it."""
    if port_open(host, port) or not _bindable(host, port):
        raise PortInUseError(f"port {host}:{port} needed by {what} is taken by another program")


def is_local(host: str) -> bool:
    """True for loopback hosts: the only ones we ever start a server on."""
    return host in ("localhost", "::1") or host.startswith("127.")


# --- readiness -------------------------------------------------------------------------------------
def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 30.0,
    interval: float = 0.2,
    *,
    what: str = "condition",
    alive: Callable[[], bool] | None = None,
    details: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` every ``interval`` s until it returns true, for at most ``timeout`` s.

    A predicate that raises counts as "not yet" (a server that refuses connections is simply not
    ready). Raises :class:`ReadinessTimeoutError` at the deadline, or :class:`StackError` as soon as
    ``alive`` returns false (the process we wait for has exited: waiting longer cannot help).
    ``details`` supplies text for the error, typically the tail of the server's log.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - any failure of a readiness probe means "not ready yet"
            last_error = exc
        if alive is not None and not alive():
            extra = details() if details else ""
            raise StackError(f"{what} exited before it became ready{extra}")
        now = time.monotonic()
        if now >= deadline:
            extra = details() if details else ""
            why = f" (last probe error: {last_error})" if last_error is not None else ""
            raise ReadinessTimeoutError(f"{what} not ready after {timeout:g}s{why}{extra}")
        time.sleep(min(interval, max(deadline - now, 0.0)))


# --- PIDs ------------------------------------------------------------------------------------------
def read_pid(pid_file: Path) -> int | None:
    """The PID in ``pid_file``, or None when it is missing or garbage."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def write_pid(pid_file: Path, pid: int) -> None:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_name(pid_file.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)  # atomic: a reader never sees a half-written PID


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (arguments joined by spaces), "" when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_cwd(pid: int) -> str | None:
    """The working directory of ``pid`` (needs the same user or root), None when unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def is_alive(pid: int) -> bool:
    """True while any thread of process ``pid`` runs (a fully exited zombie is not alive).

    A zombie *leader* is not enough to call a process gone: when a multi-threaded process (a JVM)
    is killed, its main thread turns into a zombie first while the other threads are still being
    torn down -- and until the last one is gone the process still holds its files and its
    listening sockets, so its port still accepts connections.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except (OSError, IndexError):
        return Path(f"/proc/{pid}").exists()  # vanished meanwhile: gone; unreadable: assume alive


def is_ours(pid: int, markers: Sequence[str], cwd: Path | None = None) -> bool:
    """True when ``pid`` is alive and is the server described by ``markers`` (and ``cwd``).

    Every marker must occur in the command line. With ``cwd`` the process's working directory must
    also be that directory: Redis rewrites its process title (the config path disappears from
    ``cmdline``) but runs inside its data dir.
    """
    if not is_alive(pid):
        return False
    line = cmdline(pid)
    if not line or not all(m in line for m in markers):
        return False
    if cwd is not None:
        actual = process_cwd(pid)
        if actual is None or Path(actual) != cwd:
            return False
    return True


def iter_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def find_pids(markers: Sequence[str], cwd: Path | None = None) -> list[int]:
    """Every live process that :func:`is_ours` accepts (used when a PID file went missing)."""
    return sorted(pid for pid in iter_pids() if pid != os.getpid() and is_ours(pid, markers, cwd))


def owned_pid(pid_file: Path, markers: Sequence[str], cwd: Path | None = None, adopt: bool = True) -> int | None:
    """The PID of our server: from ``pid_file`` when that process is alive and ours.

    A stale PID file (dead process, or a reused PID running something else) is removed. With
    ``adopt``, a server of ours that runs without a (valid) PID file -- the file was deleted, or a
    crash happened between start and write -- is found by its markers and the PID file rewritten,
    so ``down`` can still stop it instead of mistaking it for an external server.
    """
    pid = read_pid(pid_file)
    if pid is not None and is_ours(pid, markers, cwd):
        return pid
    if pid_file.exists():
        log.info("removing stale PID file %s (process %s is gone or not ours)", pid_file, pid)
        pid_file.unlink(missing_ok=True)
    if adopt:
        found = find_pids(markers, cwd)
        if len(found) == 1:
            log.info("found our server without a PID file (pid %d): adopting it", found[0])
            write_pid(pid_file, found[0])
            return found[0]
    return None


# --- starting and stopping -------------------------------------------------------------------------
def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, formatted to be appended to an error message."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    if not text:
        return ""
    return f"\n--- last lines of {path} ---\n" + "\n".join(text)


def spawn(
    argv: Sequence[str],
    log_file: Path,
    pid_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a detached server, its stdout and stderr appended to ``log_file``, its PID in ``pid_file``.

    ``user``/``group`` (uid/gid, only as root) run it as another user, with no supplementary groups.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting %s", " ".join(argv))
    with open(log_file, "ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
            )
        except OSError as exc:
            raise StackError(f"cannot start {argv[0]}: {exc}") from exc
    write_pid(pid_file, proc.pid)
    return proc


def reap(pid: int) -> None:
    """Collect the exit status of ``pid`` when it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def gone(pid: int) -> bool:
    reap(pid)
    return not is_alive(pid)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if gone(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_pid(pid: int, timeout: float = 30.0, sig: signal.Signals = signal.SIGTERM) -> None:
    """Send ``sig`` (SIGTERM: a clean shutdown), wait up to ``timeout`` s, then SIGKILL.

    The escalation kills the whole process group: our servers lead a session of their own (see
    :func:`spawn`), so whatever they forked (PostgreSQL backends, a Redis rewrite child) goes too.
    Returns once the process is gone; raises :class:`StackError` if even SIGKILL did not end it.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        reap(pid)
        return
    if _wait_gone(pid, timeout):
        return
    log.warning("process %d ignored %s for %gs: sending SIGKILL", pid, sig.name, timeout)
    kill_group(pid)
    if not _wait_gone(pid, 10.0):
        raise StackError(f"process {pid} did not exit even after SIGKILL")


def kill_group(pid: int) -> None:
    """SIGKILL ``pid`` and, when it leads its own process group, that group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
