"""The embedded Redis server (Debian's ``redis-server``), started only when none answers.

If something already answers PING at ``RECEIPTFLOW_REDIS_URL`` it is used as it is ("external").
Otherwise ``redis-server`` is started on the URL's local port with its append-only file under
``<data dir>/redis`` (fsync every second), so profiles survive a restart of the stack.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import redis

from ..config import Settings
from ..errors import DependencyMissingError, PortInUseError, StackError
from .kafka import is_local
from .process import ComponentStatus, owned_pid, port_open, spawn, stop_pid, tail, wait_until


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise DependencyMissingError("redis-server is not installed: apt-get install redis-server (make setup does it)")
    return found


class EmbeddedRedis:
    name = "redis"

    def __init__(self, settings: Settings, ready_timeout: float = 30.0) -> None:
        self.settings = settings
        parts = urlsplit(settings.redis_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.home = settings.data_dir.resolve() / "redis"
        self.pid_file = settings.data_dir.resolve() / "run" / "redis.pid"
        self.ready_timeout = ready_timeout

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _markers(self) -> list[str]:
        return ["redis-server", f":{self.port}"]

    def pid(self) -> int | None:
        pid = owned_pid(self.pid_file, self._markers())
        return pid

    def ready(self) -> bool:
        client = redis.Redis.from_url(self.settings.redis_connection_url(), socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def _ready_quiet(self) -> bool:
        try:
            return self.ready()
        except redis.RedisError:
            return False

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            return ComponentStatus(self.name, "running", pid, self.endpoint)
        if self._ready_quiet():
            return ComponentStatus(self.name, "external", None, self.endpoint)
        return ComponentStatus(self.name, "stopped", None, self.endpoint)

    def up(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            wait_until(self._ready_quiet, self.ready_timeout, "Redis")
            return ComponentStatus(self.name, "running", pid, self.endpoint)
        if self._ready_quiet():
            return ComponentStatus(self.name, "external", None, self.endpoint)
        if port_open(self.host, self.port):
            raise PortInUseError(f"port {self.endpoint} is taken by something that does not answer Redis PING")
        if not is_local(self.host):
            raise StackError(f"Redis at {self.endpoint} does not answer, and it is not a local address to start one on")
        binary = redis_binary()
        self.home.mkdir(parents=True, exist_ok=True)
        conf = self.home / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    f"bind {self.host}",
                    f"port {self.port}",
                    "protected-mode yes",
                    "daemonize no",
                    f"dir {self.home}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    f"logfile {self.home / 'redis.log'}",
                    "",
                ]
            )
        )
        proc = spawn([binary, str(conf)], self.home / "stdout.log", self.pid_file)
        wait_until(
            self._ready_quiet,
            self.ready_timeout,
            "Redis",
            alive=lambda: proc.poll() is None,
            details=lambda: tail(self.home / "redis.log"),
        )
        return ComponentStatus(self.name, "running", proc.pid, self.endpoint)

    def down(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)
        return ComponentStatus(self.name, "stopped", None, self.endpoint)
