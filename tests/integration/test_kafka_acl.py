"""The embedded broker's logins and ACLs, against the session's real broker (SASL/SCRAM, StandardAuthorizer).

Only the consent-writing principals may write ``consents``; a client with the wrong password is not
let in at all; only the router writes ``purchases.marketing``. Each client is a real confluent-kafka
producer logged in as the principal under test, with the ACLs ``topics create`` applied.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer

from receiptflow.config import Settings
from receiptflow.kafka_acl import AclNames, acl_grants, writers
from receiptflow.kafka_auth import KafkaPrincipal, as_principal, with_login
from receiptflow.topics import TopicNames, create_topics

from .conftest import KafkaServer, MakeSettings
from .support import env_for

pytestmark = pytest.mark.integration

K = KafkaPrincipal


def _write(settings: Settings, topic: str) -> tuple[list[KafkaError | None], list[KafkaError]]:
    """Produce one record as ``settings``' login: the delivery reports and the client's own errors."""
    reports: list[KafkaError | None] = []
    errors: list[KafkaError] = []
    producer = Producer(
        settings.kafka_config(
            **{
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": 5_000,
                "error_cb": errors.append,
            }
        )
    )

    def report(err: KafkaError | None, _: Message) -> None:
        reports.append(err)

    producer.produce(topic, key=b"card-1", value=b"not even a record", on_delivery=report)
    producer.flush(20)
    return reports, errors


@pytest.fixture
def secured(kafka_server: KafkaServer, make_settings: MakeSettings) -> Settings:
    if not kafka_server.passwords:
        pytest.fail("the session's Kafka broker runs without authentication (RECEIPTFLOW_TEST_BOOTSTRAP_SERVERS?)")
    settings = make_settings()
    result = create_topics(settings)
    assert result.acls == len(acl_grants(AclNames.of(settings)))
    return settings


def test_only_consent_writers_may_write_consents(secured: Settings) -> None:
    consents = TopicNames(secured.kafka.topic_prefix).consents
    for principal in (K.REGISTERS, K.ROUTER, K.PROFILES, K.SINK, K.AGGREGATOR):
        reports, _ = _write(as_principal(secured, principal), consents)
        assert len(reports) == 1 and reports[0] is not None, principal
        assert reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (principal, reports[0])
    for principal in (K.CONSENT_WRITER, K.SUPPORT):
        reports, errors = _write(as_principal(secured, principal), consents)
        assert reports == [None], (principal, reports, errors)


def test_a_wrong_password_is_not_let_in(secured: Settings) -> None:
    consents = TopicNames(secured.kafka.topic_prefix).consents
    reports, errors = _write(with_login(secured, K.CONSENT_WRITER.value, "not-the-password"), consents)
    assert len(reports) == 1 and reports[0] is not None, "nothing is written with a wrong password"
    codes = {e.code() for e in errors}
    assert KafkaError._AUTHENTICATION in codes or KafkaError.SASL_AUTHENTICATION_FAILED in codes, errors
    # A user the broker does not know is refused the same way.
    reports, errors = _write(with_login(secured, "mallory", "guessed"), consents)
    assert len(reports) == 1 and reports[0] is not None
    assert {e.code() for e in errors} & {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


def test_only_the_router_writes_purchases_marketing(secured: Settings) -> None:
    names = TopicNames(secured.kafka.topic_prefix)
    assert writers(acl_grants(AclNames.of(secured)), names.purchases_marketing) == {K.ROUTER}
    reports, errors = _write(as_principal(secured, K.ROUTER), names.purchases_marketing)
    assert reports == [None], errors
    for principal in (K.REGISTERS, K.CONSENT_WRITER, K.SUPPORT, K.PROFILES, K.SINK, K.AGGREGATOR):
        reports, _ = _write(as_principal(secured, principal), names.purchases_marketing)
        assert len(reports) == 1 and reports[0] is not None, principal
        assert reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (principal, reports[0])


def test_registers_write_checkouts_and_nothing_downstream(secured: Settings) -> None:
    names = TopicNames(secured.kafka.topic_prefix)
    registers = as_principal(secured, K.REGISTERS)
    assert registers.kafka.sasl_username == "registers"
    assert _write(registers, names.checkouts)[0] == [None]
    for topic in (names.purchases_customer, names.checkouts_dlq, names.consents_erased):
        reports, _ = _write(registers, topic)
        assert reports[0] is not None and reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, topic


def _produce_consents(env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", "produce", "--kind", "consent", "-"],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return done.returncode, " ".join(done.stderr.split())


def test_a_command_with_a_wrong_or_no_password_says_so_in_one_line(secured: Settings, tmp_path: Path) -> None:
    env = env_for(secured)
    env[K.CONSENT_WRITER.variable] = "not-the-password"
    code, err = _produce_consents(env)
    assert code == 1 and "refused the login as 'consent-writer'" in err, err
    assert "RECEIPTFLOW_KAFKA_<ROLE>_PASSWORD" in err and "Traceback" not in err, err
    # Another data folder and no password given: no login at all, and the line says where they are.
    bare = {k: v for k, v in env_for(secured).items() if not k.startswith("RECEIPTFLOW_KAFKA_")}
    bare["RECEIPTFLOW_DATA_DIR"] = str(tmp_path / "other")
    code, err = _produce_consents(bare)
    assert code == 1 and "sees none from this command" in err and "Traceback" not in err, err
