"""Schema ids through a registry: subjects, compatibility level, ids in the wire format, errors.

The registry here is a small in-memory stand-in with Confluent's semantics (one id per schema text,
whatever the subject); confluent-kafka's own ``mock://`` client cannot stand in, since it gives the
same schema a new id under every subject. The real registry (Apicurio, started by the stack) is
exercised in tests/integration/test_schema_registry.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from receiptflow.codec import HEADER_SIZE, Codec, SchemaCatalog, SchemaVersion, schema_id_of
from receiptflow.config import Settings
from receiptflow.errors import DecodeError, IncompatibleSchemaError, SchemaError
from receiptflow.registry import codec_for, registry_catalog, topic_subjects, value_subject
from receiptflow.schemacheck import load_samples
from receiptflow.topics import TopicNames

pytestmark = pytest.mark.unit

URL = "http://registry.test/apis/ccompat/v7"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


class FakeRegistry:
    """Confluent's id rule (global per schema text) and a 409 for the texts named in ``refuse``."""

    def __init__(self, refuse: tuple[str, ...] = (), first_id: int = 100) -> None:
        self.ids: dict[str, int] = {}
        self.subjects: dict[str, list[int]] = {}
        self.levels: dict[str, str] = {}
        self.refuse = refuse
        self.next_id = first_id

    def register_schema(self, subject: str, schema: Schema) -> int:
        text = schema.schema_str
        assert text is not None and schema.schema_type == "AVRO"
        if any(marker in text for marker in self.refuse) and self.subjects.get(subject):
            raise SchemaRegistryError(409, 0, f"Incompatible artifact: {subject} [AVRO]")
        if text not in self.ids:
            self.ids[text] = self.next_id
            self.next_id += 1
        versions = self.subjects.setdefault(subject, [])
        if self.ids[text] not in versions:
            versions.append(self.ids[text])
        return self.ids[text]

    def set_compatibility(self, subject: str, level: str) -> dict[str, Any]:
        assert subject in self.subjects, "configured before its first version: Apicurio refuses that"
        self.levels[subject] = level
        return {"compatibility": level}


def _with_v2(change: dict[str, Any]) -> SchemaCatalog:
    """The bundled contract plus a new ``consent_change`` version (v3) with ``change`` as an extra field."""
    bundled = SchemaCatalog.bundled()
    latest = bundled.latest("consent_change")
    raw = {**latest.raw, "fields": [*latest.raw["fields"], change]}
    new = SchemaVersion(99, "consent_change", NEW, f"consent_change/v{NEW}.avsc", raw)
    return SchemaCatalog([*(v for s in bundled.subjects() for v in bundled.versions(s)), new])


NEW = 3  # consent_change v1 and v2 are bundled


def test_subjects_follow_the_topic_name_strategy_with_the_prefix() -> None:
    pairs = topic_subjects(TopicNames("staging."), SchemaCatalog.bundled())
    assert ("staging.checkouts-value", "checkout") in pairs
    assert ("staging.consents-value", "consent_change") in pairs
    assert ("staging.purchases.baskets-value", "analytics_basket") in pairs
    assert ("staging.purchases.analytics-value", "analytics_cell") in pairs
    # The aggregator's close markers are JSON: no subject is registered for them.
    assert not any(s.startswith("staging.analytics.windows") for s, _ in pairs)
    assert ("staging.checkouts.dlq-value", "dead_letter") in pairs
    purchase_topics = sorted(s for s, repo in pairs if repo == "purchase")
    assert purchase_topics == ["staging.purchases.customer-value", "staging.purchases.marketing-value"]
    assert value_subject("checkouts") == "checkouts-value"


def test_every_subject_is_registered_backward_and_the_codec_writes_the_registry_ids() -> None:
    fake = FakeRegistry()
    catalog = registry_catalog(SchemaCatalog.bundled(), TopicNames("p."), fake, URL)
    subjects = {s for s, _ in topic_subjects(TopicNames("p."), SchemaCatalog.bundled())}
    assert set(fake.subjects) == subjects
    assert fake.levels == dict.fromkeys(subjects, "BACKWARD")
    # purchase is registered under two topics and has one id, the registry's, not the repo's 3.
    purchase = catalog.latest("purchase")
    assert purchase.schema_id >= 100
    assert fake.subjects["p.purchases.customer-value"] == fake.subjects["p.purchases.marketing-value"]
    # Every version, oldest first: the newest is what the codec writes.
    assert fake.subjects["p.purchases.customer-value"] == [v.schema_id for v in catalog.versions("purchase")]
    assert fake.subjects["p.purchases.customer-value"][-1] == purchase.schema_id

    codec = Codec(catalog)
    repo = SchemaCatalog.bundled()
    change = load_samples(SCHEMAS, repo.latest("consent_change"))[0]
    data = codec.encode("consent_change", change)
    latest = catalog.latest("consent_change")
    assert schema_id_of(data) == latest.schema_id == fake.ids[json.dumps(latest.raw, sort_keys=True)]
    assert latest.schema_id != repo.latest("consent_change").schema_id
    assert codec.decode(data, expect="consent_change").value["card_id"] == change["card_id"]
    # A record framed with the repo's id is not this deployment's: refused, not misread.
    with pytest.raises(DecodeError, match="unknown_schema_id"):
        codec.decode(bytes([0, 0, 0, 0, repo.latest("consent_change").schema_id]) + data[HEADER_SIZE:])


