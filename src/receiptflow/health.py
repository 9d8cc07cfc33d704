"""The small HTTP server of every long-running process: ``/metrics``, ``/healthz`` and ``/readyz``.

* ``/metrics`` — the process's registry in the Prometheus text format, with prometheus-client's
  process and platform collectors (``process_resident_memory_bytes``, ``python_info`` ...).
* ``/healthz`` — 200 while the process runs and its server thread answers: what a liveness probe
  asks. (A router whose transactional call hangs ends itself, so it needs no deeper check.)
* ``/readyz`` — 200 once every check of the process's :class:`Readiness` holds, 503 before and
  whenever one stops holding, with a JSON body naming each check. The roles mark theirs: partitions
  assigned (the consumer group gave this worker its share, possibly none when there are more workers
  than partitions), state restored (the router's dedup and consent state, the erased cards of the
  profile agent and of the sink) and broker reachable (:class:`BrokerProbe`, asked at most every few
  seconds).

Any other path is 404. The server is prometheus-client's threaded WSGI server with a dispatcher in
front, so a slow scrape never blocks a probe.

Every long-running command (``process``, ``sink run``, ``simulate``) wires these the same way, with
:func:`serving`: the metrics of its roles, a :class:`Readiness` of each consuming role, and the
server on its port for as long as the command runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import PlatformCollector, ProcessCollector, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from .config import Settings
from .errors import ConfigError
from .metrics import CONSUMING_ROLES, Metrics, Role

log = logging.getLogger(__name__)

PARTITIONS_ASSIGNED = "partitions_assigned"
STATE_RESTORED = "state_restored"
BROKER_REACHABLE = "broker_reachable"
CONSUMER_CHECKS = (PARTITIONS_ASSIGNED, STATE_RESTORED)

# How long a broker probe's answer is reused: probes and scrapes come every few seconds each.
_PROBE_CACHE_SECONDS = 5.0
_PROBE_TIMEOUT_SECONDS = 3.0


class Readiness:
    """The named checks a process must pass to be ready: flags the role marks, and probes asked on demand.

    Thread-safe: the router marks from its consume thread, faust from its event loop, the server
    reads from its request threads.
    """

    def __init__(self, role: str, checks: Iterable[str] = (), probes: Mapping[str, Callable[[], bool]] | None = None):
        self.role = role
        self._lock = threading.Lock()
        self._flags = dict.fromkeys(checks, False)
        self._probes = dict(probes or {})

    def mark(self, check: str, ok: bool = True) -> None:
        """Set a flag check (it must be one of the checks given at construction)."""
        with self._lock:
            if check not in self._flags:
                raise KeyError(f"{self.role} has no readiness check {check!r}")
            self._flags[check] = ok

    def checks(self) -> dict[str, bool]:
        """Every check's current answer (probes are asked now)."""
        with self._lock:
            answers = dict(self._flags)
        for name, probe in self._probes.items():
            try:
                answers[name] = bool(probe())
            except Exception as exc:  # noqa: BLE001 - a failing probe means not ready, never a 500
                log.debug("readiness probe %s failed: %s", name, exc)
                answers[name] = False
        return answers

    def ready(self) -> bool:
        return all(self.checks().values())


