"""The embedded stack as one unit: ``receiptflow stack up|down|status|fetch``.

``up`` starts what is missing (Kafka, Redis, optionally PostgreSQL) and leaves running or external
servers alone, so it is harmless to run twice; ``down`` stops only the servers this data dir
started and leaves no process behind. The DuckDB warehouse needs no server: its file lives under the
data dir and is created by the sink.
"""

from __future__ import annotations

from ..config import Settings
from .kafka import EmbeddedKafka, resolve_jars
from .postgres import EmbeddedPostgres
from .process import ComponentStatus
from .redis import EmbeddedRedis


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = EmbeddedKafka(settings)
        self.redis = EmbeddedRedis(settings)
        self.postgres = EmbeddedPostgres(settings)

    def _duckdb(self) -> ComponentStatus:
        url = self.settings.resolved_warehouse_url
        if url.startswith("duckdb:///"):
            path = url.removeprefix("duckdb:///")
            return ComponentStatus("duckdb", "file", None, path)
        return ComponentStatus("warehouse", "external", None, url.split("@")[-1])

    def fetch(self) -> ComponentStatus:
        libs = resolve_jars(self.settings)
        return ComponentStatus("kafka-jars", "cached", None, str(libs))

    def up(self, with_postgres: bool = False) -> list[ComponentStatus]:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        out = [self.kafka.up(), self.redis.up()]
        if with_postgres:
            out.append(self.postgres.up())
        out.append(self._duckdb())
        return out

    def down(self) -> list[ComponentStatus]:
        out = [self.redis.down(), self.kafka.down()]
        if self.postgres.pid() is not None:
            out.append(self.postgres.down())
        return out

    def status(self) -> list[ComponentStatus]:
        out = [self.kafka.status(), self.redis.status()]
        if self.postgres.pid() is not None:
            out.append(self.postgres.status())
        out.append(self._duckdb())
        return out
