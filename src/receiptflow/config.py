"""Configuration: the one place that reads the environment.

Every setting comes from a ``RECEIPTFLOW_``-prefixed environment variable (or a ``.env`` file in the
working directory); every other module receives a :class:`Settings` object and never looks at
``os.environ`` itself. Secrets are ``SecretStr`` and are never printed: :meth:`Settings.describe`
renders the endpoints a long-running command uses with credentials masked.

The settings are grouped by the part of the system that uses them, one frozen model per group:
``settings.kafka`` (cluster, security, topics, schema registry), ``settings.router``,
``settings.profiles``, ``settings.sink``, ``settings.redis``, ``settings.warehouse``, ``settings.web``,
``settings.privacy`` (install keys, granularity policy, consent defaults), ``settings.metrics`` and
``settings.local`` (this machine's folders and the embedded broker). The variables keep their flat
names: each field names its variable as its ``validation_alias`` (``KafkaSettings.bootstrap_servers``
is ``RECEIPTFLOW_BOOTSTRAP_SERVERS``), and :data:`VARIABLES` lists every one with where it lands.

Explicit values are given per group, ``Settings(kafka={"bootstrap_servers": ...})`` (a mapping or a
group object), or flat by the variable's name without the prefix in lower case,
``Settings(bootstrap_servers=...)``, which is how overrides keyed like the environment are passed
(``load_settings(**overrides)``, deployment bundles, test factories). Either way the group still reads
the rest of its variables from the environment and ``.env``; explicit values win, and a group's mapping
wins over a flat name for the same setting. :meth:`Settings.model_copy` takes ``update`` the same ways.

Kafka security is a pass-through to librdkafka property names (``security.protocol``,
``sasl.mechanism``, ``ssl.ca.location`` ...), so a real cluster's settings can be copied over as
they are; :meth:`Settings.kafka_config` builds the dict for confluent-kafka clients and
:mod:`receiptflow.processors.profiles.agent` translates the same settings for faust (aiokafka).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.sources import ENV_FILE_SENTINEL, DotenvType

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]

ENV_PREFIX = "RECEIPTFLOW_"
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


class SettingsGroup(BaseSettings):
    """The settings of one component; each field reads the variable its ``validation_alias`` names.

    A group reads the environment and ``.env`` by itself when it is made (:class:`Settings` makes each
    one); explicit values are keyword arguments by field name and win over both.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    def __init__(self, _env_file: DotenvType | None = ENV_FILE_SENTINEL, **values: Any) -> None:
        fields = type(self).model_fields
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting {', '.join(unknown)}")
        # The fields are populated by their variable's name only (never by the bare field name, which
        # would make the environment source read RECEIPTFLOW_-less variables such as PORT or URL).
        super().__init__(_env_file=_env_file, **{variable_name(fields[k]): v for k, v in values.items()})


def variable_name(info: FieldInfo) -> str:
    """The environment variable a group field reads (its ``validation_alias``)."""
    if not isinstance(info.validation_alias, str) or not info.validation_alias.startswith(ENV_PREFIX):
        raise TypeError(f"a settings field needs its {ENV_PREFIX} variable as validation_alias: {info!r}")
    return info.validation_alias


