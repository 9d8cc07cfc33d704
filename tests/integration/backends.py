"""Where the integration tests' servers come from: a given endpoint, a container, or an embedded server.

:func:`session_server` is the body of every session server fixture in ``conftest.py``: the endpoint
in the kind's ``RECEIPTFLOW_TEST_...`` variable (checked to answer); else a testcontainers container
when a Docker engine answers a ping (``RECEIPTFLOW_TEST_NO_DOCKER=1`` skips this step); else the
fixture's embedded server, run with :func:`embedded_server` by the same code as ``receiptflow stack``.
A server that cannot be had fails the tests that need it (``pytest.fail``). What was used is
recorded in ``BACKENDS`` for the closing summary.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import psycopg
import pytest
import redis

from receiptflow.config import redact_url
from receiptflow.stack import free_port, kafka_version
from receiptflow.stack.kafka import broker_answers
from receiptflow.stack.process import is_local, wait_until
from receiptflow.stack.server import EmbeddedServer

from ..conftest import BACKENDS


# --- Docker (testcontainers) --------------------------------------------------------------------------
@cache
def _docker_engine() -> bool:
    """True when a Docker engine answers a ping; decided once per session, quickly when there is none."""
    if os.environ.get("RECEIPTFLOW_TEST_NO_DOCKER") == "1":
        return False
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415 - only needed on this path

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _docker_host() -> str:
    """The address published container ports are reached at ("127.0.0.1" for a local engine)."""
    from testcontainers.core.docker_client import DockerClient  # noqa: PLC0415

    host = str(DockerClient().host())
    return "127.0.0.1" if host == "localhost" or is_local(host) else host


def _start_container(image: str, container_port: int, host_port: int, env: dict[str, str]) -> Any:
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    container = DockerContainer(image)
    for key, value in env.items():
        container.with_env(key, value)
    if _docker_host() == "127.0.0.1":
        # docker-py takes (address, port): publish on loopback only, never on every interface.
        container.ports[f"{container_port}/tcp"] = ("127.0.0.1", host_port)  # type: ignore[assignment]
    else:
        container.with_bind_ports(container_port, host_port)
    return container.start()


def _stop_container(container: Any) -> None:
    if container is None:
        return
    try:
        container.stop()
    except Exception as exc:  # a failed cleanup must not hide the test results
        warnings.warn(f"could not remove container: {exc}", stacklevel=1)


# --- one way to find a server: given, container, embedded ------------------------------------------------
T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """Where the session's server of one kind comes from (see the module docstring for the order)."""

    name: str  # the BACKENDS label and the name in messages: "Kafka", "Redis", "PostgreSQL"
    env_var: str  # an endpoint given by the person running the tests
    answers: Callable[[str], bool]  # a real probe of an endpoint; may raise (= not yet)
    version: Callable[[str], str]  # "redis 7.0.15" for the summary, "" when not asked
    image: str  # the testcontainers image
    container: Callable[[], tuple[Any, str]]  # start a container: (container, its endpoint)
    container_timeout: float


def session_server(
    source: Source, found: Callable[[str], T], embedded: Callable[[], AbstractContextManager[T]]
) -> Iterator[T]:
    """The body of a session server fixture: the given endpoint, else a container, else ``embedded()``.

    ``found`` turns a given or container endpoint into what the fixture yields.
    """
    given = os.environ.get(source.env_var)
    if given:
        try:
            wait_until(lambda: source.answers(given), 30, 0.2, what=f"{source.name} at {source.env_var}")
        except Exception as exc:
            pytest.fail(f"{source.env_var} does not answer: {exc}")
        BACKENDS[source.name] = _described(source, given, "given")
        yield found(given)
        return
    if _docker_engine():
        container = None
        try:
            container, endpoint = source.container()
            wait_until(
                lambda: source.answers(endpoint),
                source.container_timeout,
                0.3,
                what=f"{source.name} container at {redact_url(endpoint)}",
            )
        except Exception as exc:
            _stop_container(container)
            pytest.fail(f"no {source.name} for the integration tests (testcontainers): {exc}")
        BACKENDS[source.name] = _described(source, endpoint, f"testcontainers {source.image}")
        yield found(endpoint)
        _stop_container(container)
        return
    with embedded() as value:
        yield value


def _described(source: Source, endpoint: str, how: str) -> str:
    version = source.version(endpoint)
    return f"{redact_url(endpoint)} ({how}{', ' + version if version else ''})"


@contextlib.contextmanager
def embedded_server(name: str, server: EmbeddedServer, cleanup: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Run ``server`` (the code of ``receiptflow stack``) for the ``with`` block; fail when it cannot start."""
    try:
        server.up()
    except Exception as exc:
        with contextlib.suppress(Exception):
            server.down()
        cleanup()
        pytest.fail(f"no {name} for the integration tests (embedded): {exc}")
    try:
        yield
    finally:
        server.down()
        cleanup()


# --- the three kinds -------------------------------------------------------------------------------------
def _kafka_container() -> tuple[Any, str]:
    # The advertised listener must be the address clients use, so container and host ports are equal.
    host, port = _docker_host(), free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_NUM_PARTITIONS": "3",
    }
    container = _start_container(f"apache/kafka:{kafka_version()}", port, port, env)
    return container, f"{host}:{port}"


def kafka_source() -> Source:
    return Source(
        "Kafka",
        "RECEIPTFLOW_TEST_BOOTSTRAP_SERVERS",
        broker_answers,
        lambda _: "",  # the summary names the broker's address only
        f"apache/kafka:{kafka_version()}",
        _kafka_container,
        120,
    )


def _redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        info = client.info("server")
        return "redis " + (str(info.get("redis_version", "?")) if isinstance(info, dict) else "?")
    finally:
        client.close()


def _redis_pings(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _redis_container() -> tuple[Any, str]:
    host, port = _docker_host(), free_port()
    return _start_container("redis:7", 6379, port, {}), f"redis://{host}:{port}/0"


def redis_source() -> Source:
    return Source("Redis", "RECEIPTFLOW_TEST_REDIS_URL", _redis_pings, _redis_version, "redis:7", _redis_container, 60)


def _postgres_version(url: str) -> str:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return "PostgreSQL " + (str(row[0]).split()[0] if row else "?")


def _postgres_connects(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


def _postgres_container() -> tuple[Any, str]:
    host, port = _docker_host(), free_port()
    env = {"POSTGRES_HOST_AUTH_METHOD": "trust", "POSTGRES_DB": "receiptflow"}
    return _start_container("postgres:15", 5432, port, env), f"postgresql://postgres@{host}:{port}/receiptflow"


def postgres_source() -> Source:
    return Source(
        "PostgreSQL",
        "RECEIPTFLOW_TEST_POSTGRES_URL",
        _postgres_connects,
        _postgres_version,
        "postgres:15",
        _postgres_container,
        90,
    )
