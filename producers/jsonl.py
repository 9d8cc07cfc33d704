"""JSON Lines ingest: parse checkouts or consent changes, one per line, reporting each bad line.

The JSON shape is the Avro contract written as JSON (see the README): the same field names, event
times as ISO-8601 strings with a zone, money as integer cents. Each line yields either the parsed
record or the :class:`~receiptflow.errors.ValidationError` that explains why it was rejected, with
its 1-based line number, so a caller can send the good lines and report the bad ones.

Strings are normalised to Unicode NFC here, at the edge, so the same name typed on two keyboards is
one value downstream (the processor rejects strings that are not NFC). Fields the contract does not
know are not sent; :func:`parse_document` names them so the caller can warn instead of dropping
them silently.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..checkout_json import checkout_from_json, consent_change_from_json
from ..errors import ValidationError
from ..models import Checkout, CheckoutLine, ConsentChange

Kind = Literal["checkout", "consent"]

_KNOWN = {
    "checkout": frozenset(f.name for f in fields(Checkout)),
    # The principal is not the line's to say: the client stamps the one it writes as.
    "consent": frozenset(f.name for f in fields(ConsentChange)) - {"principal"},
}
_KNOWN_LINE = frozenset(f.name for f in fields(CheckoutLine))


@dataclass(frozen=True, slots=True)
class Parsed:
    record: Checkout | ConsentChange
    unknown_fields: tuple[str, ...] = ()


def _nfc(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, list):
        return [_nfc(v) for v in value]
    if isinstance(value, dict):
        return {k: _nfc(v) for k, v in value.items()}
    return value


def _unknown(doc: Any, kind: Kind) -> tuple[str, ...]:
    if not isinstance(doc, dict):
        return ()
    out = sorted(k for k in doc if k not in _KNOWN[kind])
    lines = doc.get("lines") if kind == "checkout" else None
    if isinstance(lines, list):
        for i, line in enumerate(lines):
            if isinstance(line, dict):
                out += [f"lines[{i}].{k}" for k in sorted(line) if k not in _KNOWN_LINE]
    return tuple(out)


def parse_document(text: str, kind: Kind) -> Parsed:
    """One JSON document: the record (strings in NFC) and the fields the contract does not know."""
    try:
        doc = _nfc(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValidationError("malformed_json", f"{exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise ValidationError("malformed_json", "nested too deeply") from exc
    record = checkout_from_json(doc) if kind == "checkout" else consent_change_from_json(doc)
    return Parsed(record, _unknown(doc, kind))


def parse_line(text: str, kind: Kind) -> Checkout | ConsentChange:
    return parse_document(text, kind).record


def parse_lines(lines: Iterable[str], kind: Kind) -> Iterator[tuple[int, Checkout | ConsentChange | ValidationError]]:
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield lineno, parse_line(text, kind)
        except ValidationError as exc:
            yield lineno, exc
