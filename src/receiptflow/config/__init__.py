"""Configuration: the one place that reads the environment.

Every setting comes from a ``RECEIPTFLOW_``-prefixed environment variable (or a ``.env`` file in the
working directory); every other module receives a :class:`Settings` object and never looks at
``os.environ`` itself. Secrets are ``SecretStr`` and are never printed: :meth:`Settings.describe`
renders the endpoints a long-running command uses with credentials masked.

The settings are grouped by the part of the system that uses them, one frozen model per group:
``settings.kafka`` (cluster, security, topics, schema registry), ``settings.router``,
``settings.aggregate`` (the analytics aggregator), ``settings.profiles``, ``settings.sink``,
``settings.redis``, ``settings.warehouse``, ``settings.web``, ``settings.privacy`` (install keys,
granularity policy, consent defaults), ``settings.metrics`` and ``settings.local`` (this machine's
folders and the embedded broker). The variables keep their flat names: each field names its variable
as its ``validation_alias`` (``KafkaSettings.bootstrap_servers`` is ``RECEIPTFLOW_BOOTSTRAP_SERVERS``),
and :data:`VARIABLES` lists every one with where it lands.

Explicit values are given per group, ``Settings(kafka={"bootstrap_servers": ...})`` (a mapping or a
group object), or flat by the variable's name without the prefix in lower case,
``Settings(bootstrap_servers=...)``, which is how overrides keyed like the environment are passed
(``load_settings(**overrides)``, deployment bundles, test factories). Either way the group still reads
the rest of its variables from the environment and ``.env``; explicit values win, and a group's mapping
wins over a flat name for the same setting. :meth:`Settings.model_copy` takes ``update`` the same ways.

The groups are defined beside this module: :mod:`.base` (how a group reads its variables),
:mod:`.pipeline` (Kafka, router, aggregator, profiles, sink) and :mod:`.stores` (Redis, warehouse, web,
privacy, metrics, local).

Kafka security is a pass-through to librdkafka property names (``security.protocol``,
``sasl.mechanism``, ``ssl.ca.location`` ...), so a real cluster's settings can be copied over as
they are; :meth:`Settings.kafka_config` builds the dict for confluent-kafka clients and
:mod:`receiptflow.processors.profiles.agent` translates the same settings for faust (aiokafka).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails
from pydantic_settings.sources import ENV_FILE_SENTINEL, DotenvType

from ..errors import ConfigError
from ..secret_strength import secret_problem
from .base import DEFAULT_DATA_DIR, ENV_PREFIX, KAFKA_LOGGER, SettingsGroup, redact_url, variable_name
from .pipeline import (
    AggregateSettings,
    KafkaSettings,
    ProfilesSettings,
    RouterSettings,
    SecurityProtocol,
    SinkSettings,
)
from .stores import LocalSettings, MetricsSettings, PrivacySettings, RedisSettings, WarehouseSettings, WebSettings

__all__ = [
    "DEFAULT_DATA_DIR",
    "ENV_PREFIX",
    "GROUPS",
    "KAFKA_LOGGER",
    "VARIABLES",
    "AggregateSettings",
    "KafkaSettings",
    "LocalSettings",
    "MetricsSettings",
    "PrivacySettings",
    "ProfilesSettings",
    "RedisSettings",
    "RouterSettings",
    "SecurityProtocol",
    "Settings",
    "SettingsGroup",
    "SinkSettings",
    "Variable",
    "WarehouseSettings",
    "WebSettings",
    "load_settings",
    "redact_url",
    "variable_name",
]


GROUPS: dict[str, type[SettingsGroup]] = {
    "kafka": KafkaSettings,
    "router": RouterSettings,
    "aggregate": AggregateSettings,
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
    aggregate: AggregateSettings = Field(default_factory=AggregateSettings)
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
        if self.is_production:  # a placeholder of the bundles, or a guessable one, is refused
            problem = secret_problem("RECEIPTFLOW_WAREHOUSE_PASSWORD", self.warehouse.password.get_secret_value())
            if problem is not None:
                raise ConfigError(problem)
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
