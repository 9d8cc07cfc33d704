"""The embedded single-machine stack: Apache Kafka (KRaft), Redis, PostgreSQL, DuckDB file."""

from .kafka import EmbeddedKafka, kafka_version, resolve_jars
from .postgres import EmbeddedPostgres
from .process import ComponentStatus, free_port, wait_until
from .redis import EmbeddedRedis
from .stack import Stack

__all__ = [
    "ComponentStatus",
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "Stack",
    "free_port",
    "kafka_version",
    "resolve_jars",
    "wait_until",
]
