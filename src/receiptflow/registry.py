"""Schema ids from a Confluent-compatible schema registry (``RECEIPTFLOW_SCHEMA_REGISTRY_URL``).

Without the setting, schema ids come from ``schemas/ids.json`` (:class:`~receiptflow.codec.RepoSchemaIds`).
With it, every process that builds a codec through :func:`codec_for` first brings the registry in
line with the repo's contract, through confluent-kafka's ``SchemaRegistryClient``:

* subjects follow Confluent's topic-name strategy: the values of topic ``T`` are subject ``T-value``
  (the topic prefix included), so ``purchase`` is registered under each of its three topics;
* each subject is set to BACKWARD compatibility, then every version the repo keeps is registered
  under it, oldest first. Registering is idempotent (the same schema gets the same id back), so every
  producer and consumer may do it at start, in any order; a version the registry refuses as
  incompatible stops the process with :class:`~receiptflow.errors.IncompatibleSchemaError`;
* the codec then writes and reads with the registry's ids: :func:`registry_catalog` is the repo's
  catalogue keyed by them. A record whose id the repo's schemas do not have is refused as now
  (``unknown_schema_id``).

A registry assigns one id per schema text (Confluent's global ids, Apicurio's content ids), so a
version registered under several subjects has one id; a registry that gave it several is refused.
Records written with the repo's ids before a registry was switched on keep those ids: a topic is
read across the switch only when the registry's ids equal the repo's (a fresh registry filled by
``receiptflow`` in the order of ``ids.json`` does not guarantee that; see docs/operations.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from .codec import Codec, SchemaCatalog, SchemaVersion
from .config import Settings
from .errors import IncompatibleSchemaError, SchemaError
from .topics import CATALOGUE, TopicNames

COMPATIBILITY = "BACKWARD"
# What to do when the registry refuses a version: the repo's first version of a subject meets versions that
# another record registered there (the topic carried another schema before), a later one an evolution.
_REGISTERED_ELSEWHERE = (
    "the subject holds another record's versions: if nothing writes them any more (analytics_basket on "
    "purchases.analytics before the analytics cells), delete the subject or set its compatibility to NONE "
    "(docs/operations.md), else find who registered them"
)
_EVOLVE = "give new fields defaults and keep old ones (receiptflow schemas check shows the problem)"
# Apicurio answers an incompatible version with HTTP 409 and error_code 0, Confluent with 409/409.
_CONFLICT = 409


def value_subject(topic: str) -> str:
    """The registry subject of a topic's values under the topic-name strategy."""
    return f"{topic}-value"


def topic_subjects(names: TopicNames, catalog: SchemaCatalog) -> list[tuple[str, str]]:
    """``(registry subject, repo subject)`` for every topic whose values are one of the repo's subjects."""
    known = set(catalog.subjects())
    return [(value_subject(names.physical(t.name)), t.subject) for t in CATALOGUE if t.subject in known]


def _schema(version: SchemaVersion) -> Schema:
    return Schema(json.dumps(version.raw, sort_keys=True), "AVRO")


