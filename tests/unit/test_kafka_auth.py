"""Kafka principals: which login each command gets, in which order the sources are tried, the generated passwords."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from receiptflow.cli import build_parser, kafka_principal
from receiptflow.config import Settings
from receiptflow.kafka_auth import (
    KafkaPrincipal,
    as_principal,
    auth_environment,
    embedded_credentials,
    principal_password,
)

K = KafkaPrincipal


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("RECEIPTFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _embedded(tmp_path: Path, **kafka: object) -> Settings:
    return Settings(kafka={"bootstrap_servers": "127.0.0.1:9092", **kafka}, local={"data_dir": tmp_path / "data"})


def test_a_given_role_password_wins_and_logs_in_with_scram(tmp_path: Path) -> None:
    s = _embedded(tmp_path, router_password="r-secret", sasl_username="admin", sasl_password="a-secret")
    router = as_principal(s, K.ROUTER)
    conf = router.kafka_config()
    assert (conf["security.protocol"], conf["sasl.mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (conf["sasl.username"], conf["sasl.password"]) == ("router", "r-secret")
    # TLS configured stays TLS: SCRAM over it.
    tls = as_principal(_embedded(tmp_path, router_password="x", security_protocol="SSL"), K.ROUTER)
    assert tls.kafka.security_protocol == "SASL_SSL"


def test_one_shared_login_that_is_no_principal_is_used_as_given(tmp_path: Path) -> None:
    s = _embedded(tmp_path, sasl_username="receiptflow", sasl_password="shared", sasl_mechanism="PLAIN")
    assert as_principal(s, K.SINK) == s


def test_an_embedded_install_uses_the_generated_password_once_there_is_one(tmp_path: Path) -> None:
    s = _embedded(tmp_path)
    assert as_principal(s, K.SINK) == s, "a client never invents a password no broker knows"
    assert not (tmp_path / "data" / "secrets").exists()
    passwords = embedded_credentials(s)
    assert set(passwords) == set(KafkaPrincipal) and len(set(passwords.values())) == len(KafkaPrincipal)
    for principal in KafkaPrincipal:
        path = tmp_path / "data" / "secrets" / f"kafka-{principal.value}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert embedded_credentials(s) == passwords, "generated once per install"
    sink = as_principal(s, K.SINK)
    assert sink.kafka.sasl_username == "sink" and sink.kafka.sasl_password == SecretStr(passwords[K.SINK])
    # A process resolved as one principal switches to another's login (the web page's erasure).
    assert as_principal(sink, K.SUPPORT).kafka.sasl_username == "support"


def test_production_and_auth_off_generate_nothing(tmp_path: Path) -> None:
    prod = Settings(kafka={"bootstrap_servers": "kafka-1:9092"}, local={"data_dir": tmp_path / "data"})
    assert principal_password(prod, K.ADMIN, create=True) is None
    assert as_principal(prod, K.ROUTER) == prod
    off = Settings(kafka={"bootstrap_servers": "127.0.0.1:9092"}, local={"data_dir": tmp_path, "kafka_auth": False})
    assert principal_password(off, K.ADMIN, create=True) is None
    assert not (tmp_path / "secrets").exists()


def test_the_auth_environment_gives_a_child_the_same_logins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _embedded(tmp_path, sasl_username="admin", sasl_password="a", router_password="r", sink_password="s")
    s = as_principal(s, K.ADMIN)
    for name, value in auth_environment(s).items():
        monkeypatch.setenv(name, value)
    child = Settings(kafka={"bootstrap_servers": "127.0.0.1:9092"}, local={"data_dir": tmp_path / "data"})
    assert child.kafka_config()["sasl.username"] == "admin"
    assert as_principal(child, K.ROUTER).kafka_config()["sasl.password"] == "r"
    assert as_principal(child, K.SINK).kafka_config()["sasl.username"] == "sink"


@pytest.mark.parametrize(
    ("argv", "principal"),
    [
        (["produce", "--kind", "consent", "f.jsonl"], K.CONSENT_WRITER),
        (["produce", "f.jsonl"], K.REGISTERS),
        (["simulate"], K.REGISTERS),
        (["sink", "run"], K.SINK),
        (["aggregate", "run"], K.AGGREGATOR),
        (["erase", "1234567890123", "--yes"], K.SUPPORT),
        (["export", "1234567890123"], K.SUPPORT),
        (["topics", "create"], K.ADMIN),
        (["status"], K.ADMIN),
        (["process", "--role", "router"], None),
        (["web"], None),
    ],
)
def test_each_command_logs_in_as_its_component(argv: list[str], principal: KafkaPrincipal | None) -> None:
    args: argparse.Namespace = build_parser().parse_args(argv)
    assert kafka_principal(args) == principal
