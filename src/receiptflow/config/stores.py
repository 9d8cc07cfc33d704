"""Settings of the stores and services: Redis, the warehouse, the web page, privacy keys and
policy, metrics, and this machine's folders and embedded broker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from .base import DEFAULT_DATA_DIR, SettingsGroup


class RedisSettings(SettingsGroup):
    """The profile store: where Redis is and the login of each role (:mod:`receiptflow.redis_auth`)."""

    url: str = Field(
        default="redis://127.0.0.1:6379/0", validation_alias="RECEIPTFLOW_REDIS_URL", description="profile store"
    )
    cluster: bool = Field(
        default=False,
        validation_alias="RECEIPTFLOW_REDIS_CLUSTER",
        description="the URL is one node of a Redis Cluster: the profile store uses a cluster client "
        "(each card's keys share one hash slot)",
    )
    password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_PASSWORD",
        description="overrides a password in the URL; that login serves every role without a password of its own",
    )
    acl_file: Path | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_ACL_FILE",
        description="ACL file (users and password hashes, deploy/redis) the embedded redis-server loads "
        "instead of the one it renders with the generated role passwords",
    )
    # One login per role (receiptflow.redis_auth); the embedded stack generates the passwords.
    writer_user: str = Field(
        default="profile-writer",
        validation_alias="RECEIPTFLOW_REDIS_WRITER_USER",
        description="Redis user of the profile writer role",
    )
    writer_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_WRITER_PASSWORD",
        description="password of the profile writer role (agent, rebuild, segments)",
    )
    marketing_user: str = Field(
        default="marketing-reader",
        validation_alias="RECEIPTFLOW_REDIS_MARKETING_USER",
        description="Redis user of the marketing role",
    )
    marketing_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_MARKETING_PASSWORD",
        description="password of the marketing reader role (profile --view marketing, the page's marketing view)",
    )
    support_user: str = Field(
        default="support",
        validation_alias="RECEIPTFLOW_REDIS_SUPPORT_USER",
        description="Redis user of the support/DPO role",
    )
    support_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_SUPPORT_PASSWORD",
        description="password of the support/DPO role (export, erase, profile --view full)",
    )
    web_sessions_user: str = Field(
        default="web-sessions",
        validation_alias="RECEIPTFLOW_REDIS_WEB_SESSIONS_USER",
        description="Redis user of the web page's sessions",
    )
    web_sessions_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_WEB_SESSIONS_PASSWORD",
        description="password of the web sessions role (the page's session records, nothing else)",
    )
    dlq_vault_user: str = Field(
        default="dlq-vault",
        validation_alias="RECEIPTFLOW_REDIS_DLQ_VAULT_USER",
        description="Redis user of the dead-letter vault role (the cards' dead-letter data keys)",
    )
    dlq_vault_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_DLQ_VAULT_PASSWORD",
        description="password of the dead-letter vault role (router, profile agent, sink, aggregator, dlq)",
    )
    customer_user: str = Field(
        default="customer-reader",
        validation_alias="RECEIPTFLOW_REDIS_CUSTOMER_USER",
        description="Redis user of the card holder's own view",
    )
    customer_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_CUSTOMER_PASSWORD",
        description="password of the customer reader role (profile --view customer, the page's customer view)",
    )
    auditor_user: str = Field(
        default="auditor",
        validation_alias="RECEIPTFLOW_REDIS_AUDITOR_USER",
        description="Redis user of the auditor role",
    )
    auditor_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_REDIS_AUDITOR_PASSWORD",
        description="password of the auditor role (receiptflow audit: reads and trims the audit streams)",
    )


class WarehouseSettings(SettingsGroup):
    """The warehouse the sink writes and the SQL commands read."""

    url: str | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_WAREHOUSE_URL",
        description="duckdb:///path/file.duckdb (default: under the data dir) or postgresql://user@host:port/db",
    )
    password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_WAREHOUSE_PASSWORD",
        description="password for a PostgreSQL warehouse",
    )
    # The workers' logins that `warehouse setup` (run as the owner) creates; each worker then connects
    # with its own login in RECEIPTFLOW_WAREHOUSE_URL and its password in RECEIPTFLOW_WAREHOUSE_PASSWORD.
    sink_user: str = Field(
        default="rf_sink",
        validation_alias="RECEIPTFLOW_WAREHOUSE_SINK_USER",
        description="PostgreSQL login of the warehouse sink (a member of receiptflow_sink), made by warehouse setup",
    )
    sink_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_WAREHOUSE_SINK_PASSWORD",
        description="warehouse setup: the sink login's password (the sink is given it as "
        "RECEIPTFLOW_WAREHOUSE_PASSWORD)",
    )
    support_user: str = Field(
        default="rf_support",
        validation_alias="RECEIPTFLOW_WAREHOUSE_SUPPORT_USER",
        description="PostgreSQL login of export and erase (a member of receiptflow_support), made by warehouse setup",
    )
    support_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_WAREHOUSE_SUPPORT_PASSWORD",
        description="warehouse setup: the support login's password",
    )


class WebSettings(SettingsGroup):
    """The web page (``web``): its signing key, its address, its sign-in links and its sessions."""

    secret_key: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_WEB_SECRET_KEY",
        description="key that signs the web page's sign-in links and session cookies; required in production, "
        "generated per install (data_dir/secrets) on the embedded stack",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8080",
        validation_alias="RECEIPTFLOW_WEB_BASE_URL",
        description="the address people open the web page at (sign-in links)",
    )
    link_minutes: int = Field(
        default=15,
        ge=1,
        le=24 * 60,
        validation_alias="RECEIPTFLOW_WEB_LINK_MINUTES",
        description="how long a sign-in link is valid",
    )
    session_idle_minutes: int = Field(
        default=30,
        ge=1,
        le=24 * 60,
        validation_alias="RECEIPTFLOW_WEB_SESSION_IDLE_MINUTES",
        description="a session not used for this long ends (its Redis record expires)",
    )
    session_hours: int = Field(
        default=8,
        ge=1,
        le=7 * 24,
        validation_alias="RECEIPTFLOW_WEB_SESSION_HOURS",
        description="a session ends this long after sign-in, however much it is used",
    )


class PrivacySettings(SettingsGroup):
    """The install's pseudonymisation keys, whether it is production, the granularity policy and the
    consent assumed for a card that never gave any."""

    erasure_salt: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_ERASURE_SALT",
        description="key of the hashes in the erased-cards record; required in production, "
        "generated per install (data_dir/secrets) on the embedded stack",
    )
    analytics_key: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_ANALYTICS_KEY",
        description="key of the basket pseudonyms on the anonymous analytics data; required in production, "
        "generated per install (data_dir/secrets) on the embedded stack",
    )
    marketing_key: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_MARKETING_KEY",
        description="key of the names of the marketing projections (the profile writer, support and the "
        "marketing reader hold it, never the erasure salt's holders alone); required in production, "
        "generated per install (data_dir/secrets) on the embedded stack",
    )
    operator: str | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_OPERATOR",
        description="the staff login of the person running commands that look at a card (export, profile "
        "--view full, web link), recorded in the audit of looks; --as overrides it",
    )
    deployment: Literal["auto", "embedded", "production"] = Field(
        default="auto",
        validation_alias="RECEIPTFLOW_DEPLOYMENT",
        description="production refuses built-in or generated secrets; auto: production when any "
        "bootstrap server is not on this machine",
    )
    policy_file: Path | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_POLICY_FILE",
        description="granularity policy (default: the shipped one)",
    )
    default_product_data_marketing: bool = Field(
        default=False,
        validation_alias="RECEIPTFLOW_DEFAULT_PRODUCT_DATA_MARKETING",
        description="consent assumed for a card with no consent record: product data for marketing",
    )
    default_electronic_marketing: bool = Field(
        default=False,
        validation_alias="RECEIPTFLOW_DEFAULT_ELECTRONIC_MARKETING",
        description="consent assumed for a card with no consent record: e-mail/SMS marketing",
    )
    consent_max_age_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        validation_alias="RECEIPTFLOW_CONSENT_MAX_AGE_DAYS",
        description="a consent change dated more than this many days before it was written is refused "
        "(dead-lettered as stale_consent_time)",
    )

    @property
    def consent_max_age(self) -> timedelta:
        return timedelta(days=self.consent_max_age_days)


class MetricsSettings(SettingsGroup):
    """The Prometheus exporters, the batch commands' metrics file and the endpoints ``status`` asks."""

    port: int = Field(
        default=9108,
        ge=0,
        le=65535,
        validation_alias="RECEIPTFLOW_METRICS_PORT",
        description="Prometheus exporter port (0: off)",
    )
    addr: str = Field(
        default="127.0.0.1",
        validation_alias="RECEIPTFLOW_METRICS_ADDR",
        description="address the exporter binds (0.0.0.0 for a Prometheus on another host)",
    )
    status_endpoints: str | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_STATUS_ENDPOINTS",
        description="the processes `status` asks for /readyz, as name=host:port,... "
        "(default: processor on the metrics port and sink on the next port, on this machine)",
    )
    textfile: Path | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_METRICS_TEXTFILE",
        description="batch commands (profiles rebuild, segments run) write their metrics here when they finish, "
        "in the Prometheus text format, for node_exporter's textfile collector",
    )