class KafkaSettings(SettingsGroup):
    """The Kafka cluster: where it is, how to log in, the topics this project makes, the schema registry."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias="RECEIPTFLOW_BOOTSTRAP_SERVERS",
        description="Kafka bootstrap.servers",
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", validation_alias="RECEIPTFLOW_KAFKA_SECURITY_PROTOCOL"
    )
    sasl_mechanism: str | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_SASL_MECHANISM",
        description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
    )
    sasl_username: str | None = Field(default=None, validation_alias="RECEIPTFLOW_KAFKA_SASL_USERNAME")
    sasl_password: SecretStr | None = Field(default=None, validation_alias="RECEIPTFLOW_KAFKA_SASL_PASSWORD")
    ssl_ca_location: str | None = Field(default=None, validation_alias="RECEIPTFLOW_KAFKA_SSL_CA_LOCATION")
    ssl_certificate_location: str | None = Field(
        default=None, validation_alias="RECEIPTFLOW_KAFKA_SSL_CERTIFICATE_LOCATION"
    )
    ssl_key_location: str | None = Field(default=None, validation_alias="RECEIPTFLOW_KAFKA_SSL_KEY_LOCATION")
    ssl_key_password: SecretStr | None = Field(default=None, validation_alias="RECEIPTFLOW_KAFKA_SSL_KEY_PASSWORD")
    extra: dict[str, str] = Field(
        default_factory=dict,
        validation_alias="RECEIPTFLOW_KAFKA_EXTRA",
        description="extra librdkafka properties as a JSON object, passed to every confluent-kafka client",
    )
    topic_prefix: str = Field(
        default="",
        validation_alias="RECEIPTFLOW_TOPIC_PREFIX",
        description="prefix for every topic name (one cluster, many envs)",
    )
    topic_partitions: int = Field(
        default=6,
        ge=1,
        validation_alias="RECEIPTFLOW_TOPIC_PARTITIONS",
        description="partitions for topics that this project creates",
    )
    topic_replication_factor: int = Field(
        default=1,
        ge=1,
        validation_alias="RECEIPTFLOW_TOPIC_REPLICATION_FACTOR",
        description="replication factor when creating topics",
    )
    schema_registry_url: str | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_SCHEMA_REGISTRY_URL",
        description="Confluent-compatible schema registry; unset: ids from schemas/ in the repo",
    )

    @field_validator("extra", mode="before")
    @classmethod
    def _parse_extra(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value


class RouterSettings(SettingsGroup):
    """The router (``process --role router``): its group, transactions, ordering and deduplication."""

    id: str = Field(
        default="receiptflow-processor",
        validation_alias="RECEIPTFLOW_PROCESSOR_ID",
        description="the router's consumer group and transactional-id prefix; the profile agent's group is "
        "<id>-profiles",
    )
    instance: str = Field(
        default="0",
        validation_alias="RECEIPTFLOW_PROCESSOR_INSTANCE",
        description="this worker's stable name within the processor group (transactional.id suffix); "
        "unique per concurrently running worker, the same across its restarts",
    )
    batch_max: int = Field(
        default=2000,
        ge=1,
        validation_alias="RECEIPTFLOW_PROCESSOR_BATCH_MAX",
        description="records per processor transaction at most",
    )
    batch_wait_ms: int = Field(
        default=50,
        ge=1,
        le=10_000,
        validation_alias="RECEIPTFLOW_PROCESSOR_BATCH_WAIT_MS",
        description="how long the router waits to fill a transaction before committing what it has: "
        "records become visible downstream at the commit, so this bounds the latency it adds under light "
        "load; longer means fewer, larger transactions (a backlog fills them at once either way)",
    )
    order_wait_ms: int = Field(
        default=2000,
        ge=0,
        le=600_000,
        validation_alias="RECEIPTFLOW_PROCESSOR_ORDER_WAIT_MS",
        description="how long the router holds a partition's records for its other input (consents or "
        "checkouts) that is not read to its end, to apply both in the order they were written",
    )
    dedup_days: int = Field(
        default=14,
        ge=1,
        validation_alias="RECEIPTFLOW_PROCESSOR_DEDUP_DAYS",
        description="how long (event time) a receipt id is remembered to drop duplicates",
    )
    fast_path: bool = Field(
        default=True,
        validation_alias="RECEIPTFLOW_FAST_PATH",
        description="route checkouts with the compiled fast path when it is built (off: the Python core only; "
        "both write the same bytes)",
    )


class ProfilesSettings(SettingsGroup):
    """The profile agent and the profile jobs: batches, deduplication and their data files."""

    dedup_days: int = Field(
        default=35,
        ge=1,
        validation_alias="RECEIPTFLOW_PROFILE_DEDUP_DAYS",
        description="how long (event time, behind a card's newest receipt) the profile store remembers a receipt id; "
        "older receipts are refused as too late",
    )
    batch_max: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        validation_alias="RECEIPTFLOW_PROFILE_BATCH_MAX",
        description="purchases per profile-store batch at most",
    )
    fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        validation_alias="RECEIPTFLOW_PROFILE_FETCH_WAIT_MS",
        description="how long the profile agent's fetch waits on the broker for new records: the agents share one "
        "consumer, and while a fetch for the idle consents topic waits, no purchases are fetched from that broker",
    )
    points_file: Path | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_POINTS_FILE",
        description="points per euro per chain (default: the shipped one)",
    )
    households_file: Path | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_HOUSEHOLDS_FILE",
        description="CSV card_id,household_id: household membership",
    )
    segments_file: Path | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_SEGMENTS_FILE",
        description="segment model of `segments run`: archetypes, class bounds (default: the shipped one)",
    )


class SinkSettings(SettingsGroup):
    """The warehouse sink (``sink run``): its batches and its name in the consumer group."""

    batch_max: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        validation_alias="RECEIPTFLOW_SINK_BATCH_MAX",
        description="records per warehouse transaction at most",
    )
    batch_seconds: float = Field(
        default=0.25,
        gt=0,
        le=60,
        validation_alias="RECEIPTFLOW_SINK_BATCH_SECONDS",
        description="how long the sink waits to fill a batch before writing what it has: the latency it adds to "
        "the warehouse under light load; longer means fewer, larger warehouse transactions",
    )
    instance: str | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_SINK_INSTANCE",
        description="this sink's stable name in its consumer group (Kafka static membership): a restarted sink "
        "gets its partitions back at once instead of after the session timeout; unique per running sink",
    )


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
        description="password of the marketing reader role (profile --view marketing|customer)",
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


class WebSettings(SettingsGroup):
    """The web page (``web``): its signing key, its address and its sign-in links."""

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

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once, here: every command then names and uses the same folder, whatever it does
        # with the working directory later, and a person sees which folder that is.
        return value.expanduser().resolve()


GROUPS: dict[str, type[SettingsGroup]] = {
    "kafka": KafkaSettings,
    "router": RouterSettings,
    "profiles": ProfilesSettings,
    "sink": SinkSettings,
    "redis": RedisSettings,
    "warehouse": WarehouseSettings,
    "web": WebSettings,
    "privacy": PrivacySettings,
    "metrics": MetricsSettings,
    "local": LocalSettings,
}


@dataclass(frozen=True)
class Variable:
    """One environment variable and the setting it fills."""

    name: str  # RECEIPTFLOW_BOOTSTRAP_SERVERS
    group: str  # kafka
    field: str  # bootstrap_servers
    info: FieldInfo

    @property
    def key(self) -> str:
        """The flat name :class:`Settings` also takes it by: the variable's, without the prefix, in lower case."""
        return self.name.removeprefix(ENV_PREFIX).lower()

    @property
    def path(self) -> str:
        """Where it is read, ``group.field`` (``settings.kafka.bootstrap_servers``)."""
        return f"{self.group}.{self.field}"


