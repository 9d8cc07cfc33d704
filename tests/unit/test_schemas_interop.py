"""Interoperability: every schema's samples written by fastavro read by Apache Avro, and back.

``avro`` is the Apache reference implementation (its compatibility checker judges the contract);
fastavro is what the hot path uses (avro-python3 is checked in ``test_avro_python3_interop``). Both
must agree byte for byte on the Avro binary body of every record the contract defines.
"""

from __future__ import annotations

import io
import random
from datetime import date
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from fastavro.utils import generate_many

from receiptflow.codec import SchemaCatalog, SchemaVersion
from receiptflow.schemacheck import load_samples

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
EPOCH = date(1970, 1, 1)
CATALOG = SchemaCatalog.from_dir(SCHEMAS)
VERSIONS = [v for s in CATALOG.subjects() for v in CATALOG.versions(s)]


def _ids(v: SchemaVersion) -> str:
    return f"{v.subject}-v{v.version}"


def _normalise(value: Any) -> Any:
    """Samples write timestamp-millis and dates as ints, the libraries read them as datetimes and dates.

    Compare as the ints: millis, and days since 1970-01-01.
    """
    if hasattr(value, "timestamp") and hasattr(value, "tzinfo"):
        return round(value.timestamp() * 1000)
    if isinstance(value, date):
        return (value - EPOCH).days
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _records(version: SchemaVersion) -> list[dict[str, Any]]:
    samples = load_samples(SCHEMAS, version)
    random.seed(7)
    # Generated records (all union branches, enum symbols) go through the same trip; floats are
    # compared as written since both sides use IEEE-754 doubles.
    return samples + list(generate_many(version.parsed, 25))


def _fastavro_bytes(version: SchemaVersion, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, version.parsed, record)
    return buf.getvalue()


def _apache_schema(version: SchemaVersion) -> avro.schema.Schema:
    return avro.schema.parse((SCHEMAS / version.path).read_text())


@pytest.mark.parametrize("version", VERSIONS, ids=_ids)
def test_every_schema_has_samples(version: SchemaVersion) -> None:
    assert load_samples(SCHEMAS, version), f"{version.path} needs a .samples.json beside it"


@pytest.mark.parametrize("version", VERSIONS, ids=_ids)
def test_fastavro_written_is_read_by_apache_avro(version: SchemaVersion) -> None:
    schema = _apache_schema(version)
    for record in _records(version):
        data = _fastavro_bytes(version, record)
        decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data)))
        assert _normalise(decoded) == _normalise(record)


@pytest.mark.parametrize("version", VERSIONS, ids=_ids)
def test_apache_avro_written_is_read_by_fastavro_byte_identical(version: SchemaVersion) -> None:
    schema = _apache_schema(version)
    for record in _records(version):
        plain = _normalise(record)
        # Apache Avro 1.11+ writes timestamp-millis from datetimes only: give it the record as
        # Avro itself reads it back (ints of the samples become datetimes, nothing else changes).
        typed = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(_fastavro_bytes(version, record))))
        assert _normalise(typed) == plain
        buf = io.BytesIO()
        avro.io.DatumWriter(schema).write(typed, avro.io.BinaryEncoder(buf))
        data = buf.getvalue()
        assert data == _fastavro_bytes(version, record)
        back = fastavro.schemaless_reader(io.BytesIO(data), version.parsed, None)
        assert _normalise(back) == plain