class BrokerProbe:
    """Whether the Kafka cluster answers a metadata request, remembered for a few seconds."""

    def __init__(self, settings: Settings, *, cache_seconds: float = _PROBE_CACHE_SECONDS) -> None:
        self._settings = settings
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        self._answer: tuple[float, bool] | None = None

    def __call__(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._answer is not None and now - self._answer[0] < self._cache_seconds:
                return self._answer[1]
            if self._admin is None:
                self._admin = AdminClient(self._settings.kafka_config(**{"client.id": "receiptflow-readiness"}))
            try:
                metadata = self._admin.list_topics(timeout=_PROBE_TIMEOUT_SECONDS)
                ok = bool(metadata.brokers)
            except KafkaException as exc:
                log.info("broker not reachable: %s", exc)
                ok = False
            # The client's log lines wait in its queue until served: serve them (to Python logging).
            self._admin.poll(0)
            self._answer = (time.monotonic(), ok)
            return ok


def process_readiness(
    name: str, settings: Settings, parts: Iterable[Readiness], broker: Callable[[], bool] | None = None
) -> Readiness:
    """What ``/readyz`` of a process answers: every check of its roles (prefixed by role) and the broker
    probe (``broker``, default a :class:`BrokerProbe` of ``settings``)."""

    def answer(part: Readiness, check: str) -> Callable[[], bool]:
        return lambda: part.checks()[check]

    probes = {f"{p.role}.{check}": answer(p, check) for p in parts for check in p.checks()}
    probes[BROKER_REACHABLE] = broker or BrokerProbe(settings)
    return Readiness(name, (), probes)


@dataclass
class Exporter:
    """A running server (``close`` stops it; tests and the demo use that)."""

    addr: str
    port: int
    _server: ThreadingWSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: no access log."""


def application(metrics: Metrics, readiness: Readiness) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: ``/metrics``, ``/healthz``, ``/readyz``; 404 elsewhere."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body: Iterable[bytes] = metrics_app(environ, start_response)
            return body
        if path == "/healthz":
            return _reply(start_response, "200 OK", {"role": readiness.role, "alive": True})
        if path == "/readyz":
            checks = readiness.checks()
            ready = all(checks.values())
            status = "200 OK" if ready else "503 Service Unavailable"
            return _reply(start_response, status, {"role": readiness.role, "ready": ready, "checks": checks})
        return _reply(start_response, "404 Not Found", {"error": f"no {path}: /metrics, /healthz or /readyz"})

    return app


def _reply(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = (json.dumps(body, sort_keys=True) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def add_process_collectors(metrics: Metrics) -> None:
    """prometheus-client's process (memory, CPU, start time, open files) and platform collectors."""
    names = {family.name for family in metrics.registry.collect()}
    if "process_resident_memory_bytes" not in names:
        ProcessCollector(registry=metrics.registry)
    if "python_info" not in names:
        PlatformCollector(registry=metrics.registry)


def serve(metrics: Metrics, readiness: Readiness, port: int, addr: str = "127.0.0.1") -> Exporter | None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``addr:port`` on a daemon thread (None when port is 0).

    Raises :class:`~receiptflow.errors.ConfigError` when the port is taken.
    """
    if not port:
        return None
    add_process_collectors(metrics)
    try:
        server = make_server(
            addr, port, application(metrics, readiness), ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise port_in_use(addr, port) from exc
    thread = threading.Thread(target=server.serve_forever, name=f"exporter:{port}", daemon=True)
    thread.start()
    return Exporter(addr, port, server, thread)


def port_in_use(addr: str, port: int) -> ConfigError:
    """The one-line error for an exporter port another process holds."""
    return ConfigError(
        f"metrics port {addr}:{port} is in use (another receiptflow process?): give this one another "
        "with --metrics-port N or RECEIPTFLOW_METRICS_PORT (0 turns its exporter off)"
    )


@dataclass
class Served:
    """What a long-running command is observed by: its metrics, a readiness per consuming role, its server."""

    metrics: Metrics
    readiness: dict[Role, Readiness]
    exporter: Exporter | None  # None when the port is 0


def exporter_port(settings: Settings, port: int | None = None, offset: int = 0) -> int:
    """The port a command serves on: ``port`` (``--metrics-port``) when given, else ``metrics_port`` plus
    the command's ``offset`` (the processor 0, the sink 1, the simulator 2: all of them on one host);
    0 turns the server off."""
    if port is not None:
        return port
    return settings.metrics.port + offset if settings.metrics.port else 0


@contextmanager
def serving(
    command: str, settings: Settings, roles: tuple[Role, ...], *, port: int | None = None, port_offset: int = 0
) -> Iterator[Served]:
    """``/metrics``, ``/healthz`` and ``/readyz`` of a long-running command, served while the block runs.

    The metrics are those of ``roles``; each consuming role (router, profiles, sink) gets a
    :class:`Readiness` with the consumer checks, for the command's workers to mark, and ``/readyz``
    answers for them all and the broker (:func:`process_readiness`, named ``command``). The port is
    :func:`exporter_port`'s. Raises :class:`~receiptflow.errors.ConfigError` when the port is taken.
    """
    metrics = Metrics(roles=roles)
    parts: dict[Role, Readiness] = {role: Readiness(role, CONSUMER_CHECKS) for role in roles if role in CONSUMING_ROLES}
    readiness = process_readiness(command, settings, parts.values())
    exporter = serve(metrics, readiness, exporter_port(settings, port, port_offset), settings.metrics.addr)
    try:
        yield Served(metrics, parts, exporter)
    finally:
        if exporter is not None:
            exporter.close()
