"""Backward-compatibility check of the Avro contract in ``schemas/``.

Rule: the newest version of every subject must read data written with *every* version kept in the
repo (Avro schema resolution, as a consumer upgraded before its producers would). The check is
data-driven: for each older writer version it encodes that version's hand-written samples
(``<subject>/v<N>.samples.json``) plus a seeded batch of generated records that exercise every
branch of unions and every enum symbol, and decodes them with the newest schema as reader. Any
resolution failure (a new field without default, a removed enum symbol, a changed type, a renamed
record without alias) is reported per subject and version.

``receiptflow schemas check [DIR]`` runs it; CI runs it through the test suite, and a test shows it
failing on a deliberately broken copy of the schemas.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.utils import generate_many

from .codec import SchemaCatalog, SchemaVersion
from .errors import IncompatibleSchemaError, SchemaError


@dataclass(frozen=True, slots=True)
class Incompatibility:
    subject: str
    writer_version: int
    reader_version: int
    error: str

    def __str__(self) -> str:
        return (
            f"{self.subject}: v{self.reader_version} cannot read data written with v{self.writer_version}: {self.error}"
        )


def _convert_bytes(schema: Any, value: Any, named: dict[str, Any]) -> Any:
    """Samples are JSON; Avro ``bytes`` are written there as ISO-8859-1 strings (the Avro JSON rule)."""
    if isinstance(schema, str):
        if schema == "bytes" and isinstance(value, str):
            return value.encode("latin-1")
        if schema in named:
            return _convert_bytes(named[schema], value, named)
        return value
    if isinstance(schema, list):
        if value is None:
            return None
        for branch in schema:
            if branch != "null":
                return _convert_bytes(branch, value, named)
        return value
    kind = schema.get("type")
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: _convert_bytes(f["type"], value.get(f["name"]), named) for f in schema["fields"]}
    if kind == "array":
        return [_convert_bytes(schema["items"], v, named) for v in value]
    if kind == "map":
        return {k: _convert_bytes(schema["values"], v, named) for k, v in value.items()}
    if kind in ("enum", "fixed"):
        named[schema["name"]] = schema
        return value
    return _convert_bytes(kind, value, named)


def load_samples(directory: Path, version: SchemaVersion) -> list[dict[str, Any]]:
    """The hand-written sample records of one schema version (empty when the file is absent)."""
    path = directory / Path(version.path).with_suffix(".samples.json")
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SchemaError(f"{path}: not JSON: {exc}") from exc
    return [_convert_bytes(dict(version.raw), r, {}) for r in raw]


def _records(directory: Path, version: SchemaVersion, generated: int, seed: int) -> Iterator[dict[str, Any]]:
    yield from load_samples(directory, version)
    # fastavro's generator draws from the global `random`; seed it so a failure is reproducible.
    state = random.getstate()
    random.seed(seed)
    try:
        yield from generate_many(version.parsed, generated)
    finally:
        random.setstate(state)


def check_backward(directory: Path, generated: int = 200, seed: int = 20101) -> list[Incompatibility]:
    """Every incompatibility in ``directory`` (empty list: the contract is backward compatible)."""
    catalog = SchemaCatalog.from_dir(directory)
    problems: list[Incompatibility] = []
    for subject in catalog.subjects():
        reader = catalog.latest(subject)
        for writer in catalog.versions(subject):
            for i, record in enumerate(_records(directory, writer, generated, seed)):
                buf = io.BytesIO()
                try:
                    fastavro.schemaless_writer(buf, writer.parsed, record)
                except Exception as exc:  # noqa: BLE001 - a sample that does not fit its own schema
                    problems.append(
                        Incompatibility(subject, writer.version, writer.version, f"sample {i} invalid: {exc}")
                    )
                    break
                buf.seek(0)
                try:
                    fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
                except Exception as exc:  # noqa: BLE001 - fastavro raises SchemaResolutionError and others
                    problems.append(Incompatibility(subject, writer.version, reader.version, str(exc)))
                    break
    return problems


def assert_backward_compatible(directory: Path) -> None:
    problems = check_backward(directory)
    if problems:
        raise IncompatibleSchemaError("; ".join(str(p) for p in problems))
