"""A local PostgreSQL server for the integration tests and ``receiptflow stack up --with-postgres``.

It uses the distribution's server binaries (Debian package ``postgresql``: ``/usr/lib/postgresql/<N>/bin``,
the newest version found, else ``postgres`` on PATH). The cluster is created once with ``initdb``
(locale C, UTF-8, *trust* authentication: a local development and test server that only listens on
127.0.0.1 and on a Unix socket inside its own data directory) and started with ``postgres``
directly (no ``pg_ctl``), detached, its output in ``<data dir>/logs/postgres.log`` and its PID in
``<data dir>/run/postgres.pid``. Readiness is a successful psycopg connection; the database
``receiptflow`` is created if missing. The URL is ``postgresql://postgres@127.0.0.1:<port>/receiptflow``.

**Running as root.** PostgreSQL refuses to run as root. When our effective uid is 0, ``initdb`` and
``postgres`` run as an unprivileged system user -- ``postgres``, which the Debian package creates;
if it is missing, a ``receiptflow-pg`` system user is created with ``useradd`` -- by passing its
uid/gid to :class:`subprocess.Popen` (no ``su``/``runuser`` needed), and the cluster directory is
chowned to that user. That user must be able to traverse to the cluster directory; a data dir under
``/root`` or a pytest temp dir (mode 0700) is not reachable for it, so in that case the cluster
lives in ``/var/tmp/receiptflow-postgres/<hash of the data dir>`` instead of ``<data dir>/postgres``
(the test fixtures pass a directory of their own). Once created, a cluster is always used where
it is, so the choice never flips between runs. The PID file and log stay under the data dir.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from ..config import Settings
from ..errors import DependencyMissingError, StackError
from .process import spawn
from .server import EmbeddedServer

log = logging.getLogger(__name__)

DATABASE = "receiptflow"
ROLE = "postgres"
FALLBACK_SYSTEM_USER = "receiptflow-pg"
ROOT_CLUSTERS = Path("/var/tmp/receiptflow-postgres")  # noqa: S108 - root-owned parent, one dir per data dir
INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install postgresql (make setup does it)"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; the socket file name adds ".s.PGSQL.<port>"


def pg_bindir() -> Path:
    """The folder with ``initdb`` and ``postgres``: the newest ``/usr/lib/postgresql/<N>/bin``, else PATH."""

    def major(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else 0

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True):
        if (Path(candidate) / "postgres").is_file() and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    found = shutil.which("postgres")
    if found:
        bindir = Path(found).resolve().parent
        if (bindir / "initdb").is_file():
            return bindir
    raise DependencyMissingError(INSTALL_HINT)


def system_user(create: bool = False) -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; created only when ``create``."""
    for name in (ROLE, FALLBACK_SYSTEM_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    if not create:
        return None
    useradd = shutil.which("useradd")
    if useradd is None:
        raise DependencyMissingError(
            "PostgreSQL cannot run as root and there is no 'postgres' system user: apt-get install postgresql"
        )
    log.warning("creating system user %s to run PostgreSQL (it refuses to run as root)", FALLBACK_SYSTEM_USER)
    done = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_SYSTEM_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"could not create system user {FALLBACK_SYSTEM_USER}: {done.stderr.strip()}")
    return pwd.getpwnam(FALLBACK_SYSTEM_USER)


