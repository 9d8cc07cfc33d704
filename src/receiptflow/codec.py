"""Avro codec: the versioned schemas in ``schemas/`` and the Confluent wire format.

Every Kafka value this project writes is ``0x00`` (magic byte) + a 4-byte big-endian schema id +
the Avro binary body (fastavro ``schemaless_writer``), the framing Confluent's serializers use, so a
schema registry and registry-aware consumers plug in without a format change.

Schema ids come from a :class:`SchemaIdResolver`. Without a registry, :class:`RepoSchemaIds` reads
``schemas/ids.json``: every ``(subject, version)`` kept in the repo has a fixed, never-reused id. A
reader always decodes with the *newest* version of the writer's subject as the reader schema
(Avro schema resolution), so consumers keep working while producers still write older versions.

fastavro is the hot path here; the Apache reference implementation (avro-python3) is used only in
the interoperability tests.

Splicing. Avro binary is the plain concatenation of a record's field encodings, so a record can be
written in parts. The router uses that: a checkout's ``lines`` array (its last field) is laid out
exactly like a purchase's ``items``, so :meth:`Codec.decode_checkout` also hands back the encoded
bytes of that array, and :class:`PurchaseLayout` writes a purchase as head + those bytes + groups +
tail without encoding the lines again. Both are offered only when the schemas in hand allow it
(checked field by field); otherwise the callers take the ordinary path.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.types import Schema

from .errors import DecodeError, SchemaError

MAGIC = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size


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
        self._splits: dict[int, _LinesSplit | None] = {}
        self._layout = self._purchase_layout()
        self._basket_layout = self._make_basket_layout()

    def _make_basket_layout(self) -> BasketLayout | None:
        if "analytics_basket" not in self._writers:
            return None
        raw = self.catalog.latest("analytics_basket").raw
        last = raw["fields"][-1] if raw.get("fields") else None
        if last is None or last["name"] != "lines" or not isinstance(last["type"], dict):
            return None
        return BasketLayout(self._writers["analytics_basket"][0], raw)

    @property
    def basket_layout(self) -> BasketLayout | None:
        """The split writer of analytics baskets, when the newest basket schema ends with ``lines``."""
        return self._basket_layout

    def _purchase_layout(self) -> PurchaseLayout | None:
        if "purchase" not in self._writers:
            return None
        raw = self.catalog.latest("purchase").raw
        names = [f["name"] for f in raw["fields"]]
        if (
            "items" not in names
            or names.index("items") + 1 >= len(names)
            or names[names.index("items") + 1] != "groups"
        ):
            return None
        return PurchaseLayout(self._writers["purchase"][0], raw, names.index("items"))

    @property
    def purchase_layout(self) -> PurchaseLayout | None:
        """The split writer of purchases, when the newest purchase schema has ``items`` then ``groups``."""
        return self._layout

    def _lines_split(self, schema_id: int) -> _LinesSplit | None:
        if schema_id in self._splits:
            return self._splits[schema_id]
        split = None
        subject, version, _, reader = self._reader(schema_id)
        raw = self.catalog.by_id(schema_id).raw
        last = raw["fields"][-1] if raw.get("fields") else None
        if (
            subject == "checkout"
            and reader is None  # no schema resolution: the writer's layout is what the reader gets
            and self._layout is not None
            and last is not None
            and last["name"] == "lines"
            and isinstance(last["type"], dict)
            and isinstance(last["type"].get("items"), dict)
            and _fields(last["type"]["items"]) == _fields(self._layout.items_type["items"])
        ):
            base = {k: v for k, v in raw.items() if k not in ("fields", "doc")}
            split = _LinesSplit(
                subject,
                version,
                fastavro.parse_schema({**base, "name": "CheckoutHead", "fields": list(raw["fields"][:-1])}),
                fastavro.parse_schema(last["type"]),
            )
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
            raise DecodeError("undecodable", f"cannot decode 'checkout' body: {exc}") from exc
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
            raise DecodeError("undecodable", f"cannot decode {subject!r} body: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError("undecodable", f"{len(data) - buf.tell()} trailing bytes after the record")
        if not isinstance(value, dict):
            raise DecodeError("undecodable", "record body is not an Avro record")
        return Decoded(subject, version, value)


def _shape(schema: Any) -> Any:
    """A schema without its docs, defaults and namespaces: what decides the binary layout."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in ("doc", "default", "namespace", "aliases")}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


