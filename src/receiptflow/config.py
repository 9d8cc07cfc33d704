"""Configuration: the one place that reads the environment.

Every setting comes from a ``RECEIPTFLOW_``-prefixed environment variable (or a ``.env`` file in the
working directory); every other module receives a :class:`Settings` object and never looks at
``os.environ`` itself. Secrets are ``SecretStr`` and are never printed: :meth:`Settings.describe`
renders the endpoints a long-running command uses with credentials masked.

Kafka security is a pass-through to librdkafka property names (``security.protocol``,
``sasl.mechanism``, ``ssl.ca.location`` ...), so a real cluster's settings can be copied over as
they are; :meth:`Settings.kafka_config` builds the dict for confluent-kafka clients and
:mod:`receiptflow.processors.profiles.agent` translates the same settings for faust (aiokafka).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]

DEFAULT_DATA_DIR = Path(".receiptflow")
KAFKA_LOGGER = logging.getLogger("receiptflow.librdkafka")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (user names are kept, they help debugging)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Settings(BaseSettings):
    """All receiptflow settings; see the configuration table in the README."""

    model_config = SettingsConfigDict(
        env_prefix="RECEIPTFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka -------------------------------------------------------------------------------
    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap.servers")
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = Field(default=None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_extra: dict[str, str] = Field(
        default_factory=dict,
        description="extra librdkafka properties as a JSON object, passed to every confluent-kafka client",
    )
    processor_id: str = Field(
        default="receiptflow-processor", description="faust app id = consumer group of the stream processor"
    )
    processor_instance: str = Field(
        default="0",
        description="this worker's stable name within the processor group (transactional.id suffix); "
        "unique per concurrently running worker, the same across its restarts",
    )
    processor_batch_max: int = Field(default=2000, ge=1, description="records per processor transaction at most")
    processor_batch_wait_ms: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="how long the router waits to fill a transaction before committing what it has: "
        "records become visible downstream at the commit, so this bounds the latency it adds under light "
        "load; longer means fewer, larger transactions (a backlog fills them at once either way)",
    )
    sink_batch_max: int = Field(default=1000, ge=1, le=100_000, description="records per warehouse transaction at most")
    sink_batch_seconds: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="how long the sink waits to fill a batch before writing what it has: the latency it adds to "
        "the warehouse under light load; longer means fewer, larger warehouse transactions",
    )
    sink_instance: str | None = Field(
        default=None,
        description="this sink's stable name in its consumer group (Kafka static membership): a restarted sink "
        "gets its partitions back at once instead of after the session timeout; unique per running sink",
    )
    processor_order_wait_ms: int = Field(
        default=2000,
        ge=0,
        le=600_000,
        description="how long the router holds a partition's records for its other input (consents or "
        "checkouts) that is not read to its end, to apply both in the order they were written",
    )
    fast_path: bool = Field(
        default=True,
        description="route checkouts with the compiled fast path when it is built (off: the Python core only; "
        "both write the same bytes)",
    )
    processor_dedup_days: int = Field(
        default=14, ge=1, description="how long (event time) a receipt id is remembered to drop duplicates"
    )
    default_product_data_marketing: bool = Field(
        default=False, description="consent assumed for a card with no consent record: product data for marketing"
    )
    default_electronic_marketing: bool = Field(
        default=False, description="consent assumed for a card with no consent record: e-mail/SMS marketing"
    )
    topic_prefix: str = Field(default="", description="prefix for every topic name (one cluster, many envs)")
    topic_partitions: int = Field(default=6, ge=1, description="partitions for topics that this project creates")
    topic_replication_factor: int = Field(default=1, ge=1, description="replication factor when creating topics")

    # --- Stores ------------------------------------------------------------------------------
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="profile store")
    redis_cluster: bool = Field(
        default=False,
        description="redis_url is one node of a Redis Cluster: the profile store uses a cluster client "
        "(each card's keys share one hash slot)",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="overrides a password in redis_url; that login serves every role without a password of its own",
    )
    redis_acl_file: Path | None = Field(
        default=None,
        description="ACL file (users and password hashes, deploy/redis) the embedded redis-server loads "
        "instead of the one it renders with the generated role passwords",
    )
    # One login per role (receiptflow.redis_auth); the embedded stack generates the passwords.
    redis_writer_user: str = Field(default="profile-writer", description="Redis user of the profile writer role")
    redis_writer_password: SecretStr | None = Field(
        default=None, description="password of the profile writer role (agent, rebuild, segments)"
    )
    redis_marketing_user: str = Field(default="marketing-reader", description="Redis user of the marketing role")
    redis_marketing_password: SecretStr | None = Field(
        default=None, description="password of the marketing reader role (profile --view marketing|customer)"
    )
    redis_support_user: str = Field(default="support", description="Redis user of the support/DPO role")
    redis_support_password: SecretStr | None = Field(
        default=None, description="password of the support/DPO role (export, erase, profile --view full)"
    )
    warehouse_url: str | None = Field(
        default=None,
        description="duckdb:///path/file.duckdb (default: under data_dir) or postgresql://user@host:port/db",
    )
    warehouse_password: SecretStr | None = Field(default=None, description="password for a PostgreSQL warehouse")

    # --- Profiles ----------------------------------------------------------------------------
    profile_dedup_days: int = Field(
        default=35,
        ge=1,
        description="how long (event time, behind a card's newest receipt) the profile store remembers a receipt id; "
        "older receipts are refused as too late",
    )
    profile_batch_max: int = Field(
        default=1000, ge=1, le=100_000, description="purchases per profile-store batch at most"
    )
    profile_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="how long the profile agent's fetch waits on the broker for new records: the agents share one "
        "consumer, and while a fetch for the idle consents topic waits, no purchases are fetched from that broker",
    )
    points_file: Path | None = Field(default=None, description="points per euro per chain (default: the shipped one)")
    households_file: Path | None = Field(default=None, description="CSV card_id,household_id: household membership")
    segments_file: Path | None = Field(
        default=None, description="segment model of `segments run`: archetypes, class bounds (default: the shipped one)"
    )
    erasure_salt: SecretStr | None = Field(
        default=None,
        description="key of the hashes in the erased-cards record; required in production, "
        "generated per install (data_dir/secrets) on the embedded stack",
    )
    analytics_key: SecretStr | None = Field(
        default=None,
        description="key of the basket pseudonyms on the anonymous analytics data; required in production, "
        "generated per install (data_dir/secrets) on the embedded stack",
    )
    deployment: Literal["auto", "embedded", "production"] = Field(
        default="auto",
        description="production refuses built-in or generated secrets; auto: production when any "
        "bootstrap server is not on this machine",
    )

    # --- Local files and ports -----------------------------------------------------------------
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        validate_default=True,
        description="embedded broker log, Redis dump, DuckDB file; relative to the working directory, "
        "made absolute once when the settings are read",
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "receiptflow",
        description="downloaded Kafka jars (shared by every data dir)",
    )
    policy_file: Path | None = Field(default=None, description="granularity policy (default: the shipped one)")
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="Prometheus exporter port (0: off)")
    metrics_addr: str = Field(
        default="127.0.0.1", description="address the exporter binds (0.0.0.0 for a Prometheus on another host)"
    )
    status_endpoints: str | None = Field(
        default=None,
        description="the processes `status` asks for /readyz, as name=host:port,... "
        "(default: processor on metrics_port and sink on the next port, on this machine)",
    )
    metrics_textfile: Path | None = Field(
        default=None,
        description="batch commands (profiles rebuild, segments run) write their metrics here when they finish, "
        "in the Prometheus text format, for node_exporter's textfile collector",
    )
    web_secret_key: SecretStr | None = Field(
        default=None,
        description="key that signs the web page's sign-in links and session cookies; required in production, "
        "generated per install (data_dir/secrets) on the embedded stack",
    )
    web_base_url: str = Field(
        default="http://127.0.0.1:8080", description="the address people open the web page at (sign-in links)"
    )
    web_link_minutes: int = Field(default=15, ge=1, le=24 * 60, description="how long a sign-in link is valid")
    schema_registry_url: str | None = Field(
        default=None, description="Confluent-compatible schema registry; unset: ids from schemas/ in the repo"
    )
    java_home: Path | None = Field(default=None, description="JDK for the embedded broker (default: java on PATH)")
    kafka_controller_port: int | None = Field(
        default=None, description="KRaft controller port of the embedded broker (default: broker port + 1)"
    )
    kafka_heap: str = Field(default="768m", description="-Xmx of the embedded broker")

    @field_validator("kafka_extra", mode="before")
    @classmethod
    def _parse_extra(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once, here: every command then names and uses the same folder, whatever it does
        # with the working directory later, and a person sees which folder that is.
        return value.expanduser().resolve()

    # ------------------------------------------------------------------------------------------
    @property
    def data_dir_origin(self) -> str:
        """Where the data folder comes from, for messages: the setting, or the default it fell back to."""
        if "data_dir" in self.model_fields_set:
            return "set by RECEIPTFLOW_DATA_DIR"
        return f"the default, {DEFAULT_DATA_DIR} in the working directory"

    @property
    def resolved_warehouse_url(self) -> str:
        """The warehouse URL, defaulting to a DuckDB file under ``data_dir``."""
        if self.warehouse_url:
            return self.warehouse_url
        return f"duckdb:///{(self.data_dir / 'warehouse.duckdb').resolve()}"

    @property
    def is_production(self) -> bool:
        """Whether this is a production install (secrets must be given, never generated)."""
        if self.deployment != "auto":
            return self.deployment == "production"
        hosts = [server.strip().rpartition(":")[0].strip("[]") for server in self.bootstrap_servers.split(",")]
        return any(host not in ("localhost", "::1") and not host.startswith("127.") for host in hosts if host)

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties for a confluent-kafka client, security included."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            conf["ssl.ca.location"] = self.kafka_ssl_ca_location
        if self.kafka_ssl_certificate_location:
            conf["ssl.certificate.location"] = self.kafka_ssl_certificate_location
        if self.kafka_ssl_key_location:
            conf["ssl.key.location"] = self.kafka_ssl_key_location
        if self.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        conf.update(self.kafka_extra)
        conf.update(overrides)
        # librdkafka's own log lines go through Python logging (quiet unless asked for with -v),
        # never raw to stderr: a broker that is down is reported once, by the command, in one line.
        conf.setdefault("logger", KAFKA_LOGGER)
        return conf

    def redis_connection_url(self) -> str:
        """The Redis URL with ``redis_password`` applied (for clients; never print it)."""
        if self.redis_password is None:
            return self.redis_url
        return _with_password(self.redis_url, self.redis_password)

    def warehouse_connection_url(self) -> str:
        """The warehouse URL with ``warehouse_password`` applied (for clients; never print it)."""
        url = self.resolved_warehouse_url
        if self.warehouse_password is None or not url.startswith("postgres"):
            return url
        return _with_password(url, self.warehouse_password)

    def describe(self) -> dict[str, str]:
        """What a long-running command prints about where it connects: endpoints only, no secret."""
        security: str = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            security += f"/{self.kafka_sasl_mechanism}"
        return {
            "kafka": f"{self.bootstrap_servers} ({security})",
            "redis": redact_url(self.redis_url),
            "warehouse": redact_url(self.resolved_warehouse_url),
            "data_dir": str(self.data_dir),
        }


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, with explicit overrides (used by the CLI and tests)."""
    return Settings(**overrides)


def _with_password(url: str, password: SecretStr) -> str:
    """``url`` with ``password`` in its user info, percent-encoded (a password may hold ``@ / : #``)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0].partition(":")[0]  # as written, still percent-encoded
    host = parts.netloc.rpartition("@")[2] or "127.0.0.1"  # keeps the port and IPv6 brackets
    netloc = f"{user}:{quote(password.get_secret_value(), safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
