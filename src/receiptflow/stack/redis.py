"""The embedded Redis server (the distribution's ``redis-server``), started only when none answers.

If something already answers PING at ``RECEIPTFLOW_REDIS_URL`` it is used as it is ("external").
Otherwise ``redis-server`` (from PATH or ``/usr/bin``; Debian package ``redis-server``, installed by
``make setup``) is started with a generated ``<data dir>/redis/redis.conf``: bound to 127.0.0.1 on
the URL's port, append-only file with an fsync every second under ``<data dir>/redis`` (profiles
survive a restart of the stack), log file ``<data dir>/redis/redis.log``, PID file
``<data dir>/run/redis.pid``. It runs in the foreground of a detached session (``daemonize no``:
we detach it ourselves, so the PID we record is the server's).

The server always runs with ACL users and the ``default`` user off, so a client that does not
authenticate can run no command: on every start it loads ``<data dir>/redis/users.acl`` (0600),
rendered from ``deploy/redis/users.acl`` with each role's password as a SHA-256 hash — the role
passwords given in the settings, else the ones generated for this install under
``<data dir>/secrets`` (see :mod:`receiptflow.redis_auth`). With ``RECEIPTFLOW_REDIS_ACL_FILE`` it
loads that file instead (users and hashes of the operator's own). ``<data dir>/redis`` (AOF, logs,
config) is readable by its owner only. The stack's own checks connect as ``admin`` when this
install has its password, else as the profile writer.

Redis rewrites its process title, so the config path disappears from its command line; a PID is
recognised as ours by ``redis-server`` in the command line *and* its working directory being our
``<data dir>/redis`` (Redis changes into its ``dir`` at start).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..config import Settings
from ..errors import DependencyMissingError, StackError
from ..files import write_owner_only
from ..redis_auth import TEMPLATE_USERS, RedisRole, connection_url, embedded_acl, role_password, with_credentials
from .process import spawn
from .server import EmbeddedServer

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


class EmbeddedRedis(EmbeddedServer):
    """Start, stop and inspect the Redis server of one data dir."""

    name = "redis"
    label = "Redis"
    stop_timeout = 30.0  # SIGTERM: Redis finishes the AOF first
    abort_timeout = 10.0

    def __init__(self, settings: Settings, ready_timeout: float = 30.0) -> None:
        self.settings = settings
        parts = urlsplit(settings.redis.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        data_dir = settings.local.data_dir.expanduser().resolve()
        self.home = data_dir / "redis"
        self.config_file = self.home / "redis.conf"
        self.log_file = self.home / "redis.log"
        self.pid_file = data_dir / "run" / "redis.pid"
        self.given_acl_file = settings.redis.acl_file.expanduser().resolve() if settings.redis.acl_file else None
        self.acl_file = self.given_acl_file or self.home / "users.acl"
        self.ready_timeout = ready_timeout

    @property
    def stdout_file(self) -> Path:
        return self.home / "stdout.log"

    def _markers(self) -> list[str]:
        return ["redis-server"]

    def _cwd(self) -> Path:
        return self.home  # Redis rewrites its process title but runs inside its dir

    def _probe_url(self) -> str:
        # The admin user exists only on a server that loads the ACL rendered here, with this
        # install's admin password; otherwise the profile writer can PING too.
        admin = role_password(self.settings, RedisRole.ADMIN) if self.given_acl_file is None else None
        if admin is not None:
            return with_credentials(self.settings.redis.url, TEMPLATE_USERS[RedisRole.ADMIN], admin)
        return connection_url(self.settings, RedisRole.WRITER)

    def _client(self) -> redis.Redis:
        # A probe: one attempt with short timeouts (the caller polls), no client-side retries.
        return redis.Redis.from_url(
            self._probe_url(),
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

    def _answers(self) -> bool:
        return self.ready()

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

    def _port_taken(self) -> str:
        return (
            f"port {self.endpoint} (Redis) is taken by a program that does not answer Redis PING "
            "(or wants another password); stop it or choose another RECEIPTFLOW_REDIS_URL port"
        )

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
        # Users, their rights and password hashes; the default user is off, so nothing runs without AUTH.
        lines.append(f'aclfile "{self.acl_file}"')
        return "\n".join(lines) + "\n"

    def _launch(self) -> subprocess.Popen[bytes]:
        binary = redis_binary()
        if self.given_acl_file is not None and not self.given_acl_file.is_file():
            raise StackError(f"Redis ACL file {self.given_acl_file} does not exist")
        # The AOF holds every profile: the directory is its owner's only, whatever the umask.
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            self.home.chmod(0o700)
        if self.given_acl_file is None:
            write_owner_only(self.acl_file, embedded_acl(self.settings))
        write_owner_only(self.config_file, self._config())
        return spawn([binary, str(self.config_file)], self.stdout_file, self.pid_file, cwd=self.home)
