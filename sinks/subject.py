"""Subject access and erasure in the warehouse: every row held about one card, and deleting them.

Works on an open :class:`~receiptflow.sinks.base.Sink` through its ``query`` and ``transaction``
(the sink's own connection, so DuckDB's single-writer file and PostgreSQL credentials are handled as
the sink handles them). An erasure is one transaction: the card's salted hash joins ``erased_cards``
(migration 0005; no card id kept), whose rows the sinks never store again, and the card's rows are
deleted. Deletes use ``RETURNING`` so both engines report what went; item and group rows go before
their receipts. On PostgreSQL the transaction first takes the erasure lock exclusively, so it waits
for sink batches in flight (they hold it shared) and the batches after it see the hash.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from .base import ERASED_INSERT, Sink
from .postgres import ERASURE_LOCK, PostgresSink

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


def delete_card(sink: Sink, card_id: str, card_hash: str, at: datetime | None = None) -> dict[str, int]:
    """Record ``card_hash`` as erased and delete every warehouse row about ``card_id``, in one
    transaction; returns rows deleted per table."""
    p = _placeholder(sink)
    statements: list[tuple[str, tuple[Any, ...]]] = []
    if isinstance(sink, PostgresSink):
        statements.append(("SELECT pg_advisory_xact_lock(%s)", (ERASURE_LOCK,)))
    statements.append((ERASED_INSERT.format(p=p), (card_hash, at or datetime.now(UTC))))
    # Children first: their membership is found through the receipts still present.
    tables = (*_CARD_ROWS[1:3], _CARD_ROWS[0], _CARD_ROWS[3])
    for table, where in tables:
        statements.append((f"DELETE FROM {table} WHERE {where.format(p=p)} RETURNING 1", (card_id,)))
    results = sink.transaction(statements)[-len(tables) :]
    return {table: len(rows) for (table, _), rows in zip(tables, results, strict=True)}


def is_erased(sink: Sink, card_hash: str) -> bool:
    """Whether the warehouse's erased-cards record holds ``card_hash``."""
    p = _placeholder(sink)
    return bool(sink.query(f"SELECT 1 FROM erased_cards WHERE card_hash = {p}", (card_hash,)))