VARIABLES: dict[str, Variable] = {
    variable_name(info): Variable(variable_name(info), group, field, info)
    for group, cls in GROUPS.items()
    for field, info in cls.model_fields.items()
}
"""Every variable the settings read, by name: the configuration table of the README."""

_BY_KEY: dict[str, Variable] = {v.key: v for v in VARIABLES.values()}


class Settings(BaseModel):
    """All receiptflow settings, by group; see the configuration table in the README."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    profiles: ProfilesSettings = Field(default_factory=ProfilesSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)

    def __init__(self, _env_file: DotenvType | None = ENV_FILE_SENTINEL, **values: Any) -> None:
        """Read every group from the environment and ``_env_file`` (default ``.env``), with ``values`` over them.

        ``values`` are groups (``kafka={"bootstrap_servers": ...}`` or a :class:`KafkaSettings`) or flat
        names (``bootstrap_servers=...``); a ValidationError names the variables, as the environment does.
        """
        groups: dict[str, SettingsGroup] = {}
        errors: list[InitErrorDetails] = []
        for name, given in _by_group(values).items():
            if isinstance(given, SettingsGroup):
                groups[name] = given
                continue
            try:
                groups[name] = GROUPS[name](_env_file=_env_file, **given)
            except ValidationError as exc:
                errors.extend(_as_flat_errors(exc))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        super().__init__(**groups)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied: groups (a mapping of the fields to change, or a group) or flat names.

        Not validated, as pydantic's ``model_copy`` never is.
        """
        changes: dict[str, SettingsGroup] = {}
        for name, given in _by_group(update or {}, all_groups=False).items():
            current: SettingsGroup = getattr(self, name)
            changes[name] = given if isinstance(given, SettingsGroup) else current.model_copy(update=given)
        return super().model_copy(update=changes, deep=deep)

    # ------------------------------------------------------------------------------------------
    @property
    def data_dir_origin(self) -> str:
        """Where the data folder comes from, for messages: the setting, or the default it fell back to."""
        if "data_dir" in self.local.model_fields_set:
            return "set by RECEIPTFLOW_DATA_DIR"
        return f"the default, {DEFAULT_DATA_DIR} in the working directory"

    @property
    def resolved_warehouse_url(self) -> str:
        """The warehouse URL, defaulting to a DuckDB file under the data dir."""
        if self.warehouse.url:
            return self.warehouse.url
        return f"duckdb:///{(self.local.data_dir / 'warehouse.duckdb').resolve()}"

    @property
    def is_production(self) -> bool:
        """Whether this is a production install (secrets must be given, never generated)."""
        if self.privacy.deployment != "auto":
            return self.privacy.deployment == "production"
        hosts = [server.strip().rpartition(":")[0].strip("[]") for server in self.kafka.bootstrap_servers.split(",")]
        return any(host not in ("localhost", "::1") and not host.startswith("127.") for host in hosts if host)

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties for a confluent-kafka client, security included."""
        kafka = self.kafka
        conf: dict[str, Any] = {
            "bootstrap.servers": kafka.bootstrap_servers,
            "security.protocol": kafka.security_protocol,
        }
        if kafka.sasl_mechanism:
            conf["sasl.mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_username:
            conf["sasl.username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            conf["sasl.password"] = kafka.sasl_password.get_secret_value()
        if kafka.ssl_ca_location:
            conf["ssl.ca.location"] = kafka.ssl_ca_location
        if kafka.ssl_certificate_location:
            conf["ssl.certificate.location"] = kafka.ssl_certificate_location
        if kafka.ssl_key_location:
            conf["ssl.key.location"] = kafka.ssl_key_location
        if kafka.ssl_key_password is not None:
            conf["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
        conf.update(kafka.extra)
        conf.update(overrides)
        # librdkafka's own log lines go through Python logging (quiet unless asked for with -v),
        # never raw to stderr: a broker that is down is reported once, by the command, in one line.
        conf.setdefault("logger", KAFKA_LOGGER)
        return conf

    def redis_connection_url(self) -> str:
        """The Redis URL with the Redis password applied (for clients; never print it)."""
        if self.redis.password is None:
            return self.redis.url
        return _with_password(self.redis.url, self.redis.password)

    def warehouse_connection_url(self) -> str:
        """The warehouse URL with the warehouse password applied (for clients; never print it)."""
        url = self.resolved_warehouse_url
        if self.warehouse.password is None or not url.startswith("postgres"):
            return url
        return _with_password(url, self.warehouse.password)

    def describe(self) -> dict[str, str]:
        """What a long-running command prints about where it connects: endpoints only, no secret."""
        security: str = self.kafka.security_protocol
        if self.kafka.sasl_mechanism:
            security += f"/{self.kafka.sasl_mechanism}"
        return {
            "kafka": f"{self.kafka.bootstrap_servers} ({security})",
            "redis": redact_url(self.redis.url),
            "warehouse": redact_url(self.resolved_warehouse_url),
            "data_dir": str(self.local.data_dir),
        }


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, with explicit overrides (used by the CLI and tests)."""
    return Settings(**overrides)


