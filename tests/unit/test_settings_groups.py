"""The grouped settings read the same environment variables as the flat class before them.

``OLD_VARIABLES`` is every variable of the flat ``Settings`` (60 fields, before the settings were grouped
by component) and of the groups added since (the aggregator's), with a value other than its default and
where that value must now be read: each one is set alone and must arrive there, from the environment and
from a ``.env`` file; the README's configuration table names no other variable, and the settings read no
other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from receiptflow.cli import _settings_problem
from receiptflow.config import (
    ENV_PREFIX,
    GROUPS,
    VARIABLES,
    KafkaSettings,
    LocalSettings,
    Settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]

# variable -> (group, field, value in the environment, value read)
OLD_VARIABLES: dict[str, tuple[str, str, str, Any]] = {
    "RECEIPTFLOW_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers", "k1:9093,k2:9093", "k1:9093,k2:9093"),
    "RECEIPTFLOW_KAFKA_SECURITY_PROTOCOL": ("kafka", "security_protocol", "SASL_SSL", "SASL_SSL"),
    "RECEIPTFLOW_KAFKA_SASL_MECHANISM": ("kafka", "sasl_mechanism", "SCRAM-SHA-512", "SCRAM-SHA-512"),
    "RECEIPTFLOW_KAFKA_SASL_USERNAME": ("kafka", "sasl_username", "rf", "rf"),
    "RECEIPTFLOW_KAFKA_SASL_PASSWORD": ("kafka", "sasl_password", "sasl-secret", SecretStr("sasl-secret")),
    "RECEIPTFLOW_KAFKA_ADMIN_PASSWORD": ("kafka", "admin_password", "adm-pw", SecretStr("adm-pw")),
    "RECEIPTFLOW_KAFKA_ROUTER_PASSWORD": ("kafka", "router_password", "rou-pw", SecretStr("rou-pw")),
    "RECEIPTFLOW_KAFKA_PROFILES_PASSWORD": ("kafka", "profiles_password", "pro-pw", SecretStr("pro-pw")),
    "RECEIPTFLOW_KAFKA_AGGREGATOR_PASSWORD": ("kafka", "aggregator_password", "agg-pw", SecretStr("agg-pw")),
    "RECEIPTFLOW_KAFKA_SINK_PASSWORD": ("kafka", "sink_password", "sin-pw", SecretStr("sin-pw")),
    "RECEIPTFLOW_KAFKA_REGISTERS_PASSWORD": ("kafka", "registers_password", "reg-pw", SecretStr("reg-pw")),
    "RECEIPTFLOW_KAFKA_CONSENT_WRITER_PASSWORD": ("kafka", "consent_writer_password", "con-pw", SecretStr("con-pw")),
    "RECEIPTFLOW_KAFKA_SUPPORT_PASSWORD": ("kafka", "support_password", "sup-pw", SecretStr("sup-pw")),
    "RECEIPTFLOW_KAFKA_SSL_CA_LOCATION": ("kafka", "ssl_ca_location", "/etc/rf/ca.pem", "/etc/rf/ca.pem"),
    "RECEIPTFLOW_KAFKA_SSL_CERTIFICATE_LOCATION": ("kafka", "ssl_certificate_location", "/c.pem", "/c.pem"),
    "RECEIPTFLOW_KAFKA_SSL_KEY_LOCATION": ("kafka", "ssl_key_location", "/k.pem", "/k.pem"),
    "RECEIPTFLOW_KAFKA_SSL_KEY_PASSWORD": ("kafka", "ssl_key_password", "key-secret", SecretStr("key-secret")),
    "RECEIPTFLOW_KAFKA_EXTRA": ("kafka", "extra", '{"client.rack": "hel1"}', {"client.rack": "hel1"}),
    "RECEIPTFLOW_TOPIC_PREFIX": ("kafka", "topic_prefix", "staging.", "staging."),
    "RECEIPTFLOW_TOPIC_PARTITIONS": ("kafka", "topic_partitions", "12", 12),
    "RECEIPTFLOW_TOPIC_REPLICATION_FACTOR": ("kafka", "topic_replication_factor", "3", 3),
    "RECEIPTFLOW_SCHEMA_REGISTRY_URL": ("kafka", "schema_registry_url", "http://reg:8081", "http://reg:8081"),
    "RECEIPTFLOW_PROCESSOR_ID": ("router", "id", "rf-router", "rf-router"),
    "RECEIPTFLOW_PROCESSOR_INSTANCE": ("router", "instance", "worker-1", "worker-1"),
    "RECEIPTFLOW_PROCESSOR_BATCH_MAX": ("router", "batch_max", "500", 500),
    "RECEIPTFLOW_PROCESSOR_BATCH_WAIT_MS": ("router", "batch_wait_ms", "75", 75),
    "RECEIPTFLOW_PROCESSOR_ORDER_WAIT_MS": ("router", "order_wait_ms", "900", 900),
    "RECEIPTFLOW_PROCESSOR_DEDUP_DAYS": ("router", "dedup_days", "7", 7),
    "RECEIPTFLOW_FAST_PATH": ("router", "fast_path", "off", False),
    # The aggregator's group (issue 28), added after the settings were grouped.
    "RECEIPTFLOW_ANALYTICS_K": ("aggregate", "k", "25", 25),
    "RECEIPTFLOW_ANALYTICS_GRACE_SECONDS": ("aggregate", "grace_seconds", "600", 600),
    "RECEIPTFLOW_ANALYTICS_IDLE_CLOSE_SECONDS": ("aggregate", "idle_close_seconds", "30", 30),
    "RECEIPTFLOW_ANALYTICS_ID": ("aggregate", "id", "rf-aggregator", "rf-aggregator"),
    "RECEIPTFLOW_ANALYTICS_INSTANCE": ("aggregate", "instance", "agg-1", "agg-1"),
    "RECEIPTFLOW_ANALYTICS_BATCH_MAX": ("aggregate", "batch_max", "50", 50),
    "RECEIPTFLOW_PROFILE_DEDUP_DAYS": ("profiles", "dedup_days", "40", 40),
    "RECEIPTFLOW_PROFILE_BATCH_MAX": ("profiles", "batch_max", "250", 250),
    "RECEIPTFLOW_PROFILE_FETCH_WAIT_MS": ("profiles", "fetch_wait_ms", "20", 20),
    "RECEIPTFLOW_POINTS_FILE": ("profiles", "points_file", "/etc/rf/points.toml", Path("/etc/rf/points.toml")),
    "RECEIPTFLOW_HOUSEHOLDS_FILE": ("profiles", "households_file", "/etc/rf/hh.csv", Path("/etc/rf/hh.csv")),
    "RECEIPTFLOW_SEGMENTS_FILE": ("profiles", "segments_file", "/etc/rf/seg.toml", Path("/etc/rf/seg.toml")),
    "RECEIPTFLOW_SINK_BATCH_MAX": ("sink", "batch_max", "300", 300),
    "RECEIPTFLOW_SINK_BATCH_SECONDS": ("sink", "batch_seconds", "0.5", 0.5),
    "RECEIPTFLOW_SINK_INSTANCE": ("sink", "instance", "sink-2", "sink-2"),
    "RECEIPTFLOW_REDIS_URL": ("redis", "url", "redis://cache:6380/2", "redis://cache:6380/2"),
    "RECEIPTFLOW_REDIS_CLUSTER": ("redis", "cluster", "true", True),
    "RECEIPTFLOW_REDIS_PASSWORD": ("redis", "password", "redis-secret", SecretStr("redis-secret")),
    "RECEIPTFLOW_REDIS_ACL_FILE": ("redis", "acl_file", "/etc/rf/users.acl", Path("/etc/rf/users.acl")),
    "RECEIPTFLOW_REDIS_WRITER_USER": ("redis", "writer_user", "w", "w"),
    "RECEIPTFLOW_REDIS_WRITER_PASSWORD": ("redis", "writer_password", "w-secret", SecretStr("w-secret")),
    "RECEIPTFLOW_REDIS_MARKETING_USER": ("redis", "marketing_user", "m", "m"),
    "RECEIPTFLOW_REDIS_MARKETING_PASSWORD": ("redis", "marketing_password", "m-secret", SecretStr("m-secret")),
    "RECEIPTFLOW_REDIS_SUPPORT_USER": ("redis", "support_user", "s", "s"),
    "RECEIPTFLOW_REDIS_SUPPORT_PASSWORD": ("redis", "support_password", "s-secret", SecretStr("s-secret")),
    "RECEIPTFLOW_REDIS_WEB_SESSIONS_USER": ("redis", "web_sessions_user", "ws", "ws"),
    "RECEIPTFLOW_REDIS_WEB_SESSIONS_PASSWORD": ("redis", "web_sessions_password", "ws-secret", SecretStr("ws-secret")),
    "RECEIPTFLOW_REDIS_DLQ_VAULT_USER": ("redis", "dlq_vault_user", "d", "d"),
    "RECEIPTFLOW_REDIS_DLQ_VAULT_PASSWORD": ("redis", "dlq_vault_password", "d-secret", SecretStr("d-secret")),
    "RECEIPTFLOW_REDIS_CUSTOMER_USER": ("redis", "customer_user", "c", "c"),
    "RECEIPTFLOW_REDIS_CUSTOMER_PASSWORD": ("redis", "customer_password", "c-secret", SecretStr("c-secret")),
    "RECEIPTFLOW_REDIS_AUDITOR_USER": ("redis", "auditor_user", "a", "a"),
    "RECEIPTFLOW_REDIS_AUDITOR_PASSWORD": ("redis", "auditor_password", "a-secret", SecretStr("a-secret")),
    "RECEIPTFLOW_WAREHOUSE_URL": ("warehouse", "url", "postgresql://rf@db/dw", "postgresql://rf@db/dw"),
    "RECEIPTFLOW_WAREHOUSE_PASSWORD": ("warehouse", "password", "pg-secret", SecretStr("pg-secret")),
    "RECEIPTFLOW_WAREHOUSE_SINK_USER": ("warehouse", "sink_user", "sink1", "sink1"),
    "RECEIPTFLOW_WAREHOUSE_SINK_PASSWORD": ("warehouse", "sink_password", "sk-secret", SecretStr("sk-secret")),
    "RECEIPTFLOW_WAREHOUSE_SUPPORT_USER": ("warehouse", "support_user", "dpo1", "dpo1"),
    "RECEIPTFLOW_WAREHOUSE_SUPPORT_PASSWORD": ("warehouse", "support_password", "sp-secret", SecretStr("sp-secret")),
    "RECEIPTFLOW_WEB_SECRET_KEY": ("web", "secret_key", "web-secret", SecretStr("web-secret")),
    "RECEIPTFLOW_WEB_BASE_URL": ("web", "base_url", "https://rf.example", "https://rf.example"),
    "RECEIPTFLOW_WEB_LINK_MINUTES": ("web", "link_minutes", "30", 30),
    "RECEIPTFLOW_WEB_SESSION_IDLE_MINUTES": ("web", "session_idle_minutes", "20", 20),
    "RECEIPTFLOW_WEB_SESSION_HOURS": ("web", "session_hours", "4", 4),
    "RECEIPTFLOW_ERASURE_SALT": ("privacy", "erasure_salt", "salt-secret", SecretStr("salt-secret")),
    "RECEIPTFLOW_ANALYTICS_KEY": ("privacy", "analytics_key", "analytics-secret", SecretStr("analytics-secret")),
    "RECEIPTFLOW_MARKETING_KEY": ("privacy", "marketing_key", "marketing-secret", SecretStr("marketing-secret")),
    "RECEIPTFLOW_OPERATOR": ("privacy", "operator", "anna", "anna"),
    "RECEIPTFLOW_DEPLOYMENT": ("privacy", "deployment", "production", "production"),
    "RECEIPTFLOW_POLICY_FILE": ("privacy", "policy_file", "/etc/rf/policy.toml", Path("/etc/rf/policy.toml")),
    "RECEIPTFLOW_DEFAULT_PRODUCT_DATA_MARKETING": ("privacy", "default_product_data_marketing", "true", True),
    "RECEIPTFLOW_DEFAULT_ELECTRONIC_MARKETING": ("privacy", "default_electronic_marketing", "true", True),
    "RECEIPTFLOW_CONSENT_MAX_AGE_DAYS": ("privacy", "consent_max_age_days", "30", 30),
    "RECEIPTFLOW_METRICS_PORT": ("metrics", "port", "9200", 9200),
    "RECEIPTFLOW_METRICS_ADDR": ("metrics", "addr", "0.0.0.0", "0.0.0.0"),
    "RECEIPTFLOW_STATUS_ENDPOINTS": ("metrics", "status_endpoints", "router=h:9108", "router=h:9108"),
    "RECEIPTFLOW_METRICS_TEXTFILE": ("metrics", "textfile", "/var/lib/rf.prom", Path("/var/lib/rf.prom")),
    "RECEIPTFLOW_DATA_DIR": ("local", "data_dir", "/srv/receiptflow", Path("/srv/receiptflow")),
    "RECEIPTFLOW_CACHE_DIR": ("local", "cache_dir", "/var/cache/rf", Path("/var/cache/rf")),
    "RECEIPTFLOW_JAVA_HOME": ("local", "java_home", "/opt/jdk", Path("/opt/jdk")),
    "RECEIPTFLOW_KAFKA_CONTROLLER_PORT": ("local", "kafka_controller_port", "9095", 9095),
    "RECEIPTFLOW_KAFKA_HEAP": ("local", "kafka_heap", "2g", "2g"),
    "RECEIPTFLOW_KAFKA_AUTH": ("local", "kafka_auth", "false", False),
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RECEIPTFLOW_ variable from the machine, and a working directory without a .env file."""
    for name in list(__import__("os").environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def read(settings: Settings, group: str, field: str) -> Any:
    value = getattr(getattr(settings, group), field)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def expected(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def readme_variables() -> set[str]:
    """The variables named in the first column of the README's configuration table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| variable | default | meaning |", 1)[1].split("\n\n", 1)[0]
    return {
        name for row in table.splitlines()[2:] for name in re.findall(r"RECEIPTFLOW_[A-Z0-9_]+", row.split(" | ")[0])
    }


def test_the_settings_read_exactly_the_variables_they_read_before() -> None:
    assert set(VARIABLES) == set(OLD_VARIABLES)
    for name, (group, field, _, _) in OLD_VARIABLES.items():
        assert (VARIABLES[name].group, VARIABLES[name].field) == (group, field), name
        assert VARIABLES[name].key == name.removeprefix(ENV_PREFIX).lower()


def test_the_readme_table_names_every_variable_and_no_other() -> None:
    assert readme_variables() == set(OLD_VARIABLES)


@pytest.mark.parametrize("name", sorted(OLD_VARIABLES))
def test_each_variable_is_read_into_its_group(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    group, field, raw, value = OLD_VARIABLES[name]
    monkeypatch.setenv(name, raw)
    settings = Settings()
    assert read(settings, group, field) == expected(value)
    # ... and into nothing else: every other setting keeps its default.
    monkeypatch.delenv(name)
    defaults = Settings()
    for other in VARIABLES.values():
        if other.name != name:
            assert read(settings, other.group, other.field) == read(defaults, other.group, other.field), other.name


def test_variable_names_are_not_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("receiptflow_topic_prefix", "lower.")
    assert Settings().kafka.topic_prefix == "lower."


def test_a_dotenv_file_reaches_every_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [f"{name}={raw}" for name, (_, _, raw, _) in OLD_VARIABLES.items() if name != "RECEIPTFLOW_KAFKA_EXTRA"]
    (tmp_path / ".env").write_text("\n".join([*lines, "UNRELATED=1", "RECEIPTFLOW_NO_SUCH_SETTING=1"]) + "\n")
    settings = Settings()
    for name, (group, field, _, value) in OLD_VARIABLES.items():
        if name != "RECEIPTFLOW_KAFKA_EXTRA":
            assert read(settings, group, field) == expected(value), name
    # The environment wins over the file, and the file can be left out or named.
    monkeypatch.setenv("RECEIPTFLOW_TOPIC_PREFIX", "from-env.")
    assert Settings().kafka.topic_prefix == "from-env."
    monkeypatch.delenv("RECEIPTFLOW_TOPIC_PREFIX")
    assert Settings(_env_file=None).kafka.topic_prefix == ""
    (tmp_path / "other.env").write_text("RECEIPTFLOW_TOPIC_PREFIX=other.\n")
    assert Settings(_env_file=tmp_path / "other.env").kafka.topic_prefix == "other."


def test_explicit_values_reach_the_groups_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIPTFLOW_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("RECEIPTFLOW_TOPIC_PREFIX", "env.")
    monkeypatch.setenv("RECEIPTFLOW_METRICS_PORT", "9300")
    nested = Settings(kafka={"bootstrap_servers": "given:9092"}, metrics={"port": 0})
    assert nested.kafka.bootstrap_servers == "given:9092"
    assert nested.kafka.topic_prefix == "env."  # the rest of the group still comes from the environment
    assert nested.metrics.port == 0
    flat = Settings(bootstrap_servers="flat:9092", metrics_port=1)
    assert (flat.kafka.bootstrap_servers, flat.kafka.topic_prefix, flat.metrics.port) == ("flat:9092", "env.", 1)
    # A group's mapping wins over a flat name (factories keep flat defaults and take grouped overrides).
    both = Settings(bootstrap_servers="flat:9092", topic_partitions=2, kafka={"bootstrap_servers": "nested:9092"})
    assert (both.kafka.bootstrap_servers, both.kafka.topic_partitions) == ("nested:9092", 2)
    # A group object is taken as it is.
    given = KafkaSettings(bootstrap_servers="object:9092")
    assert Settings(kafka=given).kafka is given
    assert given.topic_prefix == "env."
    assert load_settings(metrics={"port": 5}).metrics.port == 5


def test_explicit_values_are_validated_like_the_environment(tmp_path: Path) -> None:
    assert Settings(local={"data_dir": "relative"}).local.data_dir == (tmp_path / "relative").resolve()
    assert Settings(kafka={"extra": '{"a": "b"}'}).kafka.extra == {"a": "b"}
    assert isinstance(Settings(web={"secret_key": "k" * 32}).web.secret_key, SecretStr)
    with pytest.raises(ValidationError) as caught:
        Settings(kafka={"topic_partitions": 0}, metrics_port="lots")
    assert {e["loc"] for e in caught.value.errors()} == {("topic_partitions",), ("metrics_port",)}


def test_unknown_names_are_refused() -> None:
    with pytest.raises(TypeError, match="no setting 'bootstrap'"):
        Settings(bootstrap="x:1")
    with pytest.raises(TypeError, match="KafkaSettings has no setting url"):
        Settings(kafka={"url": "x"})
    with pytest.raises(TypeError, match="as an object and as bootstrap_servers"):
        Settings(kafka=KafkaSettings(), bootstrap_servers="x:1")


def test_a_bad_variable_is_named_as_the_environment_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIPTFLOW_METRICS_PORT", "lots")
    monkeypatch.setenv("RECEIPTFLOW_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValidationError) as caught:
        Settings()
    problem = _settings_problem(caught.value)
    assert "RECEIPTFLOW_METRICS_PORT: " in problem and "RECEIPTFLOW_KAFKA_SECURITY_PROTOCOL: " in problem


def test_the_aggregators_k_is_at_least_two(monkeypatch: pytest.MonkeyPatch) -> None:
    from receiptflow.cells import DEFAULT_K  # noqa: PLC0415

    assert Settings().aggregate.k == DEFAULT_K
    monkeypatch.setenv("RECEIPTFLOW_ANALYTICS_K", "1")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "RECEIPTFLOW_ANALYTICS_K: " in _settings_problem(caught.value)


def test_settings_and_groups_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.kafka = KafkaSettings()  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.kafka.topic_prefix = "x."  # type: ignore[misc]


def test_secrets_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_fields = {v.name for v in VARIABLES.values() if v.info.annotation == SecretStr | None}
    assert secret_fields == {name for name, (_, _, _, value) in OLD_VARIABLES.items() if isinstance(value, SecretStr)}
    for name in secret_fields:
        monkeypatch.setenv(name, f"leak-{name}")
    settings = Settings()
    shown = repr(settings) + str(settings) + str(settings.describe()) + str(settings.model_dump())
    assert "leak-" not in shown


def test_model_copy_changes_one_field_of_a_group() -> None:
    settings = Settings(kafka={"bootstrap_servers": "a:1", "topic_prefix": "p."}, router={"instance": "0"})
    nested = settings.model_copy(update={"kafka": {"topic_prefix": "q."}})
    assert (nested.kafka.bootstrap_servers, nested.kafka.topic_prefix) == ("a:1", "q.")
    assert nested.router is settings.router
    assert settings.kafka.topic_prefix == "p."
    flat = settings.model_copy(update={"processor_instance": "7"})
    assert flat.router.instance == "7"
    assert flat.kafka is settings.kafka


def test_describe_and_kafka_config_read_the_groups() -> None:
    settings = Settings(
        kafka={
            "bootstrap_servers": "k:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_password": "pw",
            "extra": {"client.rack": "r1"},
        },
        redis={"url": "redis://:pw@cache:6379/0"},
        local={"data_dir": "/srv/rf"},
    )
    assert settings.describe() == {
        "kafka": "k:9093 (SASL_SSL/PLAIN)",
        "redis": "redis://:***@cache:6379/0",
        "warehouse": "duckdb:////srv/rf/warehouse.duckdb",
        "data_dir": "/srv/rf",
    }
    conf = settings.kafka_config(**{"group.id": "g"})
    assert (conf["bootstrap.servers"], conf["sasl.password"], conf["client.rack"], conf["group.id"]) == (
        "k:9093",
        "pw",
        "r1",
        "g",
    )


def test_the_data_folder_origin_follows_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().data_dir_origin.startswith("the default")
    assert Settings(local={"data_dir": "/srv/rf"}).data_dir_origin == "set by RECEIPTFLOW_DATA_DIR"
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", "/srv/rf")
    assert Settings().data_dir_origin == "set by RECEIPTFLOW_DATA_DIR"
    assert LocalSettings().data_dir == Path("/srv/rf")


def test_every_group_field_names_a_variable_of_its_own() -> None:
    names = [variable.name for variable in VARIABLES.values()]
    assert len(names) == len(set(names)) == sum(len(cls.model_fields) for cls in GROUPS.values())
    assert set(Settings.model_fields) == set(GROUPS)
