"""The Kafka ACLs: what each principal of :mod:`receiptflow.kafka_auth` may do, and applying them.

:func:`acl_grants` is a pure function of the deployment's names (topic prefix, the workers' group
and transactional-id names) to the set of grants; :func:`apply_acls` creates them with the
AdminClient (``CreateAcls`` of a binding that exists is a no-op, so it runs on every ``topics
create`` and ``stack up``). The broker denies whatever is not granted
(``allow.everyone.if.no.acl.found=false``); ``admin`` is the super user and needs no grant.

What the grants hold, in words (docs/operations.md, "Kafka principals and ACLs", says the same):

* ``consents`` is written only by ``consent-writer`` (the web page, the registers' app) and
  ``support`` (erasure tombstones); ``consents.erased`` only by ``support``.
* ``purchases.*`` (with the internal baskets topic ``purchases.baskets``) and the router's dedup
  changelog are written only by ``router``, under its transactional ids; the published analytics
  ``purchases.analytics`` and the close markers only by ``aggregator``, under its own.
* ``checkouts`` is written only by ``registers``; the dead-letter topic by the workers that
  reject records (router, profile agent, aggregator, sink).
* Each consumer group is open to its principal only: the router's ``<id>`` and ``<id>-restore``,
  the profile agent's ``<id>-profiles``, the aggregator's, the sink's ``receiptflow-warehouse*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# The package does not re-export these for mypy.
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from .config import Settings
from .errors import BrokerError
from .kafka_auth import KafkaPrincipal
from .topics import (
    ANALYTICS_BASKETS,
    ANALYTICS_WINDOWS,
    CARD_LINKED,
    CATALOGUE,
    CHECKOUTS,
    CHECKOUTS_DLQ,
    CONSENTS,
    CONSENTS_ERASED,
    PURCHASES_ANALYTICS,
    PURCHASES_CUSTOMER,
    PURCHASES_RETRACTIONS,
    RECEIPTS_SEEN,
)

Resource = Literal["topic", "group", "transactional_id"]
Operation = Literal["read", "write", "describe", "describe_configs"]

# The sink's consumer group (sinks.tables.DEFAULT_GROUP; the core cannot import the sinks wing) and the
# prefix of every group that only reads by assignment (erased cards, windows, replays).
SINK_GROUP = "receiptflow-warehouse"
ERASURES_GROUPS = "receiptflow-erasures-"
AGGREGATE_WINDOWS_GROUPS = "receiptflow-aggregate-windows-"
PURCHASES = "purchases."


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ALLOW binding: ``principal`` may ``operation`` on the ``resource`` named (or prefixed) ``name``."""

    principal: KafkaPrincipal
    resource: Resource
    name: str
    operation: Operation
    prefixed: bool = False


@dataclass(frozen=True, slots=True)
class AclNames:
    """The names the grants are about: the topic prefix and the workers' group and transactional ids."""

    topic_prefix: str
    router_id: str
    aggregator_group: str
    topics: Sequence[str] = tuple(s.name for s in CATALOGUE)  # logical names

    @classmethod
    def of(cls, settings: Settings) -> AclNames:
        aggregator = settings.aggregate.id or f"{settings.router.id}-aggregator"  # aggregate.clients.group_id
        return cls(settings.kafka.topic_prefix, settings.router.id, aggregator)


def _topics(p: KafkaPrincipal, op: Operation, names: AclNames, logical: Iterable[str]) -> list[Grant]:
    return [Grant(p, "topic", names.topic_prefix + t, op) for t in logical if t in names.topics]


def router_writes(names: AclNames) -> list[str]:
    """The topics the router writes: every ``purchases.*`` but the aggregator's published cells (support
    writes ``purchases.retractions`` too: an erasure's retraction)."""
    purchases = [t for t in names.topics if t.startswith(PURCHASES) and t != PURCHASES_ANALYTICS]
    return [*purchases, RECEIPTS_SEEN, CHECKOUTS_DLQ]


