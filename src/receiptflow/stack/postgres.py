"""A local PostgreSQL server (Debian's ``postgresql`` binaries) for tests and ``stack up --with-postgres``.

The cluster is created with ``initdb`` (trust authentication on loopback only: it is a local
development and test server) and started with ``postgres`` listening on 127.0.0.1 and a Unix
socket inside its own directory. PostgreSQL refuses to run as root, so when we are root the
server runs as the ``postgres`` system user (created by the Debian package) and its data directory
lives in ``/var/tmp/receiptflow-postgres/<id>``, a place that user can reach (a data dir under
``/root`` or a pytest temp dir is not traversable for it).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from ..config import Settings
from ..errors import DependencyMissingError, PortInUseError, StackError
from .process import ComponentStatus, owned_pid, port_open, spawn, stop_pid, tail, wait_until

DATABASE = "receiptflow"


def pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for c in candidates:
        if (Path(c) / "postgres").exists():
            return Path(c)
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise DependencyMissingError(
        "PostgreSQL server binaries not found: apt-get install postgresql (make setup does it)"
    )


def _demote(user: str) -> tuple[Callable[[], None] | None, int, int]:
    if os.geteuid() != 0:
        return None, os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam(user)
    except KeyError as exc:
        raise DependencyMissingError(
            f"running as root needs the {user!r} system user (apt-get install postgresql)"
        ) from exc

    def demote() -> None:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return demote, pw.pw_uid, pw.pw_gid


class EmbeddedPostgres:
    name = "postgres"

    def __init__(self, settings: Settings, port: int | None = None, pgdata: Path | None = None) -> None:
        self.settings = settings
        url = settings.warehouse_url or ""
        parsed = urlsplit(url) if url.startswith("postgres") else None
        self.host = "127.0.0.1"
        self.port = port or (parsed.port if parsed and parsed.port else 5432)
        self.run_dir = settings.data_dir.resolve() / "run"
        self.pid_file = self.run_dir / "postgres.pid"
        if pgdata is None:
            if os.geteuid() == 0:
                key = hashlib.sha1(str(settings.data_dir.resolve()).encode()).hexdigest()[:12]  # noqa: S324 - a name
                pgdata = Path("/var/tmp/receiptflow-postgres") / key  # noqa: S108 - fixed, root-owned parent, per-data-dir name
            else:
                pgdata = settings.data_dir.resolve() / "postgres"
        self.pgdata = pgdata
        self.user = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{DATABASE}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> int | None:
        return owned_pid(self.pid_file, ["postgres", str(self.pgdata)])

    def _connect_ok(self, dbname: str) -> bool:
        try:
            with psycopg.connect(
                host=self.host, port=self.port, user=self.user, dbname=dbname, connect_timeout=2
            ) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            return ComponentStatus(self.name, "running", pid, self.url)
        if port_open(self.host, self.port):
            return ComponentStatus(self.name, "external", None, self.endpoint)
        return ComponentStatus(self.name, "stopped", None, self.url)

    def up(self, timeout: float = 60.0) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            wait_until(lambda: self._connect_ok(DATABASE), timeout, "PostgreSQL")
            return ComponentStatus(self.name, "running", pid, self.url)
        if port_open(self.host, self.port):
            raise PortInUseError(f"port {self.endpoint} for PostgreSQL is taken by another program")
        bindir = pg_bindir()
        demote, uid, gid = _demote(self.user)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        os.chown(self.pgdata, uid, gid)
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            done = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.pgdata), "-A", "trust", "-U", self.user, "-E", "UTF8"],
                capture_output=True,
                text=True,
                check=False,
                preexec_fn=demote,
                cwd="/",
            )
            if done.returncode != 0:
                raise StackError(f"initdb failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        log = self.pgdata / "server.log"
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={self.pgdata}",
            "-c",
            "fsync=on",
            "-c",
            "max_connections=50",
        ]
        # The log file must be writable by the server's user, so it lives in its data dir.
        proc = spawn(argv, log, self.pid_file, preexec_fn=demote, cwd="/")
        wait_until(
            lambda: self._connect_ok("postgres"),
            timeout,
            "PostgreSQL",
            alive=lambda: proc.poll() is None,
            details=lambda: tail(log),
        )
        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True) as c:
            if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                c.execute(f'CREATE DATABASE "{DATABASE}"')
        return ComponentStatus(self.name, "running", proc.pid, self.url)

    def down(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=60)
        self.pid_file.unlink(missing_ok=True)
        return ComponentStatus(self.name, "stopped", None, self.url)
