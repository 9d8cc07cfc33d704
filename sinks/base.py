"""The sink interface shared by every warehouse, and the rows a purchase becomes.

A sink is used in a loop of ``write(batch)`` then ``flush()``: ``write`` stages the rows and the
Kafka positions of the batch inside an open transaction, ``flush`` commits both at once. Because
the consumed offsets live in the warehouse, in the same transaction as the rows they produced, a
crash at any point either keeps a whole batch (rows and offsets) or none of it; on restart the
runner resumes from the warehouse's offsets. Rows are additionally inserted with
``ON CONFLICT DO NOTHING`` on their natural keys (receipt id, line number / product group), so a
replay from older offsets cannot duplicate anything.

Migrations are plain SQL files in ``sinks/migrations`` numbered ``NNNN_name.sql``, applied in order
at ``setup()`` and recorded in ``schema_migrations``; ``{double}`` is the one dialect difference.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..models import Granularity, Purchase

RECEIPT_COLUMNS = (
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
)
ITEM_COLUMNS = ("receipt_id", "line_no", "sku", "product_group", "quantity", "unit_price_cents", "amount_cents")
GROUP_COLUMNS = ("receipt_id", "product_group", "quantity", "amount_cents", "lines")
TABLE_KEYS = {
    "receipts": ("receipt_id",),
    "receipt_items": ("receipt_id", "line_no"),
    "receipt_groups": ("receipt_id", "product_group"),
}


@dataclass(frozen=True, slots=True)
class SinkRecord:
    purchase: Purchase
    topic: str
    partition: int
    offset: int


@dataclass
class Rows:
    receipts: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]
    groups: list[tuple[Any, ...]]


def to_rows(batch: Sequence[SinkRecord]) -> Rows:
    """Purchases → table rows (pure). Items only at ITEM granularity, as the policy allowed."""
    rows = Rows([], [], [])
    seen: set[str] = set()
    for r in batch:
        p = r.purchase
        # A redelivered receipt inside one batch: keep the first, like the key would across batches.
        if p.receipt_id in seen:
            continue
        seen.add(p.receipt_id)
        rows.receipts.append(
            (
                p.receipt_id,
                p.chain,
                p.store_id,
                p.card_id,
                p.event_time,
                p.event_time.date(),  # local date of the register: what daily reports group by
                p.payment_method,
                p.currency,
                p.total_cents,
                str(p.granularity),
                len(p.items),
                p.policy_version,
                p.consent.product_data_marketing,
                p.consent.electronic_marketing,
                p.consent.known,
                p.processed_at,
                r.topic,
                r.partition,
                r.offset,
            )
        )
        if p.granularity is Granularity.ITEM:
            for i in p.items:
                rows.items.append(
                    (p.receipt_id, i.line_no, i.sku, i.product_group, i.quantity, i.unit_price_cents, i.amount_cents)
                )
        if p.granularity is not Granularity.RECEIPT:
            for g in p.groups:
                rows.groups.append((p.receipt_id, g.product_group, g.quantity, g.amount_cents, g.lines))
    return rows


def next_offsets(batch: Sequence[SinkRecord]) -> dict[tuple[str, int], int]:
    """(topic, partition) → the offset to resume from after this batch."""
    out: dict[tuple[str, int], int] = {}
    for r in batch:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out


def migrations(double: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration, in order, for a dialect's double type."""
    folder = resources.files("receiptflow.sinks").joinpath("migrations")
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text(encoding="utf-8").replace("{double}", double)))
    return out


def split_sql(script: str) -> list[str]:
    """Statements of a migration file (no semicolons inside statements in our migrations)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@dataclass
class WriteResult:
    receipts: int = 0
    items: int = 0
    groups: int = 0


class Sink(abc.ABC):
    """setup / write(batch) / flush, plus the stored offsets and a few read helpers."""

    consumer: str

    @abc.abstractmethod
    def setup(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    def write(self, batch: Sequence[SinkRecord]) -> None:
        """Stage a batch's rows and offsets in the open transaction."""

    @abc.abstractmethod
    def flush(self) -> WriteResult:
        """Commit what was written since the last flush; returns the rows actually inserted."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Drop what was written since the last flush."""

    @abc.abstractmethod
    def committed_offsets(self, topic: str) -> dict[int, int]:
        """partition → next offset to read, as committed with the rows."""

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query (outside any open write transaction)."""

    @abc.abstractmethod
    def close(self) -> None: ...


def warehouse_counts(sink: Sink) -> dict[str, Any]:
    """Receipts, their total, and both per chain: what the demo and the tests compare with the truth."""
    total = sink.query("SELECT count(*), coalesce(sum(total_cents), 0) FROM receipts")[0]
    per_chain = sink.query("SELECT chain, count(*), sum(total_cents) FROM receipts GROUP BY chain ORDER BY chain")
    return {
        "receipts": int(total[0]),
        "total_cents": int(total[1]),
        "per_chain": {c: {"receipts": int(n), "total_cents": int(s)} for c, n, s in per_chain},
    }
