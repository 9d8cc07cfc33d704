"""The contract through a real schema registry (the session's Apicurio, Confluent's API).

With ``RECEIPTFLOW_SCHEMA_REGISTRY_URL`` set, records carry the registry's ids under the topic-name
strategy's subjects, each subject is BACKWARD, and a version the registry refuses stops a command
with one line; the embedded registry keeps its ids across a restart. The whole pipeline through
the registry (producers, router, profile agent, sink) is the ``schema-registry`` run of
tests/integration/test_end_to_end.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema

from receiptflow.codec import Codec, SchemaCatalog, SchemaVersion, schema_id_of
from receiptflow.config import Settings
from receiptflow.errors import DecodeError, IncompatibleSchemaError
from receiptflow.models import ConsentChange
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.registry import RegistrySync, codec_for, registry_catalog, registry_client, value_subject
from receiptflow.stack import free_port
from receiptflow.stack.process import gone
from receiptflow.stack.registry import API_PATH, EmbeddedRegistry
from receiptflow.topics import TopicNames, create_topics

from ..unit.processors.aggregate.baskets import basket
from .conftest import MakeSettings
from .support import env_for, read_all


@pytest.fixture
def reg_settings(make_settings: MakeSettings, schema_registry: str) -> Settings:
    return make_settings(kafka={"schema_registry_url": schema_registry})


def test_records_carry_the_registry_ids_under_backward_topic_subjects(reg_settings: Settings) -> None:
    create_topics(reg_settings)
    names = TopicNames(reg_settings.kafka.topic_prefix)
    client = RegisterClient(reg_settings)
    sim = Simulator(seed=3, stores=3, customers=10)
    checkouts = list(sim.stream(20, datetime.now(UTC), rate=1000))
    for checkout in checkouts:
        client.send(checkout)
    client.send_consent(ConsentChange("6390000000001", datetime.now(UTC), True, False))
    stats = client.flush()
    assert (stats.acked, stats.failed) == (21, 0)

    registry = registry_client(reg_settings.kafka.schema_registry_url or "")
    checkout_id = registry.get_latest_version(value_subject(names.checkouts)).schema_id
    consent_id = registry.get_latest_version(value_subject(names.consents)).schema_id
    repo = SchemaCatalog.bundled()
    assert checkout_id != repo.latest("checkout").schema_id  # the registry's numbering, not ids.json
    on_topic = {schema_id_of(m.value()) for m in read_all(reg_settings, names.checkouts)}
    assert on_topic == {checkout_id}
    assert {schema_id_of(m.value()) for m in read_all(reg_settings, names.consents)} == {consent_id}

    # A consumer of this deployment decodes them; one with the repo's ids cannot: the registry's id is
    # unknown to the repo, or (the registry numbers from 1 as well) the id of another of its schemas.
    record = read_all(reg_settings, names.checkouts)[0].value()
    assert codec_for(reg_settings).decode(record, expect="checkout").value["receipt_id"] in {
        c.receipt_id for c in checkouts
    }
    with pytest.raises(DecodeError):
        Codec(repo).decode(record, expect="checkout")

    subjects = [value_subject(names.physical(t)) for t in ("checkouts", "consents", "purchases.customer")]
    subjects += [value_subject(names.physical(t)) for t in ("purchases.marketing", "purchases.baskets")]
    subjects.append(value_subject(names.physical("purchases.analytics")))
    subjects.append(value_subject(names.checkouts_dlq))
    assert set(subjects) <= set(registry.get_subjects())
    assert {registry.get_compatibility(s) for s in subjects} == {"BACKWARD"}
    # Every version kept in the repo is registered: the registry took analytics_basket v2 as BACKWARD compatible.
    baskets = value_subject(names.physical("purchases.baskets"))
    assert registry.get_versions(baskets) == [v.version for v in repo.versions("analytics_basket")] == [1, 2]
    cells = value_subject(names.physical("purchases.analytics"))
    assert registry.get_versions(cells) == [v.version for v in repo.versions("analytics_cell")] == [1]
    check = subprocess.run(
        [sys.executable, "-m", "receiptflow", "schemas", "check"],
        env=env_for(reg_settings),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    said = " ".join(check.stdout.split())  # the console wraps long lines
    assert f"the schema registry at {reg_settings.kafka.schema_registry_url} accepts each newest version" in said


def test_the_registry_refuses_an_incompatible_new_version(reg_settings: Settings) -> None:
    names = TopicNames(reg_settings.kafka.topic_prefix)
    url = reg_settings.kafka.schema_registry_url or ""
    bundled = SchemaCatalog.bundled()
    latest = bundled.latest("consent_change")
    new = latest.version + 1

    def with_v2(extra: dict[str, object]) -> SchemaCatalog:
        raw = {**latest.raw, "fields": [*latest.raw["fields"], extra]}
        newer = SchemaVersion(99, "consent_change", new, f"consent_change/v{new}.avsc", raw)
        return SchemaCatalog([*(v for s in bundled.subjects() for v in bundled.versions(s)), newer])

    with pytest.raises(IncompatibleSchemaError) as caught:
        registry_catalog(with_v2({"name": "tier", "type": "string"}), names, registry_client(url), url)
    message = str(caught.value)
    assert "\n" not in message
    assert f"under subject '{value_subject(names.consents)}': not BACKWARD compatible" in message

    # The same change with a default is accepted, as the next version of the subject.
    catalog = registry_catalog(
        with_v2({"name": "tier", "type": ["null", "string"], "default": None}), names, registry_client(url), url
    )
    assert [v.version for v in catalog.versions("consent_change")] == list(range(1, new + 1))
    assert registry_client(url).get_versions(value_subject(names.consents)) == list(range(1, new + 1))


def test_a_command_stops_with_one_line_when_the_registry_refuses_the_contract(
    reg_settings: Settings, tmp_path: Path
) -> None:
    """Another producer's version is on the subject: the repo's cannot read its data, nothing is sent."""
    names = TopicNames(reg_settings.kafka.topic_prefix)
    create_topics(reg_settings)
    registry = registry_client(reg_settings.kafka.schema_registry_url or "")
    subject = value_subject(names.consents)
    theirs = json.loads(json.dumps(SchemaCatalog.bundled().latest("consent_change").raw))
    for field in theirs["fields"]:
        if field["name"] == "card_id":
            field["type"] = "long"  # a long card id cannot be read as the repo's string
    registry.register_schema(subject, Schema(json.dumps(theirs), "AVRO"))
    registry.set_compatibility(subject, "BACKWARD")

    line = {
        "card_id": "6390000000001",
        "event_time": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "product_data_marketing": True,
        "electronic_marketing": False,
    }
    path = tmp_path / "consents.jsonl"
    path.write_text(json.dumps(line) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", "produce", str(path), "--kind", "consent"],
        env=env_for(reg_settings),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    # stderr holds the endpoints the command uses, then the error: one line.
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"refuses consent_change v1 (consent_change/v1.avsc) under subject '{subject}'" in errors[0]
    assert "not BACKWARD compatible" in errors[0]
    assert read_all(reg_settings, names.consents) == []

    # `schemas check` asks the registry too, and names the subject that would refuse the contract.
    check = subprocess.run(
        [sys.executable, "-m", "receiptflow", "schemas", "check"],
        env=env_for(reg_settings),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 1, check.stdout + check.stderr
    refused = " ".join(check.stderr.split())
    # The check names the newest version it would write (its ancestors are the registry's own business).
    assert f"{subject}: the registry would refuse consent_change/v2.avsc" in refused
    assert value_subject(names.checkouts) not in refused


def _schemas_check(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiptflow", "schemas", "check"],
        env=env_for(settings),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("clear", ["delete the subject", "compatibility NONE"])
def test_an_upgrade_clears_the_old_analytics_basket_subject_before_the_first_cell(
    reg_settings: Settings, clear: str
) -> None:
    """Before the analytics cells, purchases.analytics carried analytics_basket: its subject refuses
    analytics_cell until it is deleted or set to NONE, with the HTTP calls docs/operations.md gives."""
    names = TopicNames(reg_settings.kafka.topic_prefix)
    url = reg_settings.kafka.schema_registry_url or ""
    registry = registry_client(url)
    subject = value_subject(names.purchases_analytics)
    bundled = SchemaCatalog.bundled()
    # What the release before left in the registry: analytics_basket v1 and v2 under BACKWARD.
    old = RegistrySync(registry, url).register(subject, bundled.versions("analytics_basket"))
    refused = _schemas_check(reg_settings)
    assert refused.returncode == 1
    assert f"{subject}: the registry would refuse analytics_cell/v1.avsc" in " ".join(refused.stderr.split())

    requests: list[urllib.request.Request]
    if clear == "delete the subject":
        # curl -X DELETE $URL/subjects/purchases.analytics-value, then the same with ?permanent=true: Apicurio
        # still checks new versions against soft-deleted ones.
        requests = [
            urllib.request.Request(f"{url}/subjects/{subject}", method="DELETE"),
            urllib.request.Request(f"{url}/subjects/{subject}?permanent=true", method="DELETE"),
        ]
    else:  # curl -X PUT -H 'Content-Type: ...' -d '{"compatibility": "NONE"}' $URL/config/purchases.analytics-value
        requests = [
            urllib.request.Request(
                f"{url}/config/{subject}",
                data=json.dumps({"compatibility": "NONE"}).encode(),
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
                method="PUT",
            )
        ]

    def clear_subject() -> None:
        for request in requests:
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
        cleared = _schemas_check(reg_settings)
        assert cleared.returncode == 0, cleared.stdout + cleared.stderr

    clear_subject()
    if clear == "compatibility NONE":
        # A process of the earlier release starting now undoes it: it finds its analytics_basket versions
        # and sets the subject to BACKWARD again. (After a permanent delete, this Apicurio gives the old ids
        # back without making the subject again.)
        RegistrySync(registry, url).register(subject, bundled.versions("analytics_basket"))
        with pytest.raises(IncompatibleSchemaError, match="delete the subject or set its compatibility to NONE"):
            codec_for(reg_settings)
        clear_subject()

    # The next process registers analytics_cell there, and the subject is BACKWARD again for its evolution.
    codec = codec_for(reg_settings)
    latest = registry.get_latest_version(subject)
    assert json.loads(latest.schema.schema_str or "")["name"] == "AnalyticsCell"
    assert latest.schema_id == codec.catalog.latest("analytics_cell").schema_id
    assert registry.get_compatibility(subject) == "BACKWARD"
    assert _schemas_check(reg_settings).returncode == 0
    # The old baskets left on purchases.analytics keep an id the codec knows (analytics_basket is on
    # purchases.baskets now, one id per schema text): the sink dead-letters them as baskets, not as unknown.
    record = codec.encode("analytics_basket", basket().to_avro())
    assert schema_id_of(record) == old[2]
    assert codec.decode(record, expect="analytics_basket").value["chain"] == "SOKOS"


def test_the_embedded_registry_keeps_its_ids_across_a_restart(tmp_path: Path) -> None:
    """``stack down`` / ``up`` of the registry: subjects and ids are still there, nothing is left running."""
    url = f"http://127.0.0.1:{free_port()}{API_PATH}"
    own = EmbeddedRegistry(
        Settings(local={"data_dir": tmp_path / "data"}, kafka={"schema_registry_url": url}), ready_timeout=180
    )
    assert own.status().state == "stopped"
    try:
        started = own.up()
        assert (started.state, started.endpoint) == ("running", url)
        assert own.up().pid == started.pid  # a second up leaves the running one alone
        before = registry_catalog(SchemaCatalog.bundled(), TopicNames("restart."), registry_client(url), url)
        pid = started.pid
        assert own.down().state == "stopped"
        assert pid is not None and gone(pid)
        own.up()
        subject = value_subject("restart.checkouts")
        assert registry_client(url).get_latest_version(subject).schema_id == before.latest("checkout").schema_id
        again = registry_catalog(SchemaCatalog.bundled(), TopicNames("restart."), registry_client(url), url)
        assert [v.schema_id for s in again.subjects() for v in again.versions(s)] == [
            v.schema_id for s in before.subjects() for v in before.versions(s)
        ]
    finally:
        own.down()
    assert own.status().state == "stopped"