def _by_group(values: Mapping[str, Any], *, all_groups: bool = True) -> dict[str, SettingsGroup | dict[str, Any]]:
    """``values`` (groups or flat names) as each group's object or its explicit fields (every group, or
    only those given); a group's mapping wins over a flat name for the same field."""
    flat: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
    nested: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
    objects: dict[str, SettingsGroup] = {}
    for key, value in values.items():
        if key in GROUPS:
            if isinstance(value, GROUPS[key]):
                objects[key] = value
            elif isinstance(value, Mapping):
                nested[key].update(value)
            else:
                raise TypeError(f"settings group {key!r} takes a mapping or a {GROUPS[key].__name__}, not {value!r}")
        elif key in _BY_KEY:
            variable = _BY_KEY[key]
            flat[variable.group][variable.field] = value
        else:
            raise TypeError(f"no setting {key!r} (the groups are {', '.join(GROUPS)})")
    grouped: dict[str, SettingsGroup | dict[str, Any]] = {}
    for name in GROUPS:
        explicit = {**flat[name], **nested[name]}
        if name in objects:
            if explicit:
                raise TypeError(f"settings group {name!r} given as an object and as {', '.join(sorted(explicit))}")
            grouped[name] = objects[name]
        elif explicit or all_groups:
            grouped[name] = explicit
    return grouped


def _as_flat_errors(exc: ValidationError) -> list[InitErrorDetails]:
    """A group's errors located by the flat name of the variable (``metrics_port``), as they always were."""
    found: list[InitErrorDetails] = []
    for error in exc.errors():
        head, *rest = error["loc"] or ("",)
        key = str(head).removeprefix(ENV_PREFIX).lower() if str(head).startswith(ENV_PREFIX) else head
        detail = InitErrorDetails(type=error["type"], loc=(key, *rest), input=error["input"])
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        found.append(detail)
    return found


def _with_password(url: str, password: SecretStr) -> str:
    """``url`` with ``password`` in its user info, percent-encoded (a password may hold ``@ / : #``)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0].partition(":")[0]  # as written, still percent-encoded
    host = parts.netloc.rpartition("@")[2] or "127.0.0.1"  # keeps the port and IPv6 brackets
    netloc = f"{user}:{quote(password.get_secret_value(), safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
