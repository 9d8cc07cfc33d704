"""Records read from Kafka and the table rows they become (pure).

A decoded record keeps where it was read (topic, partition, offset): the offset becomes the stored
position (:func:`next_offsets`), committed with the rows. :func:`to_rows` maps a batch to rows in the
column order of ``sinks.tables``; a record the warehouse cannot store
(:func:`warehouse_problem`, :func:`cell_problem`) or decode is a :class:`~receiptflow.dlq.Rejected`
with no rows: it goes to the dead-letter topic instead, but its offset is stored like any other, so
the sink does not read it again. Records of ``purchases.analytics`` (:class:`CellRecord`, and
:class:`AnalyticsRejected` for the ones rejected) keep their positions in the analytics store, with
the cells (:func:`in_analytics_store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..cells import Cell, Window
from ..consent_codec import written_at
from ..dlq import Rejected
from ..models import ConsentChange, Granularity, Purchase
from ..policy import Policy
from ..validation import MAX_INT32
from .tables import CARD_TABLES, CELLS, CONSENT_CHANGES, RECEIPT_GROUPS, RECEIPT_ITEMS, RECEIPTS, Table


def chain_dimension_rows(policy: Policy, now: datetime) -> list[tuple[str, str, str, str, datetime]]:
    """Rows of ``dim_chains`` (pure): chain, group, level and policy version in force on ``now``'s date."""
    return [(chain, group, level, version, now) for chain, group, level, version in policy.describe_at(now.date())]


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """A decoded ``purchases.customer`` record and where it was read: the offset becomes the stored position."""

    purchase: Purchase
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class CellRecord:
    """A decoded ``purchases.analytics`` record (an anonymous cell, released under threshold ``k``) and
    where it was read."""

    cell: Cell
    k: int
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class AnalyticsRejected(Rejected):
    """A ``purchases.analytics`` record dead-lettered: its position is stored with the cells, so that the
    analytics store alone says where to resume on that topic (and a restart does not dead-letter it again)."""


@dataclass(frozen=True, slots=True)
class SinkConsentRecord:
    """A decoded consent change and where it was read (for the consent audit table)."""

    change: ConsentChange
    topic: str
    partition: int
    offset: int
    appended_ms: int = 0  # the record's broker append time; 0 when it has none (stored as its event time)


_INT64 = 2**63 - 1  # BIGINT; INTEGER columns hold the contract's 32-bit ints (MAX_INT32)


def warehouse_problem(p: Purchase) -> str | None:
    """Why ``p`` cannot be stored (a value past its column's type), or None.

    The processor validates every checkout, so this only catches records written before a
    validation rule existed, or by something else: they are dead-lettered, never allowed to fail a
    batch on every restart.
    """
    if len(p.items) > MAX_INT32 or len(p.groups) > MAX_INT32:
        return "too many lines"
    if max(abs(p.total_cents), abs(p.deposit_cents), abs(p.adjustment_cents)) > _INT64:
        return "total_cents, deposit_cents or adjustment_cents does not fit a BIGINT"
    for item in p.items:
        if not -MAX_INT32 - 1 <= item.line_no <= MAX_INT32:
            return f"line_no {item.line_no} does not fit an INTEGER"
        if item.ref_line_no is not None and not -MAX_INT32 - 1 <= item.ref_line_no <= MAX_INT32:
            return f"line {item.line_no}: ref_line_no {item.ref_line_no} does not fit an INTEGER"
        if abs(item.amount_cents) > _INT64 or abs(item.unit_price_cents) > _INT64:
            return f"line {item.line_no}: an amount does not fit a BIGINT"
    for g in p.groups:
        if abs(g.amount_cents) > _INT64 or not 0 <= g.lines <= MAX_INT32:
            return f"group {g.product_group!r}: a value does not fit its column"
    return None


# The fewest baskets a stored cell may have whatever its k: a figure of one basket is that basket.
MIN_CELL_BASKETS = 2


def cell_problem(cell: Cell, k: int, window_id: str) -> tuple[str, str] | None:
    """Why ``cell`` must not be stored: (reason, message), or None.

    The aggregator releases only cells of at least ``k`` baskets, and ``k`` is at least 2 by its
    settings. A cell below that is close to one basket, and the analytics store must not be where
    it leaks: one of fewer than :data:`MIN_CELL_BASKETS` is refused even under ``k = 1``. The other
    checks catch a record that contradicts itself (its key names another window, an hour past 23).
    Avro's long and int fit the BIGINT and INTEGER columns by themselves.
    """
    key = cell.key
    least = max(k, MIN_CELL_BASKETS)
    if k < 1:
        return "out_of_range", f"k is {k}: a cell is released under a threshold of at least 1 basket"
    if cell.baskets < least:
        return "below_k", f"a {key.family} cell of {cell.baskets} basket(s), fewer than {least} (k = {k})"
    if window_id != Window(key.chain, key.local_date).id:
        return "wrong_window", f"window_id {window_id!r} is not the cell's chain and date"
    if key.hour is not None and not 0 <= key.hour <= 23:
        return "out_of_range", f"hour {key.hour} is not an hour of the day"
    return None


# A rejected record (dead-lettered) has no rows, but its offset is stored like any other.
AnyRecord = SinkRecord | SinkConsentRecord | CellRecord | Rejected


def in_analytics_store(r: AnyRecord) -> bool:
    """Whether ``r``'s position is kept in the analytics store (a record of ``purchases.analytics``)."""
    return isinstance(r, CellRecord | AnalyticsRejected)


