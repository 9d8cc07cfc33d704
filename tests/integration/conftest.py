"""Session-scoped real servers for the integration tests: Kafka, Redis, PostgreSQL.

Each of ``kafka_bootstrap`` (``host:port``), ``redis_url`` and ``postgres_url``
(``postgresql://user@127.0.0.1:port/receiptflow``) takes, in this order:

1. an explicit endpoint: ``RECEIPTFLOW_TEST_BOOTSTRAP_SERVERS``, ``RECEIPTFLOW_TEST_REDIS_URL``,
   ``RECEIPTFLOW_TEST_POSTGRES_URL`` (checked to answer);
2. a testcontainers container when a Docker engine answers a ping (``RECEIPTFLOW_TEST_NO_DOCKER=1``
   skips this step); without an engine this falls through at once;
3. a real local process started by the same code as ``receiptflow stack`` (Apache Kafka from the
   Maven jars in the normal cache dir, ``redis-server``, PostgreSQL's ``postgres``) on free ports
   under a session temp dir, stopped when the session ends.

A server that cannot be had fails the tests that need it (``pytest.fail``): nothing is skipped or
mocked. What was used is recorded in ``tests/conftest.py``'s ``BACKENDS`` for the closing summary.

The embedded Redis runs as ``receiptflow stack`` runs it: ACL users on, ``default`` off, passwords
generated per install (the session's data dir). ``redis_server`` says how each role logs in:
``make_settings`` gives every test's settings the role passwords (as production passes them, in
the settings), and ``redis_server.admin_url`` is for test setup and cleanup only.

``make_settings`` builds :class:`~receiptflow.config.Settings` pointing at the session servers with a
per-test data dir, topic prefix and processor id (tests share the broker, never their topics);
``settings`` is one such object. ``own_stack`` is a broker and Redis of a test's own, for tests that
stop, kill or restart servers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from pydantic import SecretStr

from receiptflow.config import Settings, redact_url
from receiptflow.redis_auth import TEMPLATE_USERS, RedisRole, connection_url, role_password, with_credentials
from receiptflow.stack import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, Stack, free_port, kafka_version
from receiptflow.stack.kafka import broker_answers
from receiptflow.stack.process import is_local, wait_until
from receiptflow.stack.server import EmbeddedServer

from ..conftest import BACKENDS

MakeSettings = Callable[..., Settings]


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
class _Source:
    """Where the session's server of one kind comes from (see the module docstring for the order)."""

    name: str  # the BACKENDS label and the name in messages: "Kafka", "Redis", "PostgreSQL"
    env_var: str  # an endpoint given by the person running the tests
    answers: Callable[[str], bool]  # a real probe of an endpoint; may raise (= not yet)
    version: Callable[[str], str]  # "redis 7.0.15" for the summary, "" when not asked
    image: str  # the testcontainers image
    container: Callable[[], tuple[Any, str]]  # start a container: (container, its endpoint)
    container_timeout: float