def _brief(text: object, limit: int = 300) -> str:
    """A registry's message on one line, cut to ``limit`` characters (Confluent's can be long)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _unreachable(url: str, what: str, exc: Exception) -> SchemaError:
    return SchemaError(
        f"the schema registry at {url} cannot be reached to {what} ({type(exc).__name__}: {exc}); "
        "start it (receiptflow stack up --with-registry) or fix RECEIPTFLOW_SCHEMA_REGISTRY_URL"
    )


def _where(exc: SchemaRegistryError) -> str:
    return f"HTTP {exc.http_status_code}, error {exc.error_code}: {_brief(exc.error_message)}"


class RegistrySync:
    """Registers the repo's schema versions under their topics' subjects and collects the ids."""

    def __init__(self, client: Any, url: str) -> None:
        # Any: a SchemaRegistryClient, or an object with the same register/compatibility methods (tests).
        self.client = client
        self.url = url

    def _register(self, subject: str, version: SchemaVersion, first: bool) -> int:
        try:
            return int(self.client.register_schema(subject, _schema(version)))
        except SchemaRegistryError as exc:
            if exc.http_status_code == _CONFLICT:
                raise IncompatibleSchemaError(
                    f"the schema registry refuses {version.subject} v{version.version} ({version.path}) under "
                    f"subject {subject!r}: not {COMPATIBILITY} compatible with the versions registered there "
                    f"({_brief(exc.error_message)}); {_REGISTERED_ELSEWHERE if first else _EVOLVE}"
                ) from exc
            raise SchemaError(
                f"the schema registry at {self.url} refused {version.path} under {subject!r} ({_where(exc)})"
            ) from exc
        except Exception as exc:  # connection refused, timeouts, TLS: the http client's own types
            raise _unreachable(self.url, f"register {version.path}", exc) from exc

    def _set_compatibility(self, subject: str) -> None:
        try:
            self.client.set_compatibility(subject, COMPATIBILITY)
        except SchemaRegistryError as exc:
            raise SchemaError(
                f"the schema registry at {self.url} refused {COMPATIBILITY} compatibility for {subject!r} "
                f"({_where(exc)})"
            ) from exc
        except Exception as exc:
            raise _unreachable(self.url, f"configure {subject!r}", exc) from exc

    def register(self, subject: str, versions: Iterable[SchemaVersion]) -> dict[int, int]:
        """Register ``versions`` (oldest first) under ``subject`` with BACKWARD compatibility: version -> id."""
        ids: dict[int, int] = {}
        for i, version in enumerate(versions):
            ids[version.version] = self._register(subject, version, first=i == 0)
            if i == 0:
                # Set after the first registration: a subject must exist before some registries
                # (Apicurio) accept its configuration; the first version needs no check anyway.
                self._set_compatibility(subject)
        return ids


def registry_catalog(catalog: SchemaCatalog, names: TopicNames, client: Any, url: str) -> SchemaCatalog:
    """``catalog`` keyed by the ids the registry gives its versions, after registering them."""
    sync = RegistrySync(client, url)
    ids: dict[tuple[str, int], tuple[int, str]] = {}
    for registry_subject, repo_subject in topic_subjects(names, catalog):
        for version, schema_id in sync.register(registry_subject, catalog.versions(repo_subject)).items():
            seen = ids.setdefault((repo_subject, version), (schema_id, registry_subject))
            if seen[0] != schema_id:
                raise SchemaError(
                    f"the schema registry at {url} gave {repo_subject} v{version} id {seen[0]} under "
                    f"{seen[1]!r} and id {schema_id} under {registry_subject!r}; receiptflow needs one id per "
                    "schema (Confluent's global ids, Apicurio's content ids)"
                )
    # Subjects no topic carries keep no id from the registry: the codec cannot write them then.
    return SchemaCatalog(
        replace(v, schema_id=ids[(s, v.version)][0])
        for s in catalog.subjects()
        for v in catalog.versions(s)
        if (s, v.version) in ids
    )


def check_against_registry(catalog: SchemaCatalog, names: TopicNames, client: Any, url: str) -> list[str]:
    """Subjects whose registered versions the repo's newest version could not join (nothing is registered).

    The registry's own compatibility endpoint answers for each topic subject; a subject that does
    not exist yet accepts anything.
    """
    refused: list[str] = []
    for registry_subject, repo_subject in topic_subjects(names, catalog):
        latest = catalog.latest(repo_subject)
        try:
            ok = bool(client.test_compatibility(registry_subject, _schema(latest)))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:  # no such subject (or no version yet): nothing to break
                continue
            raise SchemaError(
                f"the schema registry at {url} failed to test {registry_subject!r} ({_where(exc)})"
            ) from exc
        except Exception as exc:
            raise _unreachable(url, f"test {registry_subject!r}", exc) from exc
        if not ok:
            refused.append(
                f"{registry_subject}: the registry would refuse {latest.path} ({COMPATIBILITY} against what it holds)"
            )
    return refused


def registry_client(url: str) -> SchemaRegistryClient:
    # new_client: a mock:// URL gives confluent-kafka's in-process mock, anything else the HTTP client.
    return SchemaRegistryClient.new_client({"url": url})


def codec_for(settings: Settings, catalog: SchemaCatalog | None = None) -> Codec:
    """The codec of this deployment: the repo's ids, or the registry's when one is configured."""
    catalog = catalog or SchemaCatalog.bundled()
    url = settings.kafka.schema_registry_url
    if not url:
        return Codec(catalog)
    names = TopicNames(settings.kafka.topic_prefix)
    return Codec(registry_catalog(catalog, names, registry_client(url), url))
