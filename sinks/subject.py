"""Subject access and erasure in the warehouse: every row held about one card, and deleting them.

Works on an open :class:`~receiptflow.sinks.base.Sink` through its ``query`` (the sink's own
connection, so DuckDB's single-writer file and PostgreSQL credentials are handled as the sink
handles them). Deletes use ``RETURNING`` so both engines report what went; item and group rows go
before their receipts, so an erasure interrupted half-way is finished by running it again.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from .base import Sink
from .postgres import PostgresSink

# Tables with rows linked to a card: (table, columns exported, how a row belongs to the card).
_CARD_ROWS = (
    ("receipts", "card_id = {p}"),
    ("receipt_items", "receipt_id IN (SELECT receipt_id FROM receipts WHERE card_id = {p})"),
    ("receipt_groups", "receipt_id IN (SELECT receipt_id FROM receipts WHERE card_id = {p})"),
    ("consent_changes", "card_id = {p}"),
)


def _placeholder(sink: Sink) -> str:
    return "%s" if isinstance(sink, PostgresSink) else "?"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def export_rows(sink: Sink, card_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every warehouse row about ``card_id``, per table, as JSON-ready dicts."""
    p = _placeholder(sink)
    out: dict[str, list[dict[str, Any]]] = {}
    for table, where in _CARD_ROWS:
        columns = [
            str(r[0])
            for r in sink.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                + p
                + " ORDER BY ordinal_position",
                (table,),
            )
        ]
        rows = sink.query(
            f"SELECT {', '.join(columns)} FROM {table} WHERE {where.format(p=p)} ORDER BY 1, 2", (card_id,)
        )
        out[table] = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    return out


def delete_card(sink: Sink, card_id: str) -> dict[str, int]:
    """Delete every warehouse row about ``card_id``; returns rows deleted per table."""
    p = _placeholder(sink)
    deleted: dict[str, int] = {}
    # Children first: their membership is found through the receipts still present.
    for table, where in (*_CARD_ROWS[1:3], _CARD_ROWS[0], _CARD_ROWS[3]):
        rows = sink.query(f"DELETE FROM {table} WHERE {where.format(p=p)} RETURNING 1", (card_id,))
        deleted[table] = len(rows)
    return deleted
