"""Settings: environment prefix, librdkafka pass-through, no secret in what is printed."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict
from redis.connection import parse_url

from receiptflow.config import Settings, redact_url


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIPTFLOW_BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("RECEIPTFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RECEIPTFLOW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RECEIPTFLOW_KAFKA_SASL_USERNAME", "rf")
    monkeypatch.setenv("RECEIPTFLOW_KAFKA_SASL_PASSWORD", "s3cret-kafka")
    monkeypatch.setenv("RECEIPTFLOW_KAFKA_EXTRA", '{"client.rack": "hel1"}')
    monkeypatch.setenv("RECEIPTFLOW_REDIS_URL", "redis://:s3cret-redis@cache:6379/2")
    monkeypatch.setenv("RECEIPTFLOW_WAREHOUSE_URL", "postgresql://rf:s3cret-pg@db:5432/dw")
    s = Settings()
    conf = s.kafka_config()
    assert conf["bootstrap.servers"] == "kafka-1:9093,kafka-2:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cret-kafka"
    assert conf["client.rack"] == "hel1"
    shown = repr(s) + str(s.describe())
    for secret in ("s3cret-kafka", "s3cret-redis", "s3cret-pg"):
        assert secret not in str(s.describe())
    assert "s3cret-kafka" not in shown
    assert s.describe()["kafka"] == "kafka-1:9093,kafka-2:9093 (SASL_SSL/SCRAM-SHA-512)"


def test_defaults_point_at_the_embedded_stack(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    for k in list(__import__("os").environ):
        if k.startswith("RECEIPTFLOW_"):
            monkeypatch.delenv(k)
    s = Settings(local={"data_dir": tmp_path / "d"})
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.resolved_warehouse_url == f"duckdb:///{(tmp_path / 'd' / 'warehouse.duckdb').resolve()}"


def test_password_settings_override_urls() -> None:
    s = Settings(
        redis={"url": "redis://cache:6379/0", "password": "pw1"},
        warehouse={"url": "postgresql://rf@db:5432/dw", "password": "pw2"},
    )
    assert s.redis_connection_url() == "redis://:pw1@cache:6379/0"
    assert s.warehouse_connection_url() == "postgresql://rf:pw2@db:5432/dw"
    assert "pw" not in str(s.describe())


@pytest.mark.parametrize("password", ["p@ss/w:rd#1?", "%41 spaces & ünïcode"])
def test_passwords_with_url_characters_reach_the_clients_intact(password: str) -> None:
    s = Settings(
        redis={"url": "redis://profile-writer@[::1]:6379/2", "password": password},
        warehouse={"url": "postgresql://rf@db:5432/dw", "password": password},
    )
    redis_kwargs = parse_url(s.redis_connection_url())
    assert (redis_kwargs["username"], redis_kwargs["password"]) == ("profile-writer", password)
    assert (redis_kwargs["host"], redis_kwargs["port"], redis_kwargs["db"]) == ("::1", 6379, 2)
    pg = conninfo_to_dict(s.warehouse_connection_url())
    assert (pg["user"], pg["password"], pg["host"], pg["dbname"]) == ("rf", password, "db", "dw")


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
