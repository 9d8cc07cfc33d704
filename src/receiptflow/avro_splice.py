"""Avro records written and read in parts, for the router's hot path.

Avro binary is the plain concatenation of a record's field encodings, so a record can be written in
parts. The router uses that: a checkout's ``lines`` array (its last field) is laid out exactly like
a purchase's ``items``, so :meth:`~receiptflow.codec.Codec.decode_checkout` also hands back the
encoded bytes of that array (read with a :class:`LinesSplit`), and :class:`PurchaseLayout` writes a
purchase as head + those bytes + groups + tail without encoding the lines again;
:class:`BasketLayout` writes an analytics basket as head + lines encoded one by one. Each is built
here only when the schemas in hand allow it (checked field by field; the builders return ``None``
otherwise) and the callers then take the ordinary path.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.types import Schema

from .errors import SchemaError

EMPTY_ARRAY = b"\x00"  # an Avro array with no items: just the end-of-blocks marker


def _shape(schema: Any) -> Any:
    """A schema without its docs, defaults and namespaces: what decides the binary layout."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in ("doc", "default", "namespace", "aliases")}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


def _fields(record: Mapping[str, Any]) -> list[Any]:
    return [_shape({"name": f["name"], "type": f["type"]}) for f in record["fields"]]


def _part(raw: Mapping[str, Any], name: str, fields: list[Any]) -> Schema:
    """The record schema ``raw`` cut down to ``fields``, named ``name``."""
    base = {k: v for k, v in raw.items() if k not in ("fields", "doc")}
    return fastavro.parse_schema({**base, "name": name, "fields": fields})


def _write(schema: Schema, value: Any, subject: str, what: str) -> bytes:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, schema, value)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SchemaError(f"{what} does not fit schema {subject!r}: {exc}") from exc
    return buf.getvalue()


def _last_is_array(raw: Mapping[str, Any], name: str) -> bool:
    last = raw["fields"][-1] if raw.get("fields") else None
    return last is not None and last["name"] == name and isinstance(last["type"], dict)


@dataclass(frozen=True)
class LinesSplit:
    """How to decode one checkout writer schema in two parts: the fields before ``lines``, then ``lines``."""

    subject: str
    version: int
    head: Schema
    lines: Schema


def lines_split(subject: str, version: int, raw: Mapping[str, Any], items_type: Mapping[str, Any]) -> LinesSplit | None:
    """The split of a checkout writer schema whose ``lines`` are laid out like a purchase's ``items``."""
    if not _last_is_array(raw, "lines"):
        return None
    lines_type = raw["fields"][-1]["type"]
    if not isinstance(lines_type.get("items"), dict) or _fields(lines_type["items"]) != _fields(items_type["items"]):
        return None
    head = _part(raw, "CheckoutHead", list(raw["fields"][:-1]))
    return LinesSplit(subject, version, head, fastavro.parse_schema(lines_type))


class PurchaseLayout:
    """Writes the newest ``purchase`` schema in parts: head fields, items, groups, tail fields.

    ``items`` and ``groups`` arrive already encoded (an empty array is ``EMPTY_ARRAY``); the result is
    byte for byte what ``Codec.encode("purchase", ...)`` writes for the same record.
    """

    EMPTY_ARRAY = EMPTY_ARRAY

    def __init__(self, header: bytes, raw: Mapping[str, Any], items_at: int) -> None:
        fields = list(raw["fields"])
        self.header = header
        self.items_type = fields[items_at]["type"]
        self._head = _part(raw, "PurchaseHead", fields[:items_at])
        self._groups = fastavro.parse_schema(fields[items_at + 1]["type"])
        self._tail = _part(raw, "PurchaseTail", fields[items_at + 2 :])

    def head(self, record: Mapping[str, Any]) -> bytes:
        return _write(self._head, record, "purchase", "purchase head")

    def groups(self, groups: list[dict[str, Any]]) -> bytes:
        return _write(self._groups, groups, "purchase", "purchase groups") if groups else EMPTY_ARRAY

    def tail(self, record: Mapping[str, Any]) -> bytes:
        return _write(self._tail, record, "purchase", "purchase tail")

    def join(self, head: bytes, items: bytes, groups: bytes, tail: bytes) -> bytes:
        return b"".join((self.header, head, items, groups, tail))


def purchase_layout(header: bytes, raw: Mapping[str, Any]) -> PurchaseLayout | None:
    """The split writer of a purchase schema that has ``items`` directly followed by ``groups``."""
    names = [f["name"] for f in raw["fields"]]
    if "items" not in names or names.index("items") + 1 >= len(names) or names[names.index("items") + 1] != "groups":
        return None
    return PurchaseLayout(header, raw, names.index("items"))


class BasketLayout:
    """Writes the newest ``analytics_basket`` schema in parts: the head fields, then each line.

    A line is encoded on its own (:meth:`line`), so a caller may remember the bytes of lines it sees
    again; :meth:`join` frames them as the one-block array fastavro writes. The result is byte for
    byte what ``Codec.encode("analytics_basket", ...)`` writes for the same record.
    """

    def __init__(self, header: bytes, raw: Mapping[str, Any]) -> None:
        fields = list(raw["fields"])
        self.header = header
        self._head = _part(raw, "AnalyticsBasketHead", fields[:-1])
        self._line = fastavro.parse_schema(fields[-1]["type"]["items"])

    def head(self, record: Mapping[str, Any]) -> bytes:
        return _write(self._head, record, "analytics_basket", "basket head")

    def line(self, record: Mapping[str, Any]) -> bytes:
        return _write(self._line, record, "analytics_basket", "basket line")

    def join(self, head: bytes, lines: list[bytes]) -> bytes:
        if not lines:
            return b"".join((self.header, head, EMPTY_ARRAY))
        # One block: its item count (a zigzag varint, positive here), the items, then the end marker.
        return b"".join((self.header, head, _varint(len(lines) << 1), *lines, EMPTY_ARRAY))


def basket_layout(header: bytes, raw: Mapping[str, Any]) -> BasketLayout | None:
    """The split writer of an analytics basket schema whose last field is the ``lines`` array."""
    return BasketLayout(header, raw) if _last_is_array(raw, "lines") else None


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
