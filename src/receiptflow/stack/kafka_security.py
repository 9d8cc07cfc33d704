"""Authentication and authorization of the embedded Kafka broker: SASL/SCRAM logins, KRaft's ACLs.

With ``RECEIPTFLOW_KAFKA_AUTH`` on (the default) every node of the embedded broker or cluster runs:

* the client listener ``SASL_PLAINTEXT`` with SCRAM-SHA-512 only, which is also the inter-broker
  listener (the nodes of a cluster log in to each other as ``admin``);
* the controller listener ``SASL_PLAINTEXT`` with PLAIN, whose only user is ``admin`` (a static
  JAAS user: the controllers must authenticate before any SCRAM credential has been replicated);
* ``org.apache.kafka.metadata.authorizer.StandardAuthorizer`` with ``super.users=User:admin`` and
  ``allow.everyone.if.no.acl.found=false``: whatever :mod:`receiptflow.kafka_acl` does not grant is
  refused.

The storage is formatted with ``admin``'s SCRAM credential (``--add-scram``), so the broker can be
logged in to from its first start; every other principal's credential is set (upserted) through the
AdminClient each time the broker starts, so a new principal or a changed password takes effect on
the next ``stack up``. The passwords are in ``server.properties``, written readable by its owner only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# The package does not re-export these for mypy.
from confluent_kafka.admin._scram import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from ..errors import ConfigError, StackError
from ..kafka_auth import SCRAM_MECHANISM, KafkaPrincipal

CLIENT_LISTENER = "SASL_PLAINTEXT"
SCRAM_ITERATIONS = 8192
# Characters that the StorageTool's --add-scram syntax or a JAAS line cannot carry unquoted.
_UNSAFE = set(',[]="\\; \t\n')


def _jaas_value(value: str, what: str) -> str:
    if not value or any(c in _UNSAFE for c in value):
        raise ConfigError(
            f"the {what} cannot be used by the embedded broker: use letters, digits and -_.:@+/ only "
            "(a generated one always can)"
        )
    return value


def auth_properties(host: str, port: int, controller_port: int, admin_password: str) -> dict[str, str]:
    """The listener and authorizer keys of ``server.properties`` for a node with authentication on."""
    admin = KafkaPrincipal.ADMIN.value
    password = _jaas_value(admin_password, f"password of the Kafka principal {admin}")
    scram_login = (
        f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{admin}" password="{password}";'
    )
    plain_login = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{admin}" password="{password}" user_{admin}="{password}";'
    )
    return {
        "listeners": f"{CLIENT_LISTENER}://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"{CLIENT_LISTENER}://{host}:{port}",
        "inter.broker.listener.name": CLIENT_LISTENER,
        "listener.security.protocol.map": f"{CLIENT_LISTENER}:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        f"listener.name.{CLIENT_LISTENER.lower()}.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.{CLIENT_LISTENER.lower()}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": scram_login,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain_login,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": KafkaPrincipal.ADMIN.acl_principal,
        "allow.everyone.if.no.acl.found": "false",
    }


def format_arguments(admin_password: str) -> list[str]:
    """The StorageTool ``format`` arguments that store ``admin``'s SCRAM credential with the metadata."""
    admin = KafkaPrincipal.ADMIN.value
    password = _jaas_value(admin_password, f"password of the Kafka principal {admin}")
    return ["--add-scram", f"{SCRAM_MECHANISM}=[name={admin},password={password}]"]


def admin_login(admin_password: str) -> dict[str, Any]:
    """librdkafka properties that log in as ``admin`` (the stack's own checks)."""
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": KafkaPrincipal.ADMIN.value,
        "sasl.password": admin_password,
    }


def upsert_credentials(admin_conf: Mapping[str, Any], passwords: Mapping[KafkaPrincipal, str], timeout: float) -> None:
    """Set every principal's SCRAM-SHA-512 credential but ``admin``'s (stored at format time)."""
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            principal.value, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), password.encode()
        )
        for principal, password in passwords.items()
        if principal is not KafkaPrincipal.ADMIN
    ]
    if not upserts:
        return
    admin = AdminClient(dict(admin_conf))
    try:
        for user, future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).items():
            try:
                future.result()
            except KafkaException as exc:
                raise StackError(f"cannot set the Kafka SCRAM credential of {user}: {exc}") from exc
    except KafkaException as exc:
        raise StackError(f"cannot set the Kafka SCRAM credentials: {exc}") from exc
