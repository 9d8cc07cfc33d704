"""Topic catalogue: every Kafka topic of the project, its key, schema and configuration, in one place.

``receiptflow topics create`` provisions these idempotently against any Kafka cluster: topics that
exist are left alone (their partition count is reported if it differs), missing ones are created.

Keys: checkouts and every customer-linked output are keyed by loyalty card id, so one customer's
receipts stay in order on one partition and the consent table (keyed by card as well) is
co-partitioned with purchases. Anonymous receipts are keyed by store id. The anonymous baskets on
their way to the aggregator are keyed by chain, so one chain's local day (a window) is on one
partition; the published analytics cells and the aggregator's close markers by window id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # the package does not re-export it for mypy
from confluent_kafka.cimpl import NewTopic

from .config import Settings
from .errors import BrokerError

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    subject: str
    key: str
    description: str
    config: dict[str, str] = field(default_factory=dict)
    partitions: int | None = None  # None: the cluster-wide setting (Settings.kafka.topic_partitions)


# Logical names; the real topic name is Settings.kafka.topic_prefix + name (see TopicNames).
CHECKOUTS = "checkouts"
CONSENTS = "consents"
PURCHASES_CUSTOMER = "purchases.customer"
PURCHASES_MARKETING = "purchases.marketing"
PURCHASES_ANALYTICS = "purchases.analytics"
ANALYTICS_BASKETS = "purchases.baskets"
ANALYTICS_WINDOWS = "analytics.windows"
CHECKOUTS_DLQ = "checkouts.dlq"
RECEIPTS_SEEN = "processor.receipts-seen"
CONSENTS_ERASED = "consents.erased"
PURCHASES_RETRACTIONS = "purchases.retractions"

# How long purchases.marketing keeps a record: purchases.retractions keeps each retraction longer
# than any record it covers (retention plus one default segment.ms, which a record may outlive its
# retention by), so a consumer that replays marketing from its start also finds every retraction.
MARKETING_RETENTION_MS = 30 * DAY_MS
RETRACTIONS_RETENTION_MS = MARKETING_RETENTION_MS + 7 * DAY_MS

CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(
        CHECKOUTS,
        "checkout",
        "card_id (store_id when anonymous)",
        "Raw checkouts from registers and partners; at-least-once from the register outboxes.",
        # The broker stamps append time: the router orders checkouts and consent changes by it, so
        # a register's clock cannot put a receipt before a withdrawal written earlier.
        {"retention.ms": str(14 * DAY_MS), "min.insync.replicas": "1", "message.timestamp.type": "LogAppendTime"},
    ),
    TopicSpec(
        CONSENTS,
        "consent_change",
        "card_id",
        "Consent state per card (full state, latest wins); compacted, so the newest state is kept forever.",
        # max.compaction.lag.ms bounds how long an erased card's older consent states outlive its tombstone.
        {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": str(60 * 1000),
            "max.compaction.lag.ms": str(7 * DAY_MS),
            "message.timestamp.type": "LogAppendTime",
        },
    ),
    TopicSpec(
        PURCHASES_CUSTOMER,
        "purchase",
        "card_id (store_id when anonymous)",
        "Validated purchases truncated to the chain's granularity at event time; feeds profiles and the warehouse.",
        {"retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        PURCHASES_MARKETING,
        "purchase",
        "card_id",
        "Purchases of cards whose consent allows marketing use; group level unless product data consent.",
        {"retention.ms": str(MARKETING_RETENTION_MS)},
    ),
    TopicSpec(
        PURCHASES_RETRACTIONS,
        "retraction",
        "card_id",
        "Retractions for the consumers of purchases.marketing: a withdrawal (the router, when a consent change "
        "narrows marketing use) or an erasure (`receiptflow erase`); the contract is in docs/design.md.",
        {"retention.ms": str(RETRACTIONS_RETENTION_MS)},
    ),
    TopicSpec(
        ANALYTICS_BASKETS,
        "analytics_basket",
        "chain",
        "Anonymous baskets (no card id, no register id, event time rounded to the hour) from the router to "
        "the aggregator; internal: no other reader, kept only until the aggregator has closed their day.",
        {"retention.ms": str(4 * DAY_MS)},
    ),
    TopicSpec(
        PURCHASES_ANALYTICS,
        "analytics_cell",
        "window id (chain/local date)",
        "The published analytics: cells of at least k baskets of one chain and local day, written once per "
        "window by the aggregator when the window closes; no basket.",
        {"retention.ms": str(90 * DAY_MS)},
    ),
    TopicSpec(
        ANALYTICS_WINDOWS,
        '(none: JSON close marker {"window_id", "counted_through", totals, "late_baskets", ...})',
        "window id (chain/local date)",
        "The aggregator's closed windows: one marker per window, written in the same transaction as its "
        "cells and rewritten when a late basket is counted; internal, read to its end before the aggregator "
        "consumes.",
        {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60 * 1000)},
    ),
    TopicSpec(
        CHECKOUTS_DLQ,
        "dead_letter",
        "original key",
        "Rejected input with the original bytes, the reason and the source topic/partition/offset.",
        {"retention.ms": str(90 * DAY_MS)},
        partitions=1,
    ),
    TopicSpec(
        RECEIPTS_SEEN,
        "(none: packed receipt ids with their event times, header receiptflow-seen: batch-v1)",
        "unique per record (transactional id and a random part)",
        "The processor's dedup changelog: per transaction and partition one record of the receipt ids it "
        "routed, written in the same transaction as its outputs, to the partition of those checkouts; "
        "internal, read back when a worker is assigned that partition.",
        {"cleanup.policy": "compact,delete", "retention.ms": str(14 * DAY_MS)},
    ),
    TopicSpec(
        CONSENTS_ERASED,
        '(none: JSON {"erased_at": ISO-8601 time})',
        "salted hash of the card id (RECEIPTFLOW_ERASURE_SALT); never the card id",
        "The erased-cards record: one record per erased card, written first by `receiptflow erase`, never "
        "tombstoned; every sink and replay reads it to its end before writing and keeps its cards out "
        "of any warehouse.",
        {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60 * 1000)},
        partitions=1,
    ),
)

# Topics whose records carry a card id (key or value): what `export` reports and `erase` cannot delete
# (append-only logs); their records of a card expire with the topic's retention or compaction.
CARD_LINKED: tuple[str, ...] = (
    CHECKOUTS,
    CONSENTS,
    PURCHASES_CUSTOMER,
    PURCHASES_MARKETING,
    CHECKOUTS_DLQ,
    PURCHASES_RETRACTIONS,
)


def spec(name: str) -> TopicSpec:
    for s in CATALOGUE:
        if s.name == name:
            return s
    raise KeyError(name)


class TopicNames:
    """Physical topic names for one deployment (applies ``Settings.kafka.topic_prefix``)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.checkouts = prefix + CHECKOUTS
        self.consents = prefix + CONSENTS
        self.purchases_customer = prefix + PURCHASES_CUSTOMER
        self.purchases_marketing = prefix + PURCHASES_MARKETING
        self.purchases_analytics = prefix + PURCHASES_ANALYTICS
        self.analytics_baskets = prefix + ANALYTICS_BASKETS
        self.analytics_windows = prefix + ANALYTICS_WINDOWS
        self.checkouts_dlq = prefix + CHECKOUTS_DLQ
        self.receipts_seen = prefix + RECEIPTS_SEEN
        self.consents_erased = prefix + CONSENTS_ERASED
        self.retractions = prefix + PURCHASES_RETRACTIONS

    def physical(self, logical: str) -> str:
        return self.prefix + logical

    def logical(self, physical: str) -> str:
        return physical[len(self.prefix) :] if physical.startswith(self.prefix) else physical


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    created: list[str]
    existing: list[str]
    warnings: list[str]
    acls: int | None = None  # ACL bindings applied (receiptflow.kafka_acl); None: the cluster has no authorizer