@dataclass
class Rows:
    receipts: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]
    groups: list[tuple[Any, ...]]
    consents: list[tuple[Any, ...]] = field(default_factory=list)
    cells: list[tuple[Any, ...]] = field(default_factory=list)
    # Per table of CARD_TABLES, the card each row belongs to (None: anonymous), parallel to its rows.
    cards: dict[str, list[str | None]] = field(default_factory=lambda: {name: [] for name in sorted(CARD_TABLES)})

    def by_table(self) -> list[tuple[Table, list[tuple[Any, ...]]]]:
        """The card-linked store's tables and their rows."""
        return [
            (RECEIPTS, self.receipts),
            (RECEIPT_ITEMS, self.items),
            (RECEIPT_GROUPS, self.groups),
            (CONSENT_CHANGES, self.consents),
        ]

    def analytics_by_table(self) -> list[tuple[Table, list[tuple[Any, ...]]]]:
        """The anonymous analytics store's tables and their rows."""
        return [(CELLS, self.cells)]


def item_count(p: Purchase) -> int:
    """Receipt lines the record carries or summarises; 0 when the policy kept no line information."""
    if p.granularity is Granularity.ITEM:
        return len(p.items)
    if p.granularity is Granularity.PRODUCT_GROUP:
        return sum(g.lines for g in p.groups)
    return 0


def to_rows(batch: Sequence[AnyRecord]) -> Rows:
    """Records → table rows (pure). Items only at ITEM granularity, groups at ITEM and PRODUCT_GROUP;
    analytics cells become rows of ``analytics.cells``, consent records audit rows.

    Rows follow the column order of the :class:`~receiptflow.sinks.tables.Table` definitions.
    """
    rows = Rows([], [], [])
    seen: set[str] = set()
    for r in batch:
        if isinstance(r, Rejected):
            continue
        if isinstance(r, SinkConsentRecord):
            _add_consent(rows, r)
            continue
        if isinstance(r, CellRecord):
            _add_cell(rows, r)
            continue
        # A redelivered receipt inside one batch: keep the first, as the primary key does across batches.
        if r.purchase.receipt_id in seen:
            continue
        seen.add(r.purchase.receipt_id)
        _add_purchase(rows, r)
    return rows


def _add_consent(rows: Rows, r: SinkConsentRecord) -> None:
    c = r.change
    rows.consents.append(
        (
            c.card_id,
            c.event_time,
            c.product_data_marketing,
            c.electronic_marketing,
            c.source,
            r.topic,
            r.partition,
            r.offset,
            # migration 0015: what every reader orders a card's changes by, and the proof of consent
            written_at(r.appended_ms, c.event_time),
            c.principal,
            c.channel,
            c.text_version,
        )
    )
    rows.cards[CONSENT_CHANGES.name].append(c.card_id)


def _add_purchase(rows: Rows, r: SinkRecord) -> None:
    p = r.purchase
    rows.receipts.append(
        (
            p.receipt_id,
            p.chain,
            p.store_id,
            p.card_id,
            p.event_time,
            p.event_time.date(),  # the register's local date: what daily store reports group by
            p.payment_method,
            p.currency,
            p.total_cents,
            str(p.granularity),
            item_count(p),
            p.policy_version,
            p.consent.product_data_marketing,
            p.consent.electronic_marketing,
            p.consent.known,
            p.processed_at,
            r.topic,
            r.partition,
            r.offset,
            p.receipt_kind.value,
            p.original_receipt_id,
            p.deposit_cents,
            p.adjustment_cents,
        )
    )
    rows.cards[RECEIPTS.name].append(p.card_id)
    # The processor already truncated the record to its granularity; checking it again here keeps
    # a processor bug from putting finer data into the warehouse than the policy allowed.
    if p.granularity is Granularity.ITEM:
        rows.items.extend(
            (
                p.receipt_id,
                i.line_no,
                i.sku,
                i.product_group,
                float(i.quantity),
                i.unit_price_cents,
                i.amount_cents,
                i.kind.value,
                i.unit.value,
                i.ref_line_no,
            )
            for i in p.items
        )
        rows.cards[RECEIPT_ITEMS.name].extend([p.card_id] * len(p.items))
    if p.granularity is not Granularity.RECEIPT:
        rows.groups.extend(
            (p.receipt_id, g.product_group, float(g.quantity), g.amount_cents, g.lines) for g in p.groups
        )
        rows.cards[RECEIPT_GROUPS.name].extend([p.card_id] * len(p.groups))


def _add_cell(rows: Rows, r: CellRecord) -> None:
    # The Avro record's fields are the table's columns, by name, then the position.
    fields = r.cell.to_avro(r.k)
    rows.cells.append((*(fields[c] for c in CELLS.columns[: -len(CELLS.key)]), r.topic, r.partition, r.offset))


def next_offsets(batch: Sequence[AnyRecord], analytics: bool = False) -> list[tuple[str, int, int]]:
    """(topic, partition, offset to resume from) after this batch, sorted: of the records of the
    analytics store (:func:`in_analytics_store`) with ``analytics``, else of every other record.

    Sorted so that two writers upserting the same partitions lock the rows in the same order.
    """
    out: dict[tuple[str, int], int] = {}
    for r in batch:
        if in_analytics_store(r) != analytics:
            continue
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return [(t, p, o) for (t, p), o in sorted(out.items())]
