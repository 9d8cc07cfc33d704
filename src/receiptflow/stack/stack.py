"""The embedded stack as one unit: what ``receiptflow stack up|down|status|fetch`` does.

``up`` starts what is missing -- the Kafka broker, Redis and, on request, PostgreSQL and the schema
registry (Apicurio, Confluent's API) -- and leaves
alone a server of ours that already runs and answers, as well as an external server that answers at
the configured endpoint; so it is harmless to run twice. ``down`` stops only the servers this data
dir started (SIGTERM, a bounded wait, then SIGKILL), removes their PID files and leaves no process
behind; external servers are never touched. ``status`` says per component whether it is running
(ours, with its PID), external or stopped. The DuckDB warehouse needs no server: ``up`` makes sure
its folder exists and reports the file.

Nothing here prints; the CLI renders the returned :class:`~receiptflow.stack.process.ComponentStatus` list.
"""

from __future__ import annotations

import logging

from ..config import Settings
from ..errors import StackError
from ..kafka_acl import apply_acls
from ..kafka_auth import KafkaPrincipal, as_principal
from .duckdb import DuckDBFile
from .kafka import EmbeddedKafka
from .kafka_dist import jars_complete, kafka_version, libs_dir, resolve_jars
from .postgres import EmbeddedPostgres
from .process import ComponentStatus
from .redis import EmbeddedRedis
from .registry import EmbeddedRegistry, build_registry, registry_version
from .server import EmbeddedServer

log = logging.getLogger(__name__)


class Stack:
    """The embedded Kafka broker, Redis, optional PostgreSQL and registry, and the DuckDB file of one data dir."""

    def __init__(self, settings: Settings, ready_timeout: float = 60.0) -> None:
        self.settings = settings
        self.kafka = EmbeddedKafka(settings, ready_timeout=ready_timeout)
        self.redis = EmbeddedRedis(settings, ready_timeout=min(ready_timeout, 30.0))
        self.postgres = EmbeddedPostgres(settings, ready_timeout=ready_timeout)
        self.duckdb = DuckDBFile(settings)
        self.registry = EmbeddedRegistry(settings, ready_timeout=max(ready_timeout, 90.0))

    def fetch(self, with_registry: bool = False) -> list[ComponentStatus]:
        """Download the Kafka jars (and build the registry) once per machine, without starting anything."""
        libs = resolve_jars(self.settings)
        out = [ComponentStatus("kafka-jars", "cached", None, str(libs), f"Apache Kafka {kafka_version()}")]
        if with_registry:
            app = build_registry(self.settings)
            out.append(ComponentStatus("registry-app", "cached", None, str(app), f"Apicurio {registry_version()}"))
        return out

    def up(self, with_postgres: bool = False, with_registry: bool = False) -> list[ComponentStatus]:
        """Start whatever is not running yet and wait until each answers; idempotent."""
        self.settings.local.data_dir.mkdir(parents=True, exist_ok=True)
        out = [self.kafka.up(), self.redis.up()]
        if out[0].state == "running" and self.kafka.auth:
            # The ACLs of this install's names, before any topic exists: `topics create` applies them again.
            apply_acls(as_principal(self.settings, KafkaPrincipal.ADMIN))
        if with_postgres:
            out.append(self.postgres.up())
        if with_registry:
            out.append(self.registry.up())
        out.append(self.duckdb.up())
        return out

    def down(self) -> list[ComponentStatus]:
        """Stop every server this data dir started; a failure to stop one does not spare the others."""
        out: list[ComponentStatus] = []
        errors: list[str] = []
        components: list[EmbeddedServer] = [self.redis, self.kafka]
        if self.postgres.pid() is not None:  # optional: only reported when this data dir started it
            components.append(self.postgres)
        if self.registry.pid() is not None:
            components.append(self.registry)
        for component in components:
            try:
                out.append(component.down())
            except StackError as exc:
                log.error("stopping %s failed: %s", component.name, exc)
                errors.append(f"{component.name}: {exc}")
        if errors:
            raise StackError("could not stop every server: " + "; ".join(errors))
        return out

    def status(self) -> list[ComponentStatus]:
        """Per component: running (ours, with PID), external, stopped; PostgreSQL and registry only when ours run."""
        out = [self.kafka.status(), self.redis.status()]
        postgres = self.postgres.status()
        if postgres.state == "running":
            out.append(postgres)
        if self.registry.pid() is not None:
            out.append(self.registry.status())
        out.append(self.duckdb.status())
        return out

    def jars_cached(self) -> bool:
        """True when the Kafka jars are on disk (``up`` will not need Maven or the network)."""
        return jars_complete(libs_dir(self.settings), kafka_version())
