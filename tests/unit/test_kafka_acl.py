"""The Kafka ACL set: a pure function of the deployment's names, checked against what each component uses."""

from __future__ import annotations

import string

from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.config import Settings
from receiptflow.kafka_acl import (
    SINK_GROUP,
    AclNames,
    Grant,
    acl_grants,
    binding,
    router_writes,
    writers,
)
from receiptflow.kafka_auth import KafkaPrincipal
from receiptflow.processors.aggregate.clients import group_id, transactional_id
from receiptflow.sinks.replay import replay_group, sink_topics
from receiptflow.sinks.tables import DEFAULT_GROUP
from receiptflow.topics import CATALOGUE, CONSENTS, PURCHASES_ANALYTICS, TopicNames

K = KafkaPrincipal
NAME = st.text(alphabet=string.ascii_lowercase + string.digits + "-._", min_size=1, max_size=20)
PREFIX = st.one_of(st.just(""), NAME.map(lambda n: n + "."))


def _names(prefix: str = "t.", router: str = "receiptflow-processor") -> AclNames:
    return AclNames(prefix, router, f"{router}-aggregator")


def _may(grants: list[Grant], principal: KafkaPrincipal, operation: str, topic: str) -> bool:
    return any(
        g.principal is principal and g.resource == "topic" and g.operation == operation and g.name == topic
        for g in grants
    )


@given(PREFIX, NAME)
def test_only_consent_writers_and_support_write_consents(prefix: str, router: str) -> None:
    names = _names(prefix, router)
    grants = acl_grants(names)
    assert writers(grants, prefix + CONSENTS) == {K.CONSENT_WRITER, K.SUPPORT}
    assert writers(grants, prefix + "consents.erased") == {K.SUPPORT}
    assert writers(grants, prefix + "checkouts") == {K.REGISTERS}


@given(PREFIX, NAME)
def test_only_the_router_writes_purchases_and_only_the_aggregator_the_published_cells(prefix: str, router: str) -> None:
    grants = acl_grants(_names(prefix, router))
    purchases = [s.name for s in CATALOGUE if s.name.startswith("purchases.") and s.name != PURCHASES_ANALYTICS]
    assert {"purchases.customer", "purchases.marketing", "purchases.baskets"} <= set(purchases)
    for topic in purchases:
        # An erasure's retraction is support's to publish (the erase job); a withdrawal's the router's.
        expected = {K.ROUTER, K.SUPPORT} if topic == "purchases.retractions" else {K.ROUTER}
        assert writers(grants, prefix + topic) == expected, topic
    assert writers(grants, prefix + PURCHASES_ANALYTICS) == {K.AGGREGATOR}


def test_a_new_purchases_topic_is_the_routers_alone() -> None:
    names = AclNames("", "rf", "rf-aggregator", (*_names().topics, "purchases.loyalty"))
    assert "purchases.loyalty" in router_writes(names)
    assert writers(acl_grants(names), "purchases.loyalty") == {K.ROUTER}


@given(PREFIX, NAME)
def test_every_grant_is_about_this_deployment_and_none_is_for_the_super_user(prefix: str, router: str) -> None:
    names = _names(prefix, router)
    grants = acl_grants(names)
    catalogue = {prefix + s.name for s in CATALOGUE}
    assert all(g.principal is not K.ADMIN for g in grants)
    assert {g.name for g in grants if g.resource == "topic"} <= catalogue
    assert all(not g.prefixed for g in grants if g.resource == "topic"), "topics are named one by one"
    assert grants == sorted(set(grants)) == acl_grants(names), "sorted, no duplicate, the same every time"


@given(NAME)
def test_each_consumer_group_and_transactional_id_is_its_principals(router: str) -> None:
    grants = acl_grants(_names("p.", router))
    groups = [g for g in grants if g.resource == "group" and not g.name.startswith("receiptflow-erasures-")]
    owners: dict[tuple[str, bool], set[KafkaPrincipal]] = {}
    for g in groups:
        owners.setdefault((g.name, g.prefixed), set()).add(g.principal)
    assert all(len(o) == 1 for o in owners.values()), owners
    assert owners[(router, False)] == {K.ROUTER}
    assert owners[(f"{router}-profiles", False)] == {K.PROFILES}
    assert owners[(f"{router}-aggregator", False)] == {K.AGGREGATOR}
    assert owners[(SINK_GROUP, True)] == {K.SINK}
    txn = {(g.principal, g.name) for g in grants if g.resource == "transactional_id" and g.operation == "write"}
    assert txn == {(K.ROUTER, f"{router}-"), (K.AGGREGATOR, f"{router}-aggregator-")}
    assert {g.principal for g in grants if g.resource == "transactional_id"} == {K.ROUTER, K.AGGREGATOR}


def test_the_grants_cover_what_the_components_use() -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9092", "topic_prefix": "x."},
        router={"id": "rf", "instance": "2"},
        local={"data_dir": "/nonexistent"},
    )
    names, grants = TopicNames("x."), acl_grants(AclNames.of(settings))
    # The sink reads what the live sink subscribes, in the group and its replays' groups.
    assert all(_may(grants, K.SINK, "read", t) for t in sink_topics(settings))
    assert SINK_GROUP == DEFAULT_GROUP and replay_group(DEFAULT_GROUP).startswith(SINK_GROUP)
    # The aggregator's group and transactional id as the aggregator names them.
    assert Grant(K.AGGREGATOR, "group", group_id(settings), "read") in grants
    assert transactional_id(settings).startswith(f"{group_id(settings)}-")
    # The router's inputs and outputs; the profile agent's inputs.
    for topic in (names.checkouts, names.consents, names.receipts_seen):
        assert _may(grants, K.ROUTER, "read", topic)
    for topic in (names.purchases_customer, names.purchases_marketing, names.analytics_baskets, names.checkouts_dlq):
        assert _may(grants, K.ROUTER, "write", topic)
    assert _may(grants, K.PROFILES, "read", names.purchases_customer) and _may(
        grants, K.PROFILES, "read", names.consents
    )
    # Support reads every card-linked topic for export and may describe every topic's configuration.
    assert all(_may(grants, K.SUPPORT, "describe_configs", names.physical(s.name)) for s in CATALOGUE)
    assert not _may(grants, K.REGISTERS, "read", names.checkouts), "registers only write"


def test_a_grant_becomes_an_allow_binding_for_any_host() -> None:
    lit = binding(Grant(K.ROUTER, "topic", "t.purchases.marketing", "write"))
    assert (lit.restype, lit.name, lit.resource_pattern_type) == (
        ResourceType.TOPIC,
        "t.purchases.marketing",
        ResourcePatternType.LITERAL,
    )
    assert (lit.principal, lit.host, lit.operation, lit.permission_type) == (
        "User:router",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    pre = binding(Grant(K.AGGREGATOR, "transactional_id", "rf-aggregator-", "describe", prefixed=True))
    assert pre.restype is ResourceType.TRANSACTIONAL_ID and pre.resource_pattern_type is ResourcePatternType.PREFIXED
    assert pre.operation is AclOperation.DESCRIBE
