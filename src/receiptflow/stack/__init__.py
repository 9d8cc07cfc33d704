"""The embedded single-machine stack: Apache Kafka (KRaft), Redis, PostgreSQL, the DuckDB file.

:class:`Stack` is what the CLI uses (``up``/``down``/``status``/``fetch``); the component classes
and the process helpers are public for tests that start, stop or kill one server.
"""

from .duckdb import DuckDBFile
from .kafka import EmbeddedKafka, broker_answers
from .kafka_dist import kafka_version, resolve_jars
from .postgres import EmbeddedPostgres
from .process import ComponentStatus, free_port, wait_until
from .redis import EmbeddedRedis
from .stack import Stack

__all__ = [
    "ComponentStatus",
    "DuckDBFile",
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "Stack",
    "broker_answers",
    "free_port",
    "kafka_version",
    "resolve_jars",
    "wait_until",
]
