"""The tables a sink writes: their names, columns in row order and natural keys.

Card-linked tables (receipts, their items and groups, consent changes) and the anonymous analytics
store (``analytics.cells``) live apart: in the ``analytics`` schema on PostgreSQL and in a DuckDB file
of their own attached as ``analytics`` (see ``sinks.duckdb``). Rows of the analytics store are
*cells* (:mod:`receiptflow.cells`): figures of at least ``k`` baskets of one chain and local day,
never a basket, so nothing in them can be matched to one receipt of the card-linked tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_GROUP = "receiptflow-warehouse"

Dialect = Literal["duckdb", "postgres"]

# The schema (PostgreSQL) or attached database (DuckDB) of the anonymous analytics store.
ANALYTICS_SCHEMA = "analytics"


@dataclass(frozen=True, slots=True)
class Table:
    """A table the sink writes: its columns in row order and its natural key."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]


RECEIPTS = Table(
    "receipts",
    (
        "receipt_id",
        "chain",
        "store_id",
        "card_id",
        "event_time",
        "event_local_date",
        "payment_method",
        "currency",
        "total_cents",
        "granularity",
        "item_count",
        "policy_version",
        "consent_product_data_marketing",
        "consent_electronic_marketing",
        "consent_known",
        "processed_at",
        "source_topic",
        "source_partition",
        "source_offset",
        # receipts v2 (migration 0010)
        "receipt_kind",
        "original_receipt_id",
        "deposit_cents",
        "adjustment_cents",
    ),
    ("receipt_id",),
)
RECEIPT_ITEMS = Table(
    "receipt_items",
    (
        "receipt_id",
        "line_no",
        "sku",
        "product_group",
        "quantity",
        "unit_price_cents",
        "amount_cents",
        "line_kind",
        "unit",
        "ref_line_no",
    ),
    ("receipt_id", "line_no"),
)
RECEIPT_GROUPS = Table(
    "receipt_groups",
    ("receipt_id", "product_group", "quantity", "amount_cents", "lines"),
    ("receipt_id", "product_group"),
)
# The anonymous analytics store: one row per published cell (the Avro record ``analytics_cell``) and
# where it was read. A cell has no natural key of its own that both engines can enforce (its
# dimensions are null where its family has none), so, like the consent audit, it is identified by
# its position: replays and other groups see the same ones.
CELLS = Table(
    "analytics.cells",
    (
        "window_id",
        "family",
        "chain",
        "local_date",
        "store_id",
        "hour",
        "product_group",
        "sku",
        "sku_b",
        "size_bucket",
        "baskets",
        "lines",
        "quantity",
        "amount_cents",
        "k",
        "source_topic",
        "source_partition",
        "source_offset",
    ),
    ("source_topic", "source_partition", "source_offset"),
)
CONSENT_CHANGES = Table(
    "consent_changes",
    (
        "card_id",
        "changed_at",
        "product_data_marketing",
        "electronic_marketing",
        "source",
        "source_topic",
        "source_partition",
        "source_offset",
        # migration 0015
        "appended_at",
        "principal",
        "channel",
        "text_version",
    ),
    # The compacted topic's positions identify a change: replays and other groups see the same ones.
    ("source_topic", "source_partition", "source_offset"),
)
TABLES = (RECEIPTS, RECEIPT_ITEMS, RECEIPT_GROUPS, CONSENT_CHANGES, CELLS)
# Tables of the anonymous analytics store (written with their own offsets, see ``sinks.queries``).
ANALYTICS_TABLES = frozenset({CELLS.name})
# Tables whose rows belong to a card: their inserts leave out the rows of erased cards.
CARD_TABLES = frozenset(t.name for t in (RECEIPTS, RECEIPT_ITEMS, RECEIPT_GROUPS, CONSENT_CHANGES))


@dataclass
class RowCounts:
    """Rows inserted per table: what a flush, a sink run and a replay report, and what the metrics count.

    Conflicts on the natural keys are not counted: a redelivered or replayed row that was already
    there adds nothing.
    """

    receipts: int = 0
    items: int = 0
    groups: int = 0
    consent_changes: int = 0
    cells: int = 0  # analytics cells

    def add(self, table: str, n: int) -> None:
        """Count ``n`` rows of ``table`` (a :class:`Table` name)."""
        field = _FIELDS.get(table)
        if field is not None:
            setattr(self, field, getattr(self, field) + n)

    def add_counts(self, other: RowCounts) -> None:
        """Add every table's count of ``other``."""
        for table, n in other.by_table():
            self.add(table, n)

    def by_table(self) -> list[tuple[str, int]]:
        """(table name, rows) for every table a sink writes, zeros included."""
        return [(table, int(getattr(self, field))) for table, field in _FIELDS.items()]


# Which RowCounts field counts which table, in the order the metrics list them.
_FIELDS = {
    RECEIPTS.name: "receipts",
    RECEIPT_ITEMS.name: "items",
    RECEIPT_GROUPS.name: "groups",
    CELLS.name: "cells",
    CONSENT_CHANGES.name: "consent_changes",
}
