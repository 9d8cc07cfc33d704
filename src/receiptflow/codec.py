"""Avro codec: the versioned schemas in ``schemas/`` and the Confluent wire format.

Every Kafka value this project writes is ``0x00`` (magic byte) + a 4-byte big-endian schema id +
the Avro binary body (fastavro ``schemaless_writer``), the framing Confluent's serializers use, so a
schema registry and registry-aware consumers plug in without a format change.

Schema ids come from a :class:`SchemaIdResolver`. Without a registry, :class:`RepoSchemaIds` reads
``schemas/ids.json``: every ``(subject, version)`` kept in the repo has a fixed, never-reused id; with
one, :func:`receiptflow.registry.codec_for` gives the codec the catalogue keyed by the registry's ids. A
reader always decodes with the *newest* version of the writer's subject as the reader schema
(Avro schema resolution), so consumers keep working while producers still write older versions.

fastavro is the hot path here; the Apache reference implementation (``avro``) judges schema
compatibility (:mod:`receiptflow.schemacheck`) and is checked against fastavro in the interoperability tests.

Splicing (writing a record in parts, reusing bytes already encoded) is in :mod:`receiptflow.avro_splice`;
:class:`Codec` offers it only where the schemas in hand allow it.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

import fastavro
from fastavro.types import Schema

from .avro_splice import BasketLayout, LinesSplit, PurchaseLayout, basket_layout, lines_split, purchase_layout
from .errors import DecodeError, SchemaError

MAGIC = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size
T = TypeVar("T")


@dataclass(frozen=True)  # no slots: cached_property needs the instance __dict__
class SchemaVersion:
    """One ``.avsc`` file of one subject."""

    schema_id: int
    subject: str
    version: int
    path: str
    raw: Mapping[str, Any]

    @cached_property
    def parsed(self) -> Schema:
        # _write_hint=False keeps the parsed form usable as both writer and reader schema.
        return fastavro.parse_schema(dict(self.raw), _write_hint=False)

    @cached_property
    def fast(self) -> Schema:
        # Marked as parsed, so fastavro does not parse it again on every call (about 1.6x faster
        # encoding and decoding); used where no schema resolution is involved.
        return fastavro.parse_schema(dict(self.raw))


class SchemaIdResolver(Protocol):
    """Where schema ids come from: the repo's ``ids.json`` or a schema registry."""

    def id_for(self, subject: str, version: int) -> int: ...


class SchemaCatalog:
    """Every schema version kept in a schemas directory, indexed by id and by subject."""

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        self._by_id: dict[int, SchemaVersion] = {}
        self._by_subject: dict[str, list[SchemaVersion]] = {}
        for v in versions:
            if v.schema_id in self._by_id:
                raise SchemaError(f"schema id {v.schema_id} is used twice ({v.path})")
            self._by_id[v.schema_id] = v
            self._by_subject.setdefault(v.subject, []).append(v)
        for subject, vs in self._by_subject.items():
            vs.sort(key=lambda x: x.version)
            numbers = [x.version for x in vs]
            if numbers != list(range(1, len(vs) + 1)):
                raise SchemaError(f"subject {subject!r} has versions {numbers}, expected 1..{len(vs)}")

    @classmethod
    def from_dir(cls, directory: Path) -> SchemaCatalog:
        """Load ``ids.json`` and the ``.avsc`` files it names from a directory."""
        ids_file = directory / "ids.json"
        try:
            index = json.loads(ids_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"cannot read {ids_file}: {exc}") from exc
        versions = []
        for entry in index["schemas"]:
            path = directory / entry["file"]
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SchemaError(f"cannot read schema {path}: {exc}") from exc
            versions.append(SchemaVersion(entry["id"], entry["subject"], entry["version"], entry["file"], raw))
        catalog = cls(versions)
        for v in versions:
            try:
                _ = v.parsed
            except Exception as exc:  # fastavro raises several unrelated types for a bad schema
                raise SchemaError(f"{v.path}: not a valid Avro schema: {exc}") from exc
        return catalog

    @classmethod
    def bundled(cls) -> SchemaCatalog:
        """The schemas shipped with the package (``schemas/`` of the repo)."""
        return cls.from_dir(Path(str(resources.files("receiptflow.schemas"))))

    def subjects(self) -> list[str]:
        return sorted(self._by_subject)

    def versions(self, subject: str) -> list[SchemaVersion]:
        try:
            return list(self._by_subject[subject])
        except KeyError as exc:
            raise SchemaError(f"unknown subject {subject!r}") from exc

    def latest(self, subject: str) -> SchemaVersion:
        return self.versions(subject)[-1]

    def by_id(self, schema_id: int) -> SchemaVersion:
        try:
            return self._by_id[schema_id]
        except KeyError as exc:
            raise DecodeError("unknown_schema_id", f"no schema with id {schema_id}") from exc