def _fields(record: Mapping[str, Any]) -> list[Any]:
    return [_shape({"name": f["name"], "type": f["type"]}) for f in record["fields"]]


@dataclass(frozen=True)
class _LinesSplit:
    """How to decode one checkout writer schema in two parts: the fields before ``lines``, then ``lines``."""

    subject: str
    version: int
    head: Schema
    lines: Schema


class PurchaseLayout:
    """Writes the newest ``purchase`` schema in parts: head fields, items, groups, tail fields.

    ``items`` and ``groups`` arrive already encoded (an empty array is ``EMPTY_ARRAY``); the result is
    byte for byte what ``Codec.encode("purchase", ...)`` writes for the same record.
    """

    EMPTY_ARRAY = b"\x00"

    def __init__(self, header: bytes, raw: Mapping[str, Any], items_at: int) -> None:
        fields = list(raw["fields"])
        base = {k: v for k, v in raw.items() if k not in ("fields", "doc")}
        self.header = header
        self.items_type = fields[items_at]["type"]
        self._head = fastavro.parse_schema({**base, "name": "PurchaseHead", "fields": fields[:items_at]})
        self._groups = fastavro.parse_schema(fields[items_at + 1]["type"])
        self._tail = fastavro.parse_schema({**base, "name": "PurchaseTail", "fields": fields[items_at + 2 :]})

    def _write(self, schema: Schema, value: Any, what: str) -> bytes:
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, schema, value)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"purchase {what} does not fit schema 'purchase': {exc}") from exc
        return buf.getvalue()

    def head(self, record: Mapping[str, Any]) -> bytes:
        return self._write(self._head, record, "head")

    def groups(self, groups: list[dict[str, Any]]) -> bytes:
        return self._write(self._groups, groups, "groups") if groups else self.EMPTY_ARRAY

    def tail(self, record: Mapping[str, Any]) -> bytes:
        return self._write(self._tail, record, "tail")

    def join(self, head: bytes, items: bytes, groups: bytes, tail: bytes) -> bytes:
        return b"".join((self.header, head, items, groups, tail))


class BasketLayout:
    """Writes the newest ``analytics_basket`` schema in parts: the head fields, then each line.

    A line is encoded on its own (:meth:`line`), so a caller may remember the bytes of lines it sees
    again; :meth:`join` frames them as the one-block array fastavro writes. The result is byte for
    byte what ``Codec.encode("analytics_basket", ...)`` writes for the same record.
    """

    def __init__(self, header: bytes, raw: Mapping[str, Any]) -> None:
        fields = list(raw["fields"])
        base = {k: v for k, v in raw.items() if k not in ("fields", "doc")}
        self.header = header
        self._head = fastavro.parse_schema({**base, "name": "AnalyticsBasketHead", "fields": fields[:-1]})
        self._line = fastavro.parse_schema(fields[-1]["type"]["items"])

    def _write(self, schema: Schema, value: Any, what: str) -> bytes:
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, schema, value)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"basket {what} does not fit schema 'analytics_basket': {exc}") from exc
        return buf.getvalue()

    def head(self, record: Mapping[str, Any]) -> bytes:
        return self._write(self._head, record, "head")

    def line(self, record: Mapping[str, Any]) -> bytes:
        return self._write(self._line, record, "line")

    def join(self, head: bytes, lines: list[bytes]) -> bytes:
        if not lines:
            return b"".join((self.header, head, PurchaseLayout.EMPTY_ARRAY))
        # One block: its item count (a zigzag varint, positive here), the items, then the end marker.
        return b"".join((self.header, head, _varint(len(lines) << 1), *lines, PurchaseLayout.EMPTY_ARRAY))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def schema_id_of(data: bytes) -> int:
    if len(data) < HEADER_SIZE or data[0] != MAGIC:
        raise DecodeError("undecodable", "not Confluent-framed Avro")
    return int(_HEADER.unpack_from(data)[1])
