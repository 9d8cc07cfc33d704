"""The embedded Redis server (the distribution's ``redis-server``), started only when none answers.

If something already answers PING at ``RECEIPTFLOW_REDIS_URL`` it is used as it is ("external").
Otherwise ``redis-server`` (from PATH or ``/usr/bin``; Debian package ``redis-server``, installed by
``make setup``) is started with a generated ``<data dir>/redis/redis.conf``: bound to 127.0.0.1 on
the URL's port, append-only file with an fsync every second under ``<data dir>/redis`` (profiles
survive a restart of the stack), log file ``<data dir>/redis/redis.log``, PID file
``<data dir>/run/redis.pid``. It runs in the foreground of a detached session (``daemonize no``:
we detach it ourselves, so the PID we record is the server's).

With ``RECEIPTFLOW_REDIS_ACL_FILE`` the server loads that ACL file (``aclfile``: the users of
``deploy/redis/users.acl`` with their password hashes) instead of a ``requirepass``; the URL then
names one of its users (``redis://profile-writer@host:port/0``) and ``RECEIPTFLOW_REDIS_PASSWORD``
holds that user's password.

Redis rewrites its process title, so the config path disappears from its command line; a PID is
recognised as ours by ``redis-server`` in the command line *and* its working directory being our
``<data dir>/redis`` (Redis changes into its ``dir`` at start).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..config import Settings
from ..errors import DependencyMissingError, PortInUseError, StackError
from ..files import private_dir
from .process import ComponentStatus, is_local, owned_pid, port_open, spawn, stop_pid, tail, wait_until

log = logging.getLogger(__name__)

INSTALL_HINT = "redis-server is not installed: apt-get install redis-server (make setup does it)"


def redis_binary() -> str:
    """The ``redis-server`` executable; DependencyMissingError with the install hint when missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if Path("/usr/bin/redis-server").is_file():
        return "/usr/bin/redis-server"
    raise DependencyMissingError(INSTALL_HINT)


def redis_server_version(binary: str) -> str | None:
    """The version ``redis-server --version`` reports ("7.0.15"), None when it cannot be told."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), None)


class EmbeddedRedis:
    """Start, stop and inspect the Redis server of one data dir."""

    name = "redis"

    def __init__(self, settings: Settings, ready_timeout: float = 30.0) -> None:
        self.settings = settings
        parts = urlsplit(settings.redis_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        password = settings.redis_password.get_secret_value() if settings.redis_password else parts.password
        self._password = unquote(password) if password else None
        data_dir = settings.data_dir.expanduser().resolve()
        self.home = data_dir / "redis"
        self.config_file = self.home / "redis.conf"
        self.log_file = self.home / "redis.log"
        self.pid_file = data_dir / "run" / "redis.pid"
        self.acl_file = settings.redis_acl_file.expanduser().resolve() if settings.redis_acl_file else None
        self.ready_timeout = ready_timeout

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> int | None:
        """The PID of this data dir's redis-server when it runs (a stale PID file is removed)."""
        return owned_pid(self.pid_file, ["redis-server"], cwd=self.home)

    def _client(self) -> redis.Redis:
        # A probe: one attempt with short timeouts (the caller polls), no client-side retries.
        return redis.Redis.from_url(
            self.settings.redis_connection_url(),
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )

    def ready(self) -> bool:
        """True when the server at the URL answers PING."""
        client = self._client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def server_version(self) -> str | None:
        """``redis_version`` as the server at the URL reports it."""
        client = self._client()
        try:
            info = client.info("server")
        except redis.RedisError:
            return None
        finally:
            client.close()
        return str(info.get("redis_version")) if isinstance(info, dict) else None

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            return ComponentStatus(self.name, "running", pid, self.endpoint)
        if self.ready():
            return ComponentStatus(self.name, "external", None, self.endpoint)
        return ComponentStatus(self.name, "stopped", None, self.endpoint)

    def _config(self) -> str:
        lines = [
            "# Generated by receiptflow.stack.redis on every start; edits are overwritten.",
            f"bind {self.host}",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.home}"',
            f'logfile "{self.log_file}"',
            # Profiles are the product of the stream: keep them across restarts, losing at most ~1 s.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
        ]
        if self.acl_file is not None:
            # Users, their rights and password hashes (the default user may be off: then nothing
            # runs without AUTH).
            lines.append(f'aclfile "{self.acl_file}"')
        elif self._password:
            # The URL carries a password, so clients will AUTH: a server without one would refuse that.
            lines.append(f'requirepass "{self._password}"')
        return "\n".join(lines) + "\n"

    def up(self) -> ComponentStatus:
        """Start redis-server unless ours already runs or some Redis answers; wait for PING."""
        pid = self.pid()
        if pid is not None:
            wait_until(self.ready, self.ready_timeout, 0.1, what=f"Redis {self.endpoint} (pid {pid})")
            return ComponentStatus(self.name, "running", pid, self.endpoint)
        if self.ready():
            log.info("a Redis server already answers at %s: using it", self.endpoint)
            return ComponentStatus(self.name, "external", None, self.endpoint)
        if port_open(self.host, self.port):
            raise PortInUseError(
                f"port {self.endpoint} (Redis) is taken by a program that does not answer Redis PING "
                "(or wants another password); stop it or choose another RECEIPTFLOW_REDIS_URL port"
            )
        if not is_local(self.host):
            raise StackError(f"no Redis answers at {self.endpoint}, and an embedded one only runs on 127.0.0.1")
        binary = redis_binary()
        if self.acl_file is not None and not self.acl_file.is_file():
            raise StackError(f"Redis ACL file {self.acl_file} does not exist")
        # The AOF holds card ids and profiles: the directory it lives in is the owner's only.
        private_dir(self.home)
        self.config_file.write_text(self._config())
        self.config_file.chmod(0o600)  # it may hold the password
        proc = spawn([binary, str(self.config_file)], self.home / "stdout.log", self.pid_file, cwd=self.home)
        try:
            wait_until(
                self.ready,
                self.ready_timeout,
                0.1,
                what=f"Redis {self.endpoint} (pid {proc.pid})",
                alive=lambda: proc.poll() is None,
                details=lambda: tail(self.log_file) + tail(self.home / "stdout.log", 10),
            )
        except StackError:
            stop_pid(proc.pid, timeout=10)
            self.pid_file.unlink(missing_ok=True)
            raise
        log.info("Redis ready at %s (pid %d)", self.endpoint, proc.pid)
        return ComponentStatus(self.name, "running", proc.pid, self.endpoint)

    def down(self, timeout: float = 30.0) -> ComponentStatus:
        """Stop this data dir's redis-server (SIGTERM: it finishes the AOF; SIGKILL after ``timeout``)."""
        pid = self.pid()
        if pid is not None:
            log.info("stopping Redis (pid %d)", pid)
            stop_pid(pid, timeout=timeout)
        self.pid_file.unlink(missing_ok=True)
        return self.status()  # "stopped", or "external" for a server we never started
