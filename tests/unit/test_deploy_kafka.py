"""Static checks of the bundles' Kafka security: SASL/SCRAM logins, KRaft's StandardAuthorizer, one principal
per workload (the one its command logs in as), every principal's SCRAM user created in compose."""

from __future__ import annotations

import re

import pytest

from receiptflow.cli import build_parser, kafka_principal
from receiptflow.kafka_auth import KafkaPrincipal

from .test_deploy_bundle import COMPOSE, DEPLOY, Workload, all_workloads, compose, k8s_resources

pytestmark = pytest.mark.unit

PASSWORD = re.compile(r"^RECEIPTFLOW_KAFKA_([A-Z_]+)_PASSWORD$")


def _kafka_nodes() -> dict[str, dict[str, str]]:
    services = compose()["services"]
    return {n: s["environment"] for n, s in services.items() if "KAFKA_NODE_ID" in (s.get("environment") or {})}


def _principals_of(w: Workload) -> set[KafkaPrincipal]:
    """The principals whose password the workload is given."""
    return {KafkaPrincipal[m.group(1)] for k in w.env if (m := PASSWORD.match(k))}


def _logs_in_as(w: Workload) -> set[KafkaPrincipal]:
    """Whom the workload's command logs in as (the CLI's own mapping; the outbox adds the consent writer)."""
    args = build_parser().parse_args(w.argv)
    if args.command == "process":
        return {KafkaPrincipal(args.role)}
    principal = kafka_principal(args)
    assert principal is not None, w.where
    return {principal, KafkaPrincipal.CONSENT_WRITER} if args.command == "simulate" else {principal}


def test_compose_runs_kafka_with_scram_logins_and_the_standard_authorizer() -> None:
    nodes = _kafka_nodes()
    assert len(nodes) == 3
    for name, env in nodes.items():
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer", name
        assert env["KAFKA_SUPER_USERS"] == "User:admin", name
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false", name
        protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert set(protocols.values()) == {"SASL_PLAINTEXT"}, f"{name}: a listener without authentication"
        assert env["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512", name
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith(f"CLIENT://{name}:9092,"), name
        # The brokers' own logins (admin) hold the password from deploy/.env, never a written one.
        for key in (
            "KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG",
            "KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG",
        ):
            assert 'password="${RECEIPTFLOW_KAFKA_ADMIN_PASSWORD:?' in env[key], (name, key)


def test_compose_creates_every_principals_scram_user_before_the_topics_and_acls() -> None:
    services = compose()["services"]
    users = services["kafka-users"]
    script = (DEPLOY / "kafka" / "scram-users.sh").read_text(encoding="utf-8")
    for principal in KafkaPrincipal:
        var = f"{principal.name}_PASSWORD"
        assert f"{principal.value}:{var}" in script, principal
        assert users["environment"][var] == f"${{{principal.variable}:?set it in deploy/.env}}", principal
    assert services["topics"]["depends_on"]["kafka-users"]["condition"] == "service_completed_successfully"
    assert "/receiptflow-kafka/scram-users.sh" in users["entrypoint"]
    assert all("./kafka:/receiptflow-kafka:ro" in services[n]["volumes"] for n in [*_kafka_nodes(), "kafka-users"])
    assert (DEPLOY / "kafka" / "admin-tool.sh").is_file()
    example = (DEPLOY / "env.example").read_text(encoding="utf-8")
    assert all(f"{p.variable}=replace-me" in example for p in KafkaPrincipal)
    assert "${RECEIPTFLOW_KAFKA_ADMIN_PASSWORD" in COMPOSE.read_text(encoding="utf-8")


# Workloads that never talk to Kafka: no login at all (the warehouse's owner job: migrations, logins).
NO_KAFKA = (("warehouse", "setup"),)


def test_each_workload_logs_in_as_its_own_principal_only() -> None:
    for w in all_workloads():
        if any(w.runs(prefix) for prefix in NO_KAFKA):
            assert not _principals_of(w), w.where
            continue
        assert w.env.get("RECEIPTFLOW_KAFKA_SECURITY_PROTOCOL", "").startswith("SASL_"), w.where
        assert w.env.get("RECEIPTFLOW_KAFKA_SASL_MECHANISM") == "SCRAM-SHA-512", w.where
        assert "RECEIPTFLOW_KAFKA_SASL_PASSWORD" not in w.env, f"{w.where}: one shared login"
        assert _principals_of(w) == _logs_in_as(w), w.where
        assert all(w.env[p.variable].startswith("<secret:") for p in _principals_of(w)), w.where
    # The super user's password is the topics job's alone.
    admins = [w.where for w in all_workloads() if KafkaPrincipal.ADMIN in _principals_of(w)]
    assert admins == ["compose service topics", "Job receiptflow-topics-create"]


def test_the_kubernetes_secret_holds_a_placeholder_for_each_workloads_principal() -> None:
    secret = next(r for r in k8s_resources() if r["kind"] == "Secret")
    used = {p.variable for w in all_workloads() if w.where.split()[0] != "compose" for p in _principals_of(w)}
    assert used == {
        KafkaPrincipal.ADMIN.variable,
        KafkaPrincipal.ROUTER.variable,
        KafkaPrincipal.PROFILES.variable,
        KafkaPrincipal.AGGREGATOR.variable,
        KafkaPrincipal.SINK.variable,
    }
    assert used <= set(secret["stringData"])