def acl_grants(names: AclNames) -> list[Grant]:
    """Every grant of the deployment ``names`` (pure: the same names give the same sorted list)."""
    router, prof, aggr, sink = (
        KafkaPrincipal.ROUTER,
        KafkaPrincipal.PROFILES,
        KafkaPrincipal.AGGREGATOR,
        KafkaPrincipal.SINK,
    )
    reg, cw, sup = KafkaPrincipal.REGISTERS, KafkaPrincipal.CONSENT_WRITER, KafkaPrincipal.SUPPORT
    rid, agg = names.router_id, names.aggregator_group
    grants = [
        # router: checkouts and consents in, purchases out, transactionally.
        *_topics(router, "read", names, (CHECKOUTS, CONSENTS, RECEIPTS_SEEN, CONSENTS_ERASED)),
        *_topics(router, "write", names, router_writes(names)),
        Grant(router, "group", rid, "read"),
        Grant(router, "group", f"{rid}-restore", "read"),
        Grant(router, "group", ERASURES_GROUPS, "read", prefixed=True),
        Grant(router, "transactional_id", f"{rid}-", "write", prefixed=True),
        Grant(router, "transactional_id", f"{rid}-", "describe", prefixed=True),
        # profile agent (faust): purchases and consents in, dead letters out.
        *_topics(prof, "read", names, (PURCHASES_CUSTOMER, CONSENTS, CONSENTS_ERASED)),
        *_topics(prof, "write", names, (CHECKOUTS_DLQ,)),
        Grant(prof, "group", f"{rid}-profiles", "read"),
        Grant(prof, "group", ERASURES_GROUPS, "read", prefixed=True),
        # aggregator: baskets in, published cells and close markers out, transactionally.
        *_topics(aggr, "read", names, (ANALYTICS_BASKETS, ANALYTICS_WINDOWS)),
        *_topics(aggr, "write", names, (PURCHASES_ANALYTICS, ANALYTICS_WINDOWS, CHECKOUTS_DLQ)),
        Grant(aggr, "group", agg, "read"),
        Grant(aggr, "group", AGGREGATE_WINDOWS_GROUPS, "read", prefixed=True),
        Grant(aggr, "transactional_id", f"{agg}-", "write", prefixed=True),
        Grant(aggr, "transactional_id", f"{agg}-", "describe", prefixed=True),
        # sink: what the warehouse keeps in, dead letters out.
        *_topics(sink, "read", names, (PURCHASES_CUSTOMER, PURCHASES_ANALYTICS, CONSENTS, CONSENTS_ERASED)),
        *_topics(sink, "write", names, (CHECKOUTS_DLQ,)),
        Grant(sink, "group", SINK_GROUP, "read", prefixed=True),
        Grant(sink, "group", ERASURES_GROUPS, "read", prefixed=True),
        # registers: checkouts only.
        *_topics(reg, "write", names, (CHECKOUTS,)),
        # consent writers: consents, and the erased-cards record to refuse an erased card's consent.
        *_topics(cw, "write", names, (CONSENTS,)),
        *_topics(cw, "read", names, (CONSENTS_ERASED,)),
        Grant(cw, "group", ERASURES_GROUPS, "read", prefixed=True),
        # support (export, erase): reads what is card-linked, tombstones consents, records erasures and
        # publishes the erasure's retraction (the router publishes those of withdrawals).
        *_topics(sup, "read", names, (*CARD_LINKED, CONSENTS_ERASED)),
        *_topics(sup, "describe_configs", names, names.topics),
        *_topics(sup, "write", names, (CONSENTS, CONSENTS_ERASED, PURCHASES_RETRACTIONS)),
        Grant(sup, "group", ERASURES_GROUPS, "read", prefixed=True),
    ]
    return sorted(set(grants))


def writers(grants: Iterable[Grant], topic: str) -> set[KafkaPrincipal]:
    """The principals granted WRITE on ``topic`` (besides the super user)."""
    return {g.principal for g in grants if g.resource == "topic" and g.operation == "write" and g.name == topic}


_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}
_OPERATION = {
    "read": AclOperation.READ,
    "write": AclOperation.WRITE,
    "describe": AclOperation.DESCRIBE,
    "describe_configs": AclOperation.DESCRIBE_CONFIGS,
}


def binding(grant: Grant) -> AclBinding:
    """The AdminClient's binding of ``grant`` (any host)."""
    pattern = ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL
    return AclBinding(
        _RESOURCE[grant.resource],
        grant.name,
        pattern,
        grant.principal.acl_principal,
        "*",
        _OPERATION[grant.operation],
        AclPermissionType.ALLOW,
    )


def apply_acls(settings: Settings, timeout: float = 30.0) -> int | None:
    """Create every grant of ``settings``' deployment (idempotent); how many, None when the cluster has no
    authorizer (then there is nothing to apply). Needs the admin principal (or ALTER on the cluster)."""
    grants = acl_grants(AclNames.of(settings))
    admin = AdminClient(settings.kafka_config())
    futures = admin.create_acls([binding(g) for g in grants], request_timeout=timeout)
    for grant_binding, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError.SECURITY_DISABLED:
                return None
            raise BrokerError(
                f"cannot create the Kafka ACL {grant_binding}: {exc} (ACLs are created as the admin principal: "
                "set RECEIPTFLOW_KAFKA_ADMIN_PASSWORD)"
            ) from exc
    return len(grants)