def traversable(path: Path, user: pwd.struct_passwd | None) -> bool:
    """True when ``user`` (None: a user without any group of ours) may search every directory up to ``path``."""
    uid = user.pw_uid if user is not None else -1
    groups = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)} if user is not None else set()
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            return True  # from here on the folders are ours to create (mode 0755 under a usual umask)
        except OSError:
            return False
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class EmbeddedPostgres(EmbeddedServer):
    """Create, start, stop and inspect a local PostgreSQL cluster for one data dir."""

    name = "postgres"
    label = "PostgreSQL"
    stop_signal = signal.SIGINT  # PostgreSQL's *fast* shutdown: open sessions are ended

    def __init__(
        self, settings: Settings, port: int | None = None, pgdata: Path | None = None, ready_timeout: float = 60.0
    ) -> None:
        self.settings = settings
        url = settings.warehouse.url or ""
        parsed = urlsplit(url) if url.startswith("postgres") else None
        self.host = "127.0.0.1"
        self.port = port or (parsed.port if parsed is not None and parsed.port else 5432)
        data_dir = settings.local.data_dir.expanduser().resolve()
        self.pid_file = data_dir / "run" / "postgres.pid"
        self.log_file = data_dir / "logs" / "postgres.log"
        self._as_root = os.geteuid() == 0
        # Only looked up here (status and down must not create users); up() creates it if missing.
        self._run_as = system_user() if self._as_root else None
        self.pgdata = (pgdata or self._default_cluster_dir(data_dir)).resolve()
        self.home = self.pgdata
        self.ready_timeout = ready_timeout

    def _default_cluster_dir(self, data_dir: Path) -> Path:
        # The choice must be stable from one run to the next (the PID check and the data depend on
        # it): an existing cluster wins; otherwise <data dir>/postgres unless, as root, the server's
        # user could not reach it.
        inside = data_dir / "postgres"
        outside = ROOT_CLUSTERS / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
        for candidate in (inside, outside):
            if (candidate / "PG_VERSION").exists():
                return candidate
        if self._as_root and not traversable(inside, self._run_as):
            return outside
        return inside

    @property
    def url(self) -> str:
        """The DSN of the ``receiptflow`` database (no password: trust authentication)."""
        return f"postgresql://{ROLE}@{self.host}:{self.port}/{DATABASE}"

    @property
    def address(self) -> str:
        return self.url

    def _markers(self) -> list[str]:
        return ["postgres", f"-D {self.pgdata} "]

    def _connect_ok(self, dbname: str) -> bool:
        try:
            with psycopg.connect(host=self.host, port=self.port, user=ROLE, dbname=dbname, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def ready(self) -> bool:
        """True when the ``receiptflow`` database accepts a connection."""
        return self._connect_ok(DATABASE)

    def server_version(self) -> str | None:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                row = conn.execute("SHOW server_version").fetchone()
        except psycopg.Error:
            return None
        return str(row[0]).split()[0] if row else None

    def _ids(self) -> tuple[int | None, int | None]:
        return (self._run_as.pw_uid, self._run_as.pw_gid) if self._run_as is not None else (None, None)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_")) and k != "LANG"}
        env["LC_ALL"] = "C"  # the cluster uses locale C; a locale missing on a minimal machine only warns
        if self._run_as is not None:
            env["HOME"] = self._run_as.pw_dir
            env["USER"] = env["LOGNAME"] = self._run_as.pw_name
        return env

    def _initdb(self, bindir: Path) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._as_root and not traversable(self.pgdata, self._run_as):
            raise StackError(
                f"the PostgreSQL user {self._run_as.pw_name if self._run_as else '?'} cannot reach {self.pgdata} "
                "(a parent folder is not searchable for it); use a data dir outside /root, or a umask of 022"
            )
        uid, gid = self._ids()
        if uid is not None and gid is not None:
            os.chown(self.pgdata, uid, gid)
        self.pgdata.chmod(0o700)
        if (self.pgdata / "PG_VERSION").exists():
            return  # created before: keep the data
        log.info("creating PostgreSQL cluster in %s", self.pgdata)
        argv = [
            str(bindir / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            ROLE,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                check=False,
                env=self._env(),
                cwd=self.pgdata,
                user=uid,
                group=gid,
                extra_groups=[] if uid is not None else None,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"initdb failed: {exc}") from exc
        if done.returncode != 0:
            raise StackError(f"initdb failed (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def _ready_after_start(self) -> bool:
        return self._connect_ok("postgres")  # the receiptflow database is created next

    def _launch(self) -> subprocess.Popen[bytes]:
        bindir = pg_bindir()
        if self._as_root and self._run_as is None:
            self._run_as = system_user(create=True)
        self._initdb(bindir)
        socket_dir = str(self.pgdata) if len(str(self.pgdata)) <= _SOCKET_PATH_MAX - 20 else ""
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={socket_dir}",
            "-c",
            "max_connections=50",
        ]
        uid, gid = self._ids()
        return spawn(argv, self.log_file, self.pid_file, env=self._env(), cwd=self.pgdata, user=uid, group=gid)

    def _after_start(self) -> None:
        self._create_database()

    def _create_database(self) -> None:
        try:
            with psycopg.connect(
                host=self.host, port=self.port, user=ROLE, dbname="postgres", autocommit=True, connect_timeout=5
            ) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{DATABASE}"')
        except psycopg.Error as exc:
            raise StackError(f"could not create database {DATABASE!r}: {exc}") from exc
