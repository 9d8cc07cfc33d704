"""The session's schema registry: ``schema_registry`` (re-exported by conftest.py).

``RECEIPTFLOW_TEST_SCHEMA_REGISTRY_URL`` when given (checked to answer the Confluent API), else the
embedded Apicurio Registry of ``receiptflow stack up --with-registry`` on a free port, built by Maven
into the normal cache dir on first use. Started only for the tests that ask for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry import Schema

from receiptflow.config import Settings
from receiptflow.registry import registry_client
from receiptflow.stack import free_port
from receiptflow.stack.registry import API_PATH, EmbeddedRegistry, registry_answers, registry_version

from ..conftest import BACKENDS
from .backends import embedded_server


@pytest.fixture(scope="session")
def schema_registry(stack_settings: Settings) -> Iterator[str]:
    """The Confluent-API URL of a real schema registry for the whole session."""
    given = os.environ.get("RECEIPTFLOW_TEST_SCHEMA_REGISTRY_URL")
    if given:
        if not registry_answers(given, timeout=5):
            pytest.fail(f"RECEIPTFLOW_TEST_SCHEMA_REGISTRY_URL={given} does not answer the registry API")
        BACKENDS["Schema registry"] = f"{given} (given)"
        _offset_ids(given)
        yield given
        return
    url = f"http://127.0.0.1:{free_port()}{API_PATH}"
    registry = EmbeddedRegistry(
        stack_settings.model_copy(update={"kafka": {"schema_registry_url": url}}), ready_timeout=180
    )
    with embedded_server("schema registry", registry):
        BACKENDS["Schema registry"] = f"{url} (embedded Apicurio Registry {registry_version()})"
        _offset_ids(url)
        yield url


def _offset_ids(url: str, n: int = 10) -> None:
    """Take the registry's first ids, so its ids for the contract differ from ``schemas/ids.json``.

    A fresh registry numbers schemas from 1, as ``ids.json`` does: without this a test could pass
    while the codec still used the repo's ids.
    """
    client = registry_client(url)
    for i in range(n):
        record = {"type": "record", "name": f"IdOffset{i}", "namespace": "receiptflow.tests", "fields": []}
        client.register_schema(f"receiptflow-tests-id-offset-{i}-value", Schema(json.dumps(record), "AVRO"))