def create_topics(settings: Settings, specs: Iterable[TopicSpec] = CATALOGUE, timeout: float = 30.0) -> ProvisionResult:
    """Create the missing topics; leave existing ones alone. Safe to run any number of times."""
    admin = AdminClient(settings.kafka_config())
    names = TopicNames(settings.kafka.topic_prefix)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
    created: list[str] = []
    existing: list[str] = []
    warnings: list[str] = []
    wanted: list[NewTopic] = []
    for s in specs:
        physical = names.physical(s.name)
        partitions = s.partitions or settings.kafka.topic_partitions
        if physical in metadata.topics:
            existing.append(physical)
            have = len(metadata.topics[physical].partitions)
            if have != partitions:
                warnings.append(f"{physical} has {have} partitions, the catalogue says {partitions}")
            continue
        wanted.append(
            NewTopic(
                physical,
                num_partitions=partitions,
                replication_factor=settings.kafka.topic_replication_factor,
                config=dict(s.config),
            )
        )
    if wanted:
        futures = admin.create_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result()
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                # Another process may have created it between list_topics and create_topics.
                if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                    existing.append(name)
                else:
                    raise BrokerError(f"cannot create topic {name}: {exc}") from exc
    if created:
        _wait_for_leaders(admin, created, timeout)
    # The ACLs name the catalogue's topics, so they come with them (kafka_acl imports this module).
    from .kafka_acl import apply_acls  # noqa: PLC0415

    return ProvisionResult(sorted(created), sorted(existing), warnings, apply_acls(settings, timeout))


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Return once the leader of every partition of ``topics`` serves it: a created topic is not usable before.

    The metadata names a partition's leader as soon as the controller has chosen it, but that broker
    answers "not leader" until it has created the partition's log, a few hundred milliseconds later on a busy
    node. Writing then can lose records: an idempotent producer's first request to the partition
    fails, its next one, already in flight, is accepted (the leader holds no sequence state for the
    producer yet, so any sequence number is taken as a start), and librdkafka reads that success as
    proof that the first request was written too and reports its records delivered. So the wait ends
    only when every leader answers a ListOffsets request for its partition.
    """
    deadline = time.monotonic() + timeout
    pending = _led_partitions(admin, topics, deadline, timeout)
    while pending:
        wait = max(0.5, min(10.0, deadline - time.monotonic()))
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # confluent-kafka leaves it unannotated
        futures = admin.list_offsets(dict.fromkeys(pending, latest), request_timeout=wait)
        pending = [tp for tp, fut in futures.items() if not _served(fut)]
        if not pending:
            return
        if time.monotonic() > deadline:
            where = ", ".join(f"{tp.topic} [{tp.partition}]" for tp in pending[:5])
            raise BrokerError(f"created partitions are not served by their leaders after {timeout:.0f}s: {where}")
        time.sleep(0.05)


def _led_partitions(admin: AdminClient, topics: list[str], deadline: float, timeout: float) -> list[TopicPartition]:
    """Every partition of ``topics``, once the metadata names a leader for each."""
    while True:
        md = admin.list_topics(timeout=timeout)
        ready = all(
            t in md.topics
            and md.topics[t].error is None
            and md.topics[t].partitions
            and all(p.leader >= 0 for p in md.topics[t].partitions.values())
            for t in topics
        )
        if ready:
            return [TopicPartition(t, p) for t in topics for p in sorted(md.topics[t].partitions)]
        if time.monotonic() > deadline:
            raise BrokerError(f"created topics have no partition leaders after {timeout:.0f}s: {topics}")
        time.sleep(0.1)


# What a leader answers for a partition it does not serve yet.
_NOT_SERVED_YET = frozenset(
    {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.LEADER_NOT_AVAILABLE}
)


def _served(answer: Future[Any]) -> bool:
    """False while the partition's leader does not serve it yet. Any other refusal (no permission to
    describe the topic, say) ends the wait for that partition: it says nothing about the leader."""
    try:
        answer.result()
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not isinstance(err, KafkaError):
            return False
        # Codes below zero are the client's own (a request that timed out or did not get through): ask again.
        return not (err.code() in _NOT_SERVED_YET or err.code() < 0 or err.retriable())
    return True


def describe_topic_configs(
    settings: Settings, topics: Iterable[str], timeout: float = 15.0
) -> dict[str, dict[str, str]]:
    """Effective configuration (broker defaults included) of each of ``topics`` that exists."""
    from confluent_kafka.admin._config import ConfigResource  # noqa: PLC0415 - only export needs it
    from confluent_kafka.admin._resource import ResourceType  # noqa: PLC0415

    admin = AdminClient(settings.kafka_config())
    wanted = list(topics)
    try:
        existing = admin.list_topics(timeout=timeout).topics
        resources = [ConfigResource(ResourceType.TOPIC, t) for t in wanted if t in existing]
        if not resources:
            return {}
        futures = admin.describe_configs(resources, request_timeout=timeout)
        out: dict[str, dict[str, str]] = {}
        for resource, fut in futures.items():
            entries = fut.result()
            out[resource.name] = {name: str(e.value) for name, e in entries.items() if e.value is not None}
        return out
    except KafkaException as exc:
        raise BrokerError(
            f"cannot read the topic configuration from {settings.kafka.bootstrap_servers}: {exc}"
        ) from exc
