"""Kafka principals: which SCRAM user each component logs in as, and where its password comes from.

One principal per component, each allowed only what it needs by the ACLs of
:mod:`receiptflow.kafka_acl`:

* ``admin``: the super user: ``topics create`` (topics and ACLs), the embedded stack's checks, the
  operator's commands (``status``, ``consume``, ``dlq``), the tests' own clients;
* ``router``, ``profiles`` (the faust agent), ``aggregator``, ``sink``: the stream workers;
* ``registers``: checkouts from the registers (``produce``, ``simulate``, the outbox);
* ``consent-writer``: the only writers of ``consents`` besides ``support``: the web page and the
  registers' app (``produce --kind consent``, the outbox's consent changes);
* ``support``: the data-protection jobs (``export``, ``erase``): tombstones on ``consents``,
  records on ``consents.erased``, reading the card-linked topics.

``settings.kafka.sasl_username`` is the authenticated principal of the running process: a command
resolves its component's credentials into its settings at entry (:func:`as_principal`). Where they
come from, first match wins:

1. ``RECEIPTFLOW_KAFKA_<ROLE>_PASSWORD``: how production passes each component its own login;
2. ``RECEIPTFLOW_KAFKA_SASL_USERNAME`` naming a user that is none of the principals above: one
   login for every component (an external cluster with a single user), used as given;
3. on an embedded (non-production) install with ``RECEIPTFLOW_KAFKA_AUTH`` on, the password
   generated for the principal in ``data_dir/secrets/kafka-<user>`` (0600) by ``stack up``;
4. none: the settings as they are (a broker without authentication).

The embedded broker (:mod:`receiptflow.stack.kafka`) is formatted with every principal's SCRAM
credential and runs KRaft's ``StandardAuthorizer`` with ``admin`` as its only super user.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import SecretStr

from .config import Settings
from .errors import ConfigError
from .secrets import generated_secret, read_generated_secret

SCRAM_MECHANISM = "SCRAM-SHA-512"


class KafkaPrincipal(StrEnum):
    """A component's Kafka user; the value is the user name (``User:<value>`` in the ACLs)."""

    ADMIN = "admin"
    ROUTER = "router"
    PROFILES = "profiles"
    AGGREGATOR = "aggregator"
    SINK = "sink"
    REGISTERS = "registers"
    CONSENT_WRITER = "consent-writer"
    SUPPORT = "support"

    @property
    def acl_principal(self) -> str:
        return f"User:{self.value}"

    @property
    def variable(self) -> str:
        """The environment variable production gives its password in."""
        return f"RECEIPTFLOW_KAFKA_{self.name}_PASSWORD"


USERS: frozenset[str] = frozenset(p.value for p in KafkaPrincipal)


def given_password(settings: Settings, principal: KafkaPrincipal) -> SecretStr | None:
    """The principal's password from the settings (``RECEIPTFLOW_KAFKA_<ROLE>_PASSWORD``)."""
    value: SecretStr | None = getattr(settings.kafka, f"{principal.name.lower()}_password")
    return value


def principal_password(settings: Settings, principal: KafkaPrincipal, *, create: bool = False) -> str | None:
    """The principal's password: from the settings, else (embedded install, auth on) the generated one.

    ``create`` generates it when missing (the embedded broker does); clients only read it, so a
    client never invents a password no broker knows.
    """
    given = given_password(settings, principal)
    if given is not None:
        return given.get_secret_value()
    if settings.is_production or not settings.local.kafka_auth:
        return None
    name = f"kafka-{principal.value}"
    value = generated_secret(settings, name) if create else read_generated_secret(settings, name)
    return None if value is None else value.decode()


def embedded_credentials(settings: Settings) -> dict[KafkaPrincipal, str]:
    """Every principal's password for the embedded broker (given, else generated per install)."""
    out = {}
    for principal in KafkaPrincipal:
        password = principal_password(settings, principal, create=True)
        if password is None:
            raise ConfigError(f"no password for the Kafka principal {principal.value}: set {principal.variable}")
        out[principal] = password
    return out


def with_login(settings: Settings, user: str, password: str) -> Settings:
    """``settings`` logging in to Kafka as ``user`` with SCRAM (SASL over TLS when TLS was configured)."""
    protocol = settings.kafka.security_protocol
    if protocol == "PLAINTEXT":
        protocol = "SASL_PLAINTEXT"
    elif protocol == "SSL":
        protocol = "SASL_SSL"
    return settings.model_copy(
        update={
            "kafka": {
                "security_protocol": protocol,
                "sasl_mechanism": settings.kafka.sasl_mechanism or SCRAM_MECHANISM,
                "sasl_username": user,
                "sasl_password": SecretStr(password),
            }
        }
    )


def as_principal(settings: Settings, principal: KafkaPrincipal) -> Settings:
    """``settings`` authenticated as ``principal`` (see the module docstring for the order)."""
    given = given_password(settings, principal)
    if given is not None:
        return with_login(settings, principal.value, given.get_secret_value())
    single = settings.kafka.sasl_username
    if single is not None and single not in USERS:
        return settings
    generated = principal_password(settings, principal)
    if generated is not None:
        return with_login(settings, principal.value, generated)
    return settings


def auth_environment(settings: Settings) -> Mapping[str, str]:
    """The variables that give a child process these settings' Kafka logins (for supervisors and tests)."""
    kafka = settings.kafka
    env: dict[str, str] = {"RECEIPTFLOW_KAFKA_SECURITY_PROTOCOL": kafka.security_protocol}
    if kafka.sasl_mechanism:
        env["RECEIPTFLOW_KAFKA_SASL_MECHANISM"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        env["RECEIPTFLOW_KAFKA_SASL_USERNAME"] = kafka.sasl_username
    if kafka.sasl_password is not None:
        env["RECEIPTFLOW_KAFKA_SASL_PASSWORD"] = kafka.sasl_password.get_secret_value()
    for principal in KafkaPrincipal:
        given = given_password(settings, principal)
        if given is not None:
            env[principal.variable] = given.get_secret_value()
    return env