class LocalSettings(SettingsGroup):
    """This machine: the data and cache folders, and the JVM of the embedded broker."""

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        validate_default=True,
        validation_alias="RECEIPTFLOW_DATA_DIR",
        description="embedded broker log, Redis dump, DuckDB file; relative to the working directory, "
        "made absolute once when the settings are read",
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "receiptflow",
        validation_alias="RECEIPTFLOW_CACHE_DIR",
        description="downloaded Kafka jars (shared by every data dir)",
    )
    java_home: Path | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_JAVA_HOME",
        description="JDK for the embedded broker (default: java on PATH)",
    )
    kafka_controller_port: int | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_CONTROLLER_PORT",
        description="KRaft controller port of the embedded broker (default: broker port + 1)",
    )
    kafka_heap: str = Field(
        default="768m", validation_alias="RECEIPTFLOW_KAFKA_HEAP", description="-Xmx of the embedded broker"
    )
    kafka_auth: bool = Field(
        default=True,
        validation_alias="RECEIPTFLOW_KAFKA_AUTH",
        description="the embedded broker requires SASL/SCRAM logins and enforces ACLs (off: PLAINTEXT, no ACLs)",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once, here: every command then names and uses the same folder, whatever it does
        # with the working directory later, and a person sees which folder that is.
        return value.expanduser().resolve()