class RepoSchemaIds:
    """Schema ids as fixed in ``schemas/ids.json`` (no registry needed)."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self._catalog = catalog

    def id_for(self, subject: str, version: int) -> int:
        for v in self._catalog.versions(subject):
            if v.version == version:
                return v.schema_id
        raise SchemaError(f"subject {subject!r} has no version {version}")


@dataclass(frozen=True, slots=True)
class Decoded:
    subject: str
    writer_version: int
    value: dict[str, Any]


class Codec:
    """Encode and decode framed Avro records of the catalogue's subjects."""

    def __init__(self, catalog: SchemaCatalog | None = None, ids: SchemaIdResolver | None = None) -> None:
        self.catalog = catalog or SchemaCatalog.bundled()
        ids = ids or RepoSchemaIds(self.catalog)
        # Writers always write the newest version of a subject.
        self._writers: dict[str, tuple[bytes, Schema]] = {}
        for subject in self.catalog.subjects():
            latest = self.catalog.latest(subject)
            self._writers[subject] = (_HEADER.pack(MAGIC, ids.id_for(subject, latest.version)), latest.fast)
        # Decoding state per schema id: (subject, version, writer schema, reader schema or None when equal).
        self._readers: dict[int, tuple[str, int, Schema, Schema | None]] = {}
        self._splits: dict[int, LinesSplit | None] = {}
        self._layout = self._split_writer("purchase", purchase_layout)
        self._basket_layout = self._split_writer("analytics_basket", basket_layout)

    def _split_writer(self, subject: str, build: Callable[[bytes, Mapping[str, Any]], T | None]) -> T | None:
        if subject not in self._writers:
            return None
        return build(self._writers[subject][0], self.catalog.latest(subject).raw)

    @property
    def basket_layout(self) -> BasketLayout | None:
        """The split writer of analytics baskets, when the newest basket schema ends with ``lines``."""
        return self._basket_layout

    @property
    def purchase_layout(self) -> PurchaseLayout | None:
        """The split writer of purchases, when the newest purchase schema has ``items`` then ``groups``."""
        return self._layout

    def writer(self, subject: str) -> tuple[bytes, Mapping[str, Any]]:
        """The header (magic byte and schema id) and the ``.avsc`` document records of ``subject`` are written with."""
        try:
            header, _ = self._writers[subject]
        except KeyError as exc:
            raise SchemaError(f"unknown subject {subject!r}") from exc
        return header, self.catalog.latest(subject).raw

    def splices_lines(self, schema_id: int) -> bool:
        """Whether a purchase may carry the encoded ``lines`` of a checkout of this writer schema as its items."""
        return self._lines_split(schema_id) is not None

    def _lines_split(self, schema_id: int) -> LinesSplit | None:
        if schema_id in self._splits:
            return self._splits[schema_id]
        split = None
        subject, version, _, reader = self._reader(schema_id)
        # Only without schema resolution: then the writer's layout is what the reader gets.
        if subject == "checkout" and reader is None and self._layout is not None:
            split = lines_split(subject, version, self.catalog.by_id(schema_id).raw, self._layout.items_type)
        self._splits[schema_id] = split
        return split

    def decode_checkout(self, data: bytes | None) -> tuple[Decoded, bytes | None]:
        """Decode a checkout, with the encoded bytes of its ``lines`` array when a purchase can reuse them.

        The second item is ``None`` when the writer schema does not allow it (then decoding is the
        ordinary :meth:`decode`); errors are the same as :meth:`decode` raises.
        """
        if data is None or len(data) < HEADER_SIZE or data[0] != MAGIC:
            return self.decode(data, expect="checkout"), None
        _, schema_id = _HEADER.unpack_from(data)
        try:
            split = self._lines_split(schema_id)
        except DecodeError:
            split = None
        if split is None:
            return self.decode(data, expect="checkout"), None
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            value: Any = fastavro.schemaless_reader(buf, split.head, None)
            start = buf.tell()
            value["lines"] = fastavro.schemaless_reader(buf, split.lines, None)
        except Exception as exc:  # the same failures as decode(): truncated or garbage bodies
            raise DecodeError("undecodable", f"cannot decode 'checkout' body: {_described(exc)}") from exc
        if buf.tell() != len(data):
            raise DecodeError("undecodable", f"{len(data) - buf.tell()} trailing bytes after the record")
        return Decoded(split.subject, split.version, value), data[start:]

    def encode(self, subject: str, record: Mapping[str, Any]) -> bytes:
        try:
            header, schema = self._writers[subject]
        except KeyError as exc:
            raise SchemaError(f"unknown subject {subject!r}") from exc
        buf = io.BytesIO()
        buf.write(header)
        try:
            fastavro.schemaless_writer(buf, schema, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"record does not fit schema {subject!r}: {exc}") from exc
        return buf.getvalue()

    def _reader(self, schema_id: int) -> tuple[str, int, Schema, Schema | None]:
        entry = self._readers.get(schema_id)
        if entry is None:
            writer = self.catalog.by_id(schema_id)
            latest = self.catalog.latest(writer.subject)
            if latest.schema_id == writer.schema_id:
                entry = (writer.subject, writer.version, writer.fast, None)
            else:
                entry = (writer.subject, writer.version, writer.parsed, latest.parsed)
            self._readers[schema_id] = entry
        return entry

    def decode(self, data: bytes | None, expect: str | None = None) -> Decoded:
        """Decode a framed record; ``expect`` rejects records of another subject."""
        if data is None:
            raise DecodeError("undecodable", "record has no value (tombstone)")
        if len(data) < HEADER_SIZE or data[0] != MAGIC:
            raise DecodeError("undecodable", "not Confluent-framed Avro (bad magic byte or too short)")
        _, schema_id = _HEADER.unpack_from(data)
        subject, version, writer, reader = self._reader(schema_id)
        if expect is not None and subject != expect:
            raise DecodeError("wrong_subject", f"expected a {expect!r} record, got {subject!r}")
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            value = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # truncated or garbage bodies raise EOFError, ValueError, IndexError...
            raise DecodeError("undecodable", f"cannot decode {subject!r} body: {_described(exc)}") from exc
        if buf.tell() != len(data):
            raise DecodeError("undecodable", f"{len(data) - buf.tell()} trailing bytes after the record")
        if not isinstance(value, dict):
            raise DecodeError("undecodable", "record body is not an Avro record")
        return Decoded(subject, version, value)


# fastavro names the buffer it read from ("cannot read double from <_io.BytesIO object at 0x...>").
_BUFFER_REPR = re.compile(r" from <[\w.]+ object at 0x[0-9a-fA-F]+>")


def _described(exc: Exception) -> str:
    """A decoding failure in words that do not change from run to run (no object addresses)."""
    return _BUFFER_REPR.sub("", str(exc))


def schema_id_of(data: bytes) -> int:
    if len(data) < HEADER_SIZE or data[0] != MAGIC:
        raise DecodeError("undecodable", "not Confluent-framed Avro")
    return int(_HEADER.unpack_from(data)[1])