def test_registering_again_gives_the_same_ids() -> None:
    fake = FakeRegistry()
    first = registry_catalog(SchemaCatalog.bundled(), TopicNames(), fake, URL)
    again = registry_catalog(SchemaCatalog.bundled(), TopicNames(), fake, URL)
    assert [v.schema_id for s in first.subjects() for v in first.versions(s)] == [
        v.schema_id for s in again.subjects() for v in again.versions(s)
    ]


def test_a_compatible_new_version_is_registered_after_the_old_one() -> None:
    fake = FakeRegistry()
    catalog = registry_catalog(
        _with_v2({"name": "tier", "type": ["null", "string"], "default": None}), TopicNames(), fake, URL
    )
    assert [v.version for v in catalog.versions("consent_change")] == [1, 2, NEW]
    assert len(fake.subjects["consents-value"]) == NEW


def test_an_incompatible_version_is_refused_in_one_line_naming_subject_and_file() -> None:
    fake = FakeRegistry(refuse=('"name": "tier"',))
    with pytest.raises(IncompatibleSchemaError) as caught:
        registry_catalog(_with_v2({"name": "tier", "type": "string"}), TopicNames(), fake, URL)
    message = str(caught.value)
    assert "\n" not in message
    assert f"consent_change v{NEW} (consent_change/v{NEW}.avsc)" in message
    assert "'consents-value'" in message
    assert "not BACKWARD compatible" in message
    assert "Incompatible artifact" in message  # the registry's own reason is kept

    assert "give new fields defaults" in message  # a later version: the contract's evolution is at fault


def test_a_first_version_refused_by_another_records_versions_says_to_clear_the_subject() -> None:
    # Before the analytics cells, purchases.analytics carried analytics_basket: its subject still holds them.
    fake = FakeRegistry(refuse=('"name": "AnalyticsCell"',))
    bundled = SchemaCatalog.bundled()
    for version in bundled.versions("analytics_basket"):
        fake.register_schema("purchases.analytics-value", Schema(json.dumps(version.raw, sort_keys=True), "AVRO"))
    with pytest.raises(IncompatibleSchemaError) as caught:
        registry_catalog(bundled, TopicNames(), fake, URL)
    message = str(caught.value)
    assert "\n" not in message
    assert "analytics_cell v1 (analytics_cell/v1.avsc) under subject 'purchases.analytics-value'" in message
    assert "delete the subject or set its compatibility to NONE (docs/operations.md)" in message
    assert "give new fields defaults" not in message


def test_a_registry_that_gives_one_schema_two_ids_is_refused() -> None:
    class PerSubjectIds(FakeRegistry):
        def register_schema(self, subject: str, schema: Schema) -> int:
            super().register_schema(subject, schema)
            self.next_id += 1
            return self.next_id

    with pytest.raises(SchemaError, match="one id per schema"):
        registry_catalog(SchemaCatalog.bundled(), TopicNames(), PerSubjectIds(), URL)


def test_an_unreachable_registry_is_one_line_saying_what_to_do() -> None:
    url = "http://127.0.0.1:9/apis/ccompat/v7"  # discard port: nothing listens
    client = SchemaRegistryClient({"url": url, "max.retries": 0})
    with pytest.raises(SchemaError) as caught:
        registry_catalog(SchemaCatalog.bundled(), TopicNames(), client, url)
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot be reached" in message and "RECEIPTFLOW_SCHEMA_REGISTRY_URL" in message


def test_without_a_url_the_codec_takes_the_repo_ids() -> None:
    codec = codec_for(Settings(kafka={"schema_registry_url": None}))
    repo = SchemaCatalog.bundled()
    # checkout v2 has id 6 in ids.json
    assert codec.catalog.latest("checkout").schema_id == repo.latest("checkout").schema_id == 6
