"""Subject access and erasure in the warehouse: every row held about one card, deleting them, and
keeping the warehouse in step with the erased-cards record on Kafka.

Works on the :class:`~receiptflow.sinks.queries.Warehouse` of an open sink (``sink.warehouse``: the
sink's own connection, so DuckDB's single-writer file and PostgreSQL credentials are handled as the
sink handles them), in its dialect.

``delete_card`` is the warehouse step of ``receiptflow erase``: one transaction in which the card's
salted hash joins ``erased_cards`` (migration 0005; no card id kept), whose rows the sinks never
store again, and the card's rows are deleted. Deletes use ``RETURNING`` so both engines report what
went; item and group rows go before their receipts.

``record_erased`` is how every sink and replay follows the erased-cards topic
(:mod:`receiptflow.erasures`), into whichever warehouse it writes: the hashes join ``erased_cards``
in one transaction, and then the rows of those cards the warehouse already holds (stored before it
learnt of the erasure) are found by hashing the card ids it holds and deleted.

Why no erased row survives, whatever the interleaving:

* ``erase`` writes the topic record before it touches any store, and the sink reads the topic to its
  end before its first batch and polls it before every batch, so a warehouse learns of an erasure
  before any batch it starts after the record's arrival.
* A batch already under way when the record arrives (it was polled just before) may still commit
  rows of the card. On the warehouse ``erase`` targets, ``delete_card`` deletes them; on PostgreSQL
  it first takes the erasure lock exclusively, which every batch transaction holds shared, so it
  waits for batches in flight and deletes what they stored, and batches after it see the hash (on
  DuckDB the two cannot overlap: ``erase`` refuses while a sink holds the file). On any other
  warehouse, the sink's next poll (every loop, also when idle) brings the hash, and
  ``record_erased`` commits it first and only then looks for the card's rows: on PostgreSQL the
  insert takes the exclusive lock too, so every batch that could have stored the card without
  seeing the hash has committed by then and its rows are found, and every later batch leaves them
  out (the anti-join on ``erased_cards``).
* A sink that stops between the two transactions finds the rows on its next start: the start
  repeats the search for every hash on the topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from .queries import ERASED_INSERT, Warehouse

# Tables with rows linked to a card: (table, columns exported, how a row belongs to the card).
_CARD_ROWS = (
    ("receipts", "card_id = {p}"),
    ("receipt_items", "receipt_id IN (SELECT receipt_id FROM receipts WHERE card_id = {p})"),
    ("receipt_groups", "receipt_id IN (SELECT receipt_id FROM receipts WHERE card_id = {p})"),
    ("consent_changes", "card_id = {p}"),
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def export_rows(db: Warehouse, card_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every warehouse row about ``card_id``, per table, as JSON-ready dicts."""
    p = db.p
    out: dict[str, list[dict[str, Any]]] = {}
    for table, where in _CARD_ROWS:
        columns = [
            str(r[0])
            for r in db.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                + p
                + " ORDER BY ordinal_position",
                (table,),
            )
        ]
        rows = db.query(f"SELECT {', '.join(columns)} FROM {table} WHERE {where.format(p=p)} ORDER BY 1, 2", (card_id,))
        out[table] = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    return out


def delete_card(db: Warehouse, card_id: str, card_hash: str, at: datetime | None = None) -> dict[str, int]:
    """Record ``card_hash`` as erased and delete every warehouse row about ``card_id``, in one
    transaction; returns rows deleted per table."""
    p = db.p
    statements: list[tuple[str, Sequence[Any]]] = [*db.erasure_lock()]
    statements.append((ERASED_INSERT.format(p=p), (card_hash, at or datetime.now(UTC))))
    # Children first: their membership is found through the receipts still present.
    tables = (*_CARD_ROWS[1:3], _CARD_ROWS[0], _CARD_ROWS[3])
    for table, where in tables:
        statements.append((f"DELETE FROM {table} WHERE {where.format(p=p)} RETURNING 1", (card_id,)))
    results = db.transaction(statements)[-len(tables) :]
    return {table: len(rows) for (table, _), rows in zip(tables, results, strict=True)}


def is_erased(db: Warehouse, card_hash: str) -> bool:
    """Whether the warehouse's erased-cards record holds ``card_hash``."""
    p = db.p
    return bool(db.query(f"SELECT 1 FROM erased_cards WHERE card_hash = {p}", (card_hash,)))


def record_erased(db: Warehouse, erased: Mapping[str, datetime]) -> dict[str, int]:
    """Bring the warehouse in step with the erased-cards record: add the hashes of ``erased``
    (salted hash → erased at) to ``erased_cards``, then delete every row of those cards the warehouse
    already holds. Returns rows deleted per table (empty when none). Call it between flushes.
    """
    if not erased:
        return {}
    p = db.p
    lock = db.erasure_lock()
    inserts = [(ERASED_INSERT.format(p=p), (h, at)) for h, at in sorted(erased.items())]
    # First the hashes, committed: every batch from here on leaves the cards out (see the docstring).
    db.transaction([*lock, *inserts])
    # Then the rows stored before: the warehouse keeps card ids, the record only their hashes.
    held = db.query(
        "SELECT DISTINCT card_id FROM receipts WHERE card_id IS NOT NULL "
        "UNION SELECT DISTINCT card_id FROM consent_changes WHERE card_id IS NOT NULL"
    )
    cards = sorted(str(c) for (c,) in held if db.card_hash(str(c)) in erased)
    if not cards:
        return {}
    tables = (*_CARD_ROWS[1:3], _CARD_ROWS[0], _CARD_ROWS[3])
    deletes = [
        (f"DELETE FROM {table} WHERE {where.format(p=p)} RETURNING 1", (card,))
        for card in cards
        for table, where in tables
    ]
    results = db.transaction([*lock, *deletes])[len(lock) :]
    out: dict[str, int] = {}
    for (sql, _), rows in zip(deletes, results, strict=True):
        table = sql.split()[2]
        out[table] = out.get(table, 0) + len(rows)
    return out
