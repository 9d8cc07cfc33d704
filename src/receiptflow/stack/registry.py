"""The embedded schema registry: Apicurio Registry, built from Maven Central, with Confluent's API.

``receiptflow stack up --with-registry`` starts it; its Confluent-compatible API is
``http://127.0.0.1:8081/apis/ccompat/v7`` (or the host and port of ``RECEIPTFLOW_SCHEMA_REGISTRY_URL``
when that points at this machine). It is a test and demo registry: Apicurio 2.4 runs on Quarkus
2.16, which is out of support, so production points the setting at a registry of its own.

Build: ``deploy/registry/pom.xml`` assembles the Quarkus application from Maven Central (with
``deploy/registry/settings.xml``, which mirrors every repository to Maven Central, and a stand-in for
one deployment artifact Maven Central does not serve; the pom says why). It is built once per machine
into ``<cache dir>/apicurio-registry-<version>/`` (about 2 minutes and 130 MB of jars when ``~/.m2``
is cold); a marker file written after a complete build makes later calls skip Maven.

Layout under ``<data dir>``::

    registry/db/          the registry's H2 database: subjects and ids survive a restart of the stack
    registry/stdout.log   the JVM's output
    run/registry.pid

The registry runs as ``java -jar apicurio-registry-runner.jar`` detached, bound to 127.0.0.1; it is
ready when its Confluent API answers (about 10 s). Its life cycle is the stack's
(:class:`~receiptflow.stack.server.EmbeddedServer`): an endpoint that already answers the Confluent
API is used as it is ("external"); a port taken by something else is a
:class:`~receiptflow.errors.PortInUseError`.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from ..config import Settings
from ..errors import DependencyMissingError, StackError
from .kafka_dist import java_binary
from .maven import build_into, file_lock
from .process import spawn
from .server import EmbeddedServer

log = logging.getLogger(__name__)

API_PATH = "/apis/ccompat/v7"
DEFAULT_URL = f"http://127.0.0.1:8081{API_PATH}"
RUNNER = "apicurio-registry-runner.jar"
_MARKER = ".complete"
# src/receiptflow/stack/registry.py -> parents: stack, receiptflow, src, <repo>
REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_DIR = REPO_ROOT / "deploy" / "registry"
MAVEN_HINT = "Maven (mvn) is needed once to build the schema registry: apt-get install maven (make setup does it)"


# --- build -------------------------------------------------------------------------------------------
def pom_path() -> Path:
    pom = BUILD_DIR / "pom.xml"
    if not pom.is_file():
        raise DependencyMissingError(
            f"the registry pom was not found at {pom}: the embedded registry is built from a receiptflow "
            "source checkout; point RECEIPTFLOW_SCHEMA_REGISTRY_URL at a running registry instead"
        )
    return pom


def registry_version() -> str:
    """The Apicurio Registry version the pom pins (``<apicurio.version>``)."""
    pom = pom_path()
    match = re.search(r"<apicurio\.version>\s*([^<\s]+)\s*</apicurio\.version>", pom.read_text(encoding="utf-8"))
    if not match:
        raise StackError(f"{pom} has no <apicurio.version> property")
    return match.group(1)


def app_dir(settings: Settings) -> Path:
    return settings.local.cache_dir.expanduser().resolve() / f"apicurio-registry-{registry_version()}"


def runner_jar(app: Path) -> Path:
    return app / "build" / RUNNER


def build_complete(app: Path) -> bool:
    """True when a build finished into ``app`` (its marker file is written last)."""
    return (app / _MARKER).is_file() and runner_jar(app).is_file()


def build_registry(settings: Settings, timeout: float = 1200.0) -> Path:
    """The folder of the built registry, built by Maven on first use (later calls return at once)."""
    app = app_dir(settings)
    if build_complete(app):
        return app
    with file_lock(app.parent / ".registry.lock"):
        if build_complete(app):
            return app
        log.info("building Apicurio Registry %s with Maven into %s", registry_version(), app)
        build_into(
            app,
            lambda out: [
                "-s",
                str(BUILD_DIR / "settings.xml"),
                "-f",
                str(pom_path()),
                "install",
                f"-Dregistry.output={out}",
            ],
            what="build the schema registry",
            produced=lambda out: runner_jar(out).is_file(),
            marker=_MARKER,
            marker_text=lambda out: f"apicurio-registry {registry_version()}\n",
            hint=MAVEN_HINT,
            timeout=timeout,
        )
        log.info("built Apicurio Registry %s", registry_version())
        return app


# --- the server ----------------------------------------------------------------------------------------
def registry_answers(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers the Confluent API (``GET <url>/subjects`` gives a JSON list)."""
    if urlsplit(url).scheme not in ("http", "https"):
        return False
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/subjects", timeout=timeout) as resp:  # noqa: S310 - http(s) only
            return resp.status == 200 and isinstance(json.loads(resp.read()), list)
    except (OSError, ValueError, urllib.error.URLError):
        return False


class EmbeddedRegistry(EmbeddedServer):
    """Start, stop and inspect the schema registry of one data dir."""

    name = "registry"
    label = "schema registry"
    poll_interval = 0.2
    stop_timeout = 30.0
    abort_timeout = 10.0

    def __init__(self, settings: Settings, ready_timeout: float = 90.0, heap: str = "256m") -> None:
        self.settings = settings
        self.url = settings.kafka.schema_registry_url or DEFAULT_URL
        parts = urlsplit(self.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 8081
        data_dir = settings.local.data_dir.expanduser().resolve()
        self.home = data_dir / "registry"
        self.log_file = self.home / "stdout.log"
        self.pid_file = data_dir / "run" / "registry.pid"
        self.ready_timeout = ready_timeout
        self.heap = heap

    @property
    def address(self) -> str:
        return self.url

    def _markers(self) -> list[str]:
        return [RUNNER, f"-Dquarkus.http.port={self.port}"]

    def _cwd(self) -> Path | None:
        return self.home

    def ready(self) -> bool:
        """True when the registry at the URL answers its API."""
        return registry_answers(self.url)

    def _answers(self) -> bool:
        return self.ready()

    def _port_taken(self) -> str:
        return (
            f"port {self.endpoint} (schema registry) is taken by a program that does not answer the registry "
            f"API at {self.url}; stop it or choose another RECEIPTFLOW_SCHEMA_REGISTRY_URL port"
        )

    def _argv(self, java: str, app: Path) -> list[str]:
        db = self.home / "db" / "registry"
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Dquarkus.http.host={self.host}",
            f"-Dquarkus.http.port={self.port}",
            # A file instead of the in-memory default: subjects and their ids survive a restart,
            # so records already on the topics keep decoding.
            f"-Dquarkus.datasource.jdbc.url=jdbc:h2:file:{db}",
            # The defaults (20 connections held open) are sized for a server, not a laptop.
            "-Dquarkus.datasource.jdbc.min-size=1",
            "-Dquarkus.datasource.jdbc.initial-size=1",
            "-Dquarkus.datasource.jdbc.max-size=8",
            "-jar",
            str(runner_jar(app)),
        ]

    def _launch(self) -> subprocess.Popen[bytes]:
        java = java_binary(self.settings)
        app = build_registry(self.settings)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return spawn(self._argv(java, app), self.log_file, self.pid_file, cwd=self.home)
