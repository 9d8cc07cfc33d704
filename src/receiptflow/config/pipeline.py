"""Settings of the streaming side: the Kafka cluster, the router, the aggregator, the profile agent and the sink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from ..cells import DEFAULT_K
from .base import SettingsGroup

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


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
    admin_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_ADMIN_PASSWORD",
        description="SCRAM password of the Kafka admin principal (super user: topics, ACLs, the stack's checks)",
    )
    router_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_ROUTER_PASSWORD",
        description="SCRAM password of the Kafka principal of the router",
    )
    profiles_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_PROFILES_PASSWORD",
        description="SCRAM password of the Kafka principal of the profile agent",
    )
    aggregator_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_AGGREGATOR_PASSWORD",
        description="SCRAM password of the Kafka principal of the analytics aggregator",
    )
    sink_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_SINK_PASSWORD",
        description="SCRAM password of the Kafka principal of the warehouse sink",
    )
    registers_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_REGISTERS_PASSWORD",
        description="SCRAM password of the Kafka principal of the registers (checkouts)",
    )
    consent_writer_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_CONSENT_WRITER_PASSWORD",
        description="SCRAM password of the Kafka principal of the consent writers (the web page, the registers' app)",
    )
    support_password: SecretStr | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_KAFKA_SUPPORT_PASSWORD",
        description="SCRAM password of the Kafka principal of the data-protection jobs (export, erase)",
    )
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


class AggregateSettings(SettingsGroup):
    """The aggregator (``aggregate run``): when a window closes, the cells' threshold, its group and transactions."""

    k: int = Field(
        default=DEFAULT_K,
        ge=2,
        validation_alias="RECEIPTFLOW_ANALYTICS_K",
        description="baskets behind every published analytics cell at least (and behind any difference of cells)",
    )
    grace_seconds: int = Field(
        default=7200,
        ge=0,
        validation_alias="RECEIPTFLOW_ANALYTICS_GRACE_SECONDS",
        description="how long after the end of a local day its window stays open for baskets that arrive late: "
        "it closes once its partition's newest basket hour (stream time) is that far past the end",
    )
    idle_close_seconds: int = Field(
        default=300,
        ge=1,
        validation_alias="RECEIPTFLOW_ANALYTICS_IDLE_CLOSE_SECONDS",
        description="a partition that got no basket for this long closes its windows whose end plus the grace "
        "has passed on the wall clock (a quiet night or the last day of a backlog)",
    )
    id: str | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_ANALYTICS_ID",
        description="the aggregator's consumer group and transactional-id prefix (default: <RECEIPTFLOW_PROCESSOR_ID>"
        "-aggregator, beside the router's and the profile agent's)",
    )
    batch_max: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        validation_alias="RECEIPTFLOW_ANALYTICS_BATCH_MAX",
        description="basket records the aggregator reads per turn (and per transaction) at most",
    )
    instance: str | None = Field(
        default=None,
        validation_alias="RECEIPTFLOW_ANALYTICS_INSTANCE",
        description="this aggregator's stable name within its group (transactional.id suffix and static "
        "membership); unique per concurrently running aggregator, the same across its restarts (default: "
        "RECEIPTFLOW_PROCESSOR_INSTANCE, so each `process` worker's aggregator has its own)",
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
