"""Session-scoped real servers for the integration tests: Kafka, Redis, PostgreSQL, a schema registry.

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
The order is written once, in ``backends.py``; each fixture here adds only its embedded server.
``schema_registry`` (the Confluent API URL, ``registry_server.py``) is
``RECEIPTFLOW_TEST_SCHEMA_REGISTRY_URL`` when given, else the embedded Apicurio Registry of
``receiptflow stack up --with-registry``; it is started only for the tests that ask for it.

The embedded Redis runs as ``receiptflow stack`` runs it: ACL users on, ``default`` off, passwords
generated per install (the session's data dir). ``redis_server`` says how each role logs in:
``make_settings`` gives every test's settings the role passwords (as production passes them, in
the settings), and ``redis_server.admin_url`` is for test setup and cleanup only.

The embedded Kafka broker runs as ``receiptflow stack`` runs it too: SASL/SCRAM logins and ACLs, every
principal's password generated per install. ``kafka_server`` says how each principal logs in;
``make_settings`` (and ``kafka_server.auth_settings()`` for tests that build their own settings) logs in
as the admin principal and gives every principal's password, so a child process started with
``support.env_for`` logs in as its command's own principal, under the ACLs.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from pydantic import SecretStr

from receiptflow.config import Settings
from receiptflow.kafka_auth import KafkaPrincipal, embedded_credentials, with_login
from receiptflow.redis_auth import TEMPLATE_USERS, RedisRole, connection_url, role_password, with_credentials
from receiptflow.stack import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, Stack, free_port, kafka_version

from ..conftest import BACKENDS
from .backends import embedded_server, kafka_source, postgres_source, redis_source, session_server
from .registry_server import schema_registry  # noqa: F401 - a fixture, found by pytest through this module

MakeSettings = Callable[..., Settings]


# --- the session servers -------------------------------------------------------------------------------
def with_kafka_logins(settings: Settings) -> Settings:
    """``settings`` with its embedded install's Kafka passwords (generated now if missing) given, as
    production gives them, and logged in as the admin principal: a client made from it authenticates,
    and a child process (``env_for``) runs as its command's principal."""
    passwords = embedded_credentials(settings)
    given = settings.model_copy(
        update={"kafka": {f"{p.name.lower()}_password": SecretStr(pw) for p, pw in passwords.items()}}
    )
    return with_login(given, KafkaPrincipal.ADMIN.value, passwords[KafkaPrincipal.ADMIN])


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the session's locally started servers: free ports, a session data dir.

    ``cache_dir`` stays the default (``~/.cache/receiptflow``), so the Kafka jars are downloaded once
    per machine, not once per session.
    """
    return Settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "topic_partitions": 3},
        local={
            "kafka_controller_port": free_port(),
            "data_dir": tmp_path_factory.mktemp("stack"),
            "kafka_heap": "512m",
        },
        redis={"url": f"redis://127.0.0.1:{free_port()}/0"},
        metrics={"port": 0},
    )


@dataclass(frozen=True)
class KafkaServer:
    """The session's Kafka broker: where it is, and how each principal logs in."""

    bootstrap: str
    passwords: dict[KafkaPrincipal, str] = field(default_factory=dict)  # empty: a broker without authentication

    def auth_settings(self) -> dict[str, Any]:
        """Settings keyword arguments that log in as the admin principal and give every principal's password."""
        if not self.passwords:
            return {}
        return {
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": KafkaPrincipal.ADMIN.value,
            "kafka_sasl_password": SecretStr(self.passwords[KafkaPrincipal.ADMIN]),
            **{f"kafka_{p.name.lower()}_password": SecretStr(pw) for p, pw in self.passwords.items()},
        }


@pytest.fixture(scope="session")
def kafka_server(stack_settings: Settings) -> Iterator[KafkaServer]:
    """A real Kafka broker for the whole session, with its principals' logins (SASL/SCRAM, ACLs on)."""
    source = kafka_source()

    @contextlib.contextmanager
    def embedded() -> Iterator[KafkaServer]:
        broker = EmbeddedKafka(stack_settings)
        with embedded_server("Kafka broker", broker):
            auth = ", SASL/SCRAM and ACLs" if broker.auth else ""
            BACKENDS["Kafka"] = f"{broker.endpoint} (embedded Apache Kafka {kafka_version()} KRaft{auth})"
            passwords = embedded_credentials(stack_settings) if broker.auth else {}
            yield KafkaServer(broker.endpoint, passwords)

    yield from session_server(source, KafkaServer, embedded)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server: KafkaServer) -> str:
    """``host:port`` of the session's Kafka broker (its logins: ``kafka_server``)."""
    return kafka_server.bootstrap


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
    source = redis_source()

    @contextlib.contextmanager
    def embedded() -> Iterator[RedisServer]:
        server = EmbeddedRedis(stack_settings)
        with embedded_server("Redis", server):
            BACKENDS["Redis"] = f"{server.endpoint} (redis-server {server.server_version() or '?'}, ACL users)"
            passwords = {r: p for r in RedisRole if (p := role_password(stack_settings, r)) is not None}
            yield RedisServer(stack_settings.redis.url, passwords, connection_url(stack_settings, RedisRole.ADMIN))

    yield from session_server(source, lambda url: RedisServer(url, admin_url=url), embedded)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://host:port/0`` of the session's Redis (no credentials: see ``redis_server``)."""
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_url(stack_settings: Settings) -> Iterator[str]:
    """``postgresql://user@host:port/receiptflow`` of a real PostgreSQL server for the whole session."""
    source = postgres_source()

    @contextlib.contextmanager
    def embedded() -> Iterator[str]:
        # As root the server runs as the postgres system user, which cannot reach a pytest temp dir
        # (mode 0700): give the cluster a directory of its own under the system temp dir.
        pgdata = Path(tempfile.mkdtemp(prefix="receiptflow-test-pg-")) if os.geteuid() == 0 else None
        server = EmbeddedPostgres(stack_settings, port=free_port(), pgdata=pgdata)

        def remove_pgdata() -> None:
            if pgdata is not None:
                shutil.rmtree(pgdata, ignore_errors=True)

        with embedded_server("PostgreSQL", server, remove_pgdata):
            BACKENDS["PostgreSQL"] = f"{server.endpoint} (PostgreSQL {server.server_version() or '?'})"
            yield server.url

    yield from session_server(source, lambda url: url, embedded)


# --- per-test settings ---------------------------------------------------------------------------------
@pytest.fixture
def make_settings(kafka_server: KafkaServer, redis_server: RedisServer, tmp_path: Path) -> MakeSettings:
    """A factory of Settings pointing at the session servers, with a per-test data dir and topic prefix."""

    def make(**overrides: Any) -> Settings:
        run = uuid.uuid4().hex[:8]
        base: dict[str, Any] = {
            **redis_server.role_settings(),
            **kafka_server.auth_settings(),
            "bootstrap_servers": kafka_server.bootstrap,
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
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "topic_partitions": 3},
        local={"kafka_controller_port": free_port(), "data_dir": tmp_path / "own-stack", "kafka_heap": "512m"},
        redis={"url": f"redis://127.0.0.1:{free_port()}/0"},
        metrics={"port": 0},
    )
    stack = Stack(with_kafka_logins(stack_settings))
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
