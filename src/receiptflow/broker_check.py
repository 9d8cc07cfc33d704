"""Whether Kafka answers before a command starts: one line naming the servers and what to do when not.

A command that needs the broker calls :func:`require_broker` first, so that a broker that is down, or
one that refuses this command's login, is said once in one line instead of librdkafka retrying until
a timeout deep inside the command.
"""

from __future__ import annotations

import socket

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from .config import Settings
from .errors import BrokerError

BROKER_CHECK_SECONDS = 10.0


def require_broker(settings: Settings, timeout: float = BROKER_CHECK_SECONDS) -> None:
    """Raise BrokerError within ``timeout`` s, naming the servers and how to start them, if Kafka does not answer."""
    hint = (
        "start the embedded stack with `.venv/bin/receiptflow stack up` (or `make demo`)"
        if not settings.is_production
        else "check the cluster, RECEIPTFLOW_BOOTSTRAP_SERVERS and the Kafka security settings"
    )
    # Nothing listening at any bootstrap address is known at once; librdkafka would retry until the timeout.
    if not any(
        _accepts_connections(server) for server in settings.kafka.bootstrap_servers.split(",") if server.strip()
    ):
        raise BrokerError(
            f"Kafka at {settings.kafka.bootstrap_servers} does not answer (no server accepts a connection there): "
            f"{hint}"
        )
    refused: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            refused.append(err)

    admin = AdminClient(settings.kafka_config(error_cb=on_error))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # serves the error callbacks (the refused login) queued while waiting
        if refused:
            raise BrokerError(_login_refused(settings)) from exc
        if settings.kafka.sasl_username is None and not settings.is_production:
            hint += (
                "; a broker that requires logins sees none from this command: run it from the folder where "
                "`stack up` ran (its passwords are in <data dir>/secrets), or set RECEIPTFLOW_DATA_DIR"
            )
        raise BrokerError(
            f"Kafka at {settings.kafka.bootstrap_servers} does not answer ({timeout:.0f} s): {hint}"
        ) from exc


def _login_refused(settings: Settings) -> str:
    user = settings.kafka.sasl_username
    where = (
        f"the embedded stack keeps its principals' passwords in {settings.local.data_dir / 'secrets'}: run from the "
        "folder where `stack up` ran, set RECEIPTFLOW_DATA_DIR, or give "
        if not settings.is_production
        else "give "
    )
    return (
        f"Kafka at {settings.kafka.bootstrap_servers} refused the login as {user!r} (wrong password or unknown user): "
        f"{where}the principal's RECEIPTFLOW_KAFKA_<ROLE>_PASSWORD"
    )


def _accepts_connections(server: str, timeout: float = 3.0) -> bool:
    host, _, port = server.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