def _session_server(
    source: _Source, found: Callable[[str], T], embedded: Callable[[], AbstractContextManager[T]]
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


def _described(source: _Source, endpoint: str, how: str) -> str:
    version = source.version(endpoint)
    return f"{redact_url(endpoint)} ({how}{', ' + version if version else ''})"


@contextlib.contextmanager
def _embedded(name: str, server: EmbeddedServer, cleanup: Callable[[], None] = lambda: None) -> Iterator[None]:
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


# --- the session servers -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the session's locally started servers: free ports, a session data dir.

    ``cache_dir`` stays the default (``~/.cache/receiptflow``), so the Kafka jars are downloaded once
    per machine, not once per session.
    """
    return Settings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        data_dir=tmp_path_factory.mktemp("stack"),
        topic_partitions=3,
        kafka_heap="512m",
        metrics_port=0,
    )


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


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_settings: Settings) -> Iterator[str]:
    """``host:port`` of a real Kafka broker for the whole session."""
    source = _Source(
        "Kafka",
        "RECEIPTFLOW_TEST_BOOTSTRAP_SERVERS",
        broker_answers,
        lambda _: "",
        f"apache/kafka:{kafka_version()}",
        _kafka_container,
        120,
    )

    @contextlib.contextmanager
    def embedded() -> Iterator[str]:
        broker = EmbeddedKafka(stack_settings)
        with _embedded("Kafka broker", broker):
            BACKENDS["Kafka"] = f"{broker.endpoint} (embedded Apache Kafka {kafka_version()} KRaft)"
            yield broker.endpoint

    yield from _session_server(source, lambda bootstrap: bootstrap, embedded)


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


@dataclass(frozen=True)
class RedisServer:
    """The session's Redis: where it is, and how each role logs in."""

    url: str  # redis://host:port/0, no credentials
    passwords: dict[RedisRole, str] = field(default_factory=dict)  # empty: a server without ACL users
    admin_url: str = ""  # a login that may do anything: test setup and cleanup only

    def role_settings(self) -> dict[str, Any]:
        """Settings keyword arguments with the role passwords (``redis_writer_password`` ...)."""
        return {
            f"redis_{r.value}_password": SecretStr(p) for r, p in self.passwords.items() if r is not RedisRole.ADMIN
        }

    def role_url(self, role: RedisRole, db: int | None = None) -> str:
        """The URL ``role`` connects with, to database ``db`` (default: the session's)."""
        url = self.admin_url if role is RedisRole.ADMIN else self.url
        if role is not RedisRole.ADMIN and role in self.passwords:
            url = with_credentials(url, TEMPLATE_USERS[role], self.passwords[role])
        return url if db is None else _with_db(url, db)


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def redis_server(stack_settings: Settings) -> Iterator[RedisServer]:
    """A real Redis server for the whole session, with its role logins."""
    source = _Source(
        "Redis", "RECEIPTFLOW_TEST_REDIS_URL", _redis_pings, _redis_version, "redis:7", _redis_container, 60
    )

    @contextlib.contextmanager
    def embedded() -> Iterator[RedisServer]:
        server = EmbeddedRedis(stack_settings)
        with _embedded("Redis", server):
            BACKENDS["Redis"] = f"{server.endpoint} (redis-server {server.server_version() or '?'}, ACL users)"
            passwords = {r: p for r in RedisRole if (p := role_password(stack_settings, r)) is not None}
            yield RedisServer(stack_settings.redis_url, passwords, connection_url(stack_settings, RedisRole.ADMIN))

    yield from _session_server(source, lambda url: RedisServer(url, admin_url=url), embedded)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://host:port/0`` of the session's Redis (no credentials: see ``redis_server``)."""
    return redis_server.url


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


@pytest.fixture(scope="session")
def postgres_url(stack_settings: Settings) -> Iterator[str]:
    """``postgresql://user@host:port/receiptflow`` of a real PostgreSQL server for the whole session."""
    source = _Source(
        "PostgreSQL",
        "RECEIPTFLOW_TEST_POSTGRES_URL",
        _postgres_connects,
        _postgres_version,
        "postgres:15",
        _postgres_container,
        90,
    )

    @contextlib.contextmanager
    def embedded() -> Iterator[str]:
        # As root the server runs as the postgres system user, which cannot reach a pytest temp dir
        # (mode 0700): give the cluster a directory of its own under the system temp dir.
        pgdata = Path(tempfile.mkdtemp(prefix="receiptflow-test-pg-")) if os.geteuid() == 0 else None
        server = EmbeddedPostgres(stack_settings, port=free_port(), pgdata=pgdata)

        def remove_pgdata() -> None:
            if pgdata is not None:
                shutil.rmtree(pgdata, ignore_errors=True)

        with _embedded("PostgreSQL", server, remove_pgdata):
            BACKENDS["PostgreSQL"] = f"{server.endpoint} (PostgreSQL {server.server_version() or '?'})"
            yield server.url

    yield from _session_server(source, lambda url: url, embedded)


# --- per-test settings ---------------------------------------------------------------------------------
@pytest.fixture
def make_settings(kafka_bootstrap: str, redis_server: RedisServer, tmp_path: Path) -> MakeSettings:
    """A factory of Settings pointing at the session servers, with a per-test data dir and topic prefix."""

    def make(**overrides: Any) -> Settings:
        run = uuid.uuid4().hex[:8]
        base: dict[str, Any] = {
            **redis_server.role_settings(),
            "bootstrap_servers": kafka_bootstrap,
            "redis_url": redis_server.url,
            "data_dir": tmp_path / "data",
            "topic_prefix": f"t-{run}.",
            "topic_partitions": 3,
            "processor_id": f"processor-{run}",
            "metrics_port": 0,
        }
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    """Settings pointing at the session servers (own data dir and topic prefix)."""
    return make_settings()


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """A broker and Redis of this test's own (free ports, own data dir), for tests that stop or kill them."""
    stack_settings = Settings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        data_dir=tmp_path / "own-stack",
        kafka_heap="512m",
        topic_partitions=3,
        metrics_port=0,
    )
    stack = Stack(stack_settings)
    yield stack
    stack.down()


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server (dropped afterwards); its URL."""
    from urllib.parse import urlsplit, urlunsplit  # noqa: PLC0415 - only the warehouse tests need it

    name = f"rf_sink_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(postgres_url)
    yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
