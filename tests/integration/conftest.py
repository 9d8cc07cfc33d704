"""Session-scoped real servers for the integration tests: Kafka, Redis, PostgreSQL.

Each fixture takes, in order: an explicit URL (``RECEIPTFLOW_TEST_BOOTSTRAP_SERVERS``,
``RECEIPTFLOW_TEST_REDIS_URL``, ``RECEIPTFLOW_TEST_POSTGRES_URL``); a testcontainers container when
a Docker engine answers; otherwise a real local process on free ports, started by the same code as
``receiptflow stack`` under a session temp dir and stopped at the end. A server that cannot be had
fails the tests that need it; nothing is skipped or mocked.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from receiptflow.config import Settings
from receiptflow.stack import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, free_port, kafka_version

from ..conftest import BACKENDS


def _docker() -> Any | None:
    """A Docker client when an engine answers (quickly), else None."""
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return None
    try:
        import docker  # noqa: PLC0415 - optional path

        client = docker.from_env(timeout=3)
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the session's locally started servers (free ports, a session data dir)."""
    kafka_port = free_port()
    controller = free_port()
    return Settings(
        bootstrap_servers=f"127.0.0.1:{kafka_port}",
        kafka_controller_port=controller,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        data_dir=tmp_path_factory.mktemp("stack"),
        topic_partitions=3,
        kafka_heap="512m",
        metrics_port=0,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_settings: Settings) -> Iterator[str]:
    given = os.environ.get("RECEIPTFLOW_TEST_BOOTSTRAP_SERVERS")
    if given:
        BACKENDS["kafka"] = f"{given} (given)"
        yield given
        return
    if _docker() is not None:
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415

        with KafkaContainer(f"apache/kafka:{kafka_version()}").with_kraft() as kafka:
            url = kafka.get_bootstrap_server()
            BACKENDS["kafka"] = f"{url} (testcontainers apache/kafka:{kafka_version()})"
            yield url
        return
    broker = EmbeddedKafka(stack_settings)
    try:
        broker.up()
    except Exception as exc:
        pytest.fail(f"no Kafka broker for the integration tests: {exc}")
    BACKENDS["kafka"] = f"{broker.endpoint} (embedded Apache Kafka {kafka_version()} KRaft)"
    yield broker.endpoint
    broker.down()


@pytest.fixture(scope="session")
def redis_url(stack_settings: Settings) -> Iterator[str]:
    given = os.environ.get("RECEIPTFLOW_TEST_REDIS_URL")
    if given:
        BACKENDS["redis"] = f"{given} (given)"
        yield given
        return
    if _docker() is not None:
        from testcontainers.redis import RedisContainer  # noqa: PLC0415

        with RedisContainer("redis:7") as r:
            url = f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"
            BACKENDS["redis"] = f"{url} (testcontainers redis:7)"
            yield url
        return
    server = EmbeddedRedis(stack_settings)
    try:
        server.up()
    except Exception as exc:
        pytest.fail(f"no Redis for the integration tests: {exc}")
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()
    v = next((w.split("=")[1] for w in version if w.startswith("v=")), "?")
    BACKENDS["redis"] = f"{server.endpoint} (redis-server {v})"
    yield stack_settings.redis_url
    server.down()


@pytest.fixture(scope="session")
def postgres_url(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("RECEIPTFLOW_TEST_POSTGRES_URL")
    if given:
        BACKENDS["postgres"] = "given URL"
        yield given
        return
    if _docker() is not None:
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer("postgres:15", driver=None) as pg:
            BACKENDS["postgres"] = "testcontainers postgres:15"
            yield pg.get_connection_url()
        return
    import tempfile  # noqa: PLC0415

    # PostgreSQL runs as the postgres user when we are root: its data dir must be reachable by it.
    pgdata = Path(tempfile.mkdtemp(prefix="receiptflow-test-pg-")) if os.geteuid() == 0 else None
    server = EmbeddedPostgres(stack_settings, port=free_port(), pgdata=pgdata)
    try:
        server.up()
    except Exception as exc:
        pytest.fail(f"no PostgreSQL for the integration tests: {exc}")
    import psycopg  # noqa: PLC0415

    with psycopg.connect(server.url) as c:
        row = c.execute("SHOW server_version").fetchone()
    BACKENDS["postgres"] = f"{server.endpoint} (PostgreSQL {row[0] if row else '?'})"
    yield server.url
    server.down()
    if pgdata is not None:
        subprocess.run(["rm", "-rf", str(pgdata)], check=False)


@pytest.fixture
def make_settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Any:
    """Settings pointing at the session servers, with a per-test data dir and topic prefix."""

    def make(**overrides: Any) -> Settings:
        import uuid  # noqa: PLC0415

        run = uuid.uuid4().hex[:8]
        base: dict[str, Any] = {
            "bootstrap_servers": kafka_bootstrap,
            "redis_url": redis_url,
            "data_dir": tmp_path / "data",
            "topic_prefix": f"t-{run}.",
            "topic_partitions": 3,
            "processor_id": f"processor-{run}",
            "metrics_port": 0,
        }
        base.update(overrides)
        return Settings(**base)

    return make
