"""What every embedded server of the stack does the same way: start, wait until ready, status, stop.

:class:`EmbeddedServer` holds the life cycle that Kafka, Redis and PostgreSQL share; a subclass says
only what is its own: where its files are, how it is recognised (PID markers), how it is probed and
how it is launched (:meth:`EmbeddedServer._launch`).

``up`` starts a server only when none answers: a server of ours that runs (found by its PID file,
see :func:`~receiptflow.stack.process.owned_pid`) is waited for, something else that answers at the
endpoint is used as it is ("external"), and a port taken by a program that does not answer is a
:class:`~receiptflow.errors.PortInUseError`. A server that never becomes ready is stopped again, not
left behind half-started. ``down`` stops only a server of ours and removes its PID file.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from ..config import Settings
from ..errors import PortInUseError, StackError
from .process import ComponentStatus, gone, is_local, owned_pid, port_open, stop_pid, tail, wait_until

log = logging.getLogger(__name__)


class EmbeddedServer(ABC):
    """Start, stop and inspect one local server process of one data dir."""

    name: str
    label: ClassVar[str]  # how messages name the server: "Redis", "Kafka broker", "PostgreSQL"
    poll_interval: ClassVar[float] = 0.1  # between readiness probes
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM  # the server's clean shutdown
    stop_timeout: ClassVar[float] = 60.0  # default wait for a clean shutdown before SIGKILL
    abort_timeout: ClassVar[float] = 15.0  # the same, for a server that never became ready

    settings: Settings
    host: str
    port: int
    home: Path  # the server's own folder (its data, or where it runs)
    pid_file: Path
    log_file: Path
    ready_timeout: float

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """What a status of ours reports as the endpoint (a server with a URL reports the URL)."""
        return self.endpoint

    @property
    def detail(self) -> str:
        """The extra text of a "running" status."""
        return ""

    @abstractmethod
    def _markers(self) -> list[str]:
        """What the command line of our server holds (see :func:`~receiptflow.stack.process.is_ours`)."""

    def _cwd(self) -> Path | None:
        """The working directory our server runs in, when its command line alone cannot tell it."""
        return None

    def pid(self) -> int | None:
        """The PID of this data dir's server when it runs (a stale PID file is removed)."""
        return owned_pid(self.pid_file, self._markers(), cwd=self._cwd())

    @abstractmethod
    def ready(self) -> bool:
        """True when the server at the endpoint answers."""

    def _answers(self) -> bool:
        """True when something other than a server of ours is at the endpoint (``status``: external)."""
        return port_open(self.host, self.port)

    @property
    def stdout_file(self) -> Path | None:
        """Where the server's own output goes, when that is not :attr:`log_file` (JVM output, crashes)."""
        return None

    def _details(self) -> str:
        """Text appended to a readiness error: the tail of the server's log (and of its output)."""
        out = self.stdout_file
        return tail(self.log_file) + (tail(out, 15) if out is not None else "")

    def _running(self, pid: int) -> ComponentStatus:
        return ComponentStatus(self.name, "running", pid, self.address, self.detail)

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            return self._running(pid)
        if self._answers():
            return ComponentStatus(self.name, "external", None, self.endpoint)
        return ComponentStatus(self.name, "stopped", None, self.address)

    def _port_taken(self) -> str:
        """The message for a port that something other than this kind of server holds."""
        return f"port {self.endpoint} ({self.label}) is taken by another program"

    def _ready_after_start(self) -> bool:
        """The readiness probe right after a start (a server may need setup before :meth:`ready`)."""
        return self.ready()

    def _after_start(self) -> None:  # noqa: B027 - an optional hook: most servers need no setup
        """Setup once a freshly started server answers (e.g. creating a database)."""

    @abstractmethod
    def _launch(self) -> subprocess.Popen[bytes]:
        """Prepare the server's files and spawn it (detached, PID file written); do not wait."""

    def up(self) -> ComponentStatus:
        """Start the server unless ours already runs or another answers; wait until it answers."""
        started = self.start()
        if isinstance(started, ComponentStatus):
            return started
        self.wait_started(started)
        return self._running(started.pid)

    def start(self) -> ComponentStatus | subprocess.Popen[bytes]:
        """Launch the server without waiting for it (a cluster node answers only once a quorum runs).

        Returns the status when nothing had to be started (ours already runs, or another server
        answers), else the new process for :meth:`wait_started`.
        """
        pid = self.pid()
        if pid is not None:
            self._wait_ready(self.ready, lambda: not gone(pid), pid)
            return self._running(pid)
        if port_open(self.host, self.port):
            if self.ready():
                log.info("%s answers at %s (not started by us): using it", self.label, self.endpoint)
                return ComponentStatus(self.name, "external", None, self.endpoint)
            raise PortInUseError(self._port_taken())
        if not is_local(self.host):
            raise StackError(f"no {self.label} answers at {self.endpoint}, and an embedded one only runs on 127.0.0.1")
        return self._launch()

    def wait_started(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait until a server launched by :meth:`start` answers; stop it when it never does."""
        try:
            self._wait_ready(self._ready_after_start, lambda: proc.poll() is None, proc.pid)
            self._after_start()
        except StackError:
            stop_pid(proc.pid, timeout=self.abort_timeout, sig=self.stop_signal)
            self.pid_file.unlink(missing_ok=True)
            raise
        log.info("%s ready at %s (pid %d)", self.label, self.endpoint, proc.pid)

    def _wait_ready(self, probe: Callable[[], bool], alive: Callable[[], bool], pid: int) -> None:
        wait_until(
            probe,
            self.ready_timeout,
            self.poll_interval,
            what=f"{self.label} {self.endpoint} (pid {pid})",
            alive=alive,
            details=self._details,
        )

    def down(self, timeout: float | None = None) -> ComponentStatus:
        """Stop this data dir's server (its clean shutdown signal; SIGKILL after ``timeout``)."""
        pid = self.pid()
        if pid is not None:
            log.info("stopping %s (pid %d)", self.label, pid)
            stop_pid(pid, timeout=self.stop_timeout if timeout is None else timeout, sig=self.stop_signal)
        self.pid_file.unlink(missing_ok=True)
        return self.status()  # "stopped", or "external" for a server we never started

    def kill(self) -> int:
        """SIGKILL the server (crash tests): no clean shutdown; the stale PID file stays. Returns the PID."""
        pid = self.pid()
        if pid is None:
            raise StackError(f"no embedded {self.label} of {self.home} is running")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: gone(pid), 30, 0.05, what=f"exit of killed {self.label} {pid}")
        return pid
