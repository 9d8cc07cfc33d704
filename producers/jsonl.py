"""JSON Lines ingest: parse checkouts or consent changes, one per line, reporting each bad line.

The JSON shape is the Avro contract written as JSON (see the README): the same field names, event
times as ISO-8601 strings with a zone, money as integer cents. Each line yields either the parsed
record or the :class:`~receiptflow.errors.ValidationError` that explains why it was rejected, with
its 1-based line number, so a caller can send the good lines and report the bad ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Literal

from ..errors import ValidationError
from ..models import Checkout, ConsentChange

Kind = Literal["checkout", "consent"]


def parse_line(text: str, kind: Kind) -> Checkout | ConsentChange:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError("malformed_json", f"{exc.msg} at column {exc.colno}") from exc
    return Checkout.from_json(doc) if kind == "checkout" else ConsentChange.from_json(doc)


def parse_lines(lines: Iterable[str], kind: Kind) -> Iterator[tuple[int, Checkout | ConsentChange | ValidationError]]:
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield lineno, parse_line(text, kind)
        except ValidationError as exc:
            yield lineno, exc
