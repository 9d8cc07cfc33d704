"""The sink interface shared by every warehouse, the rows a purchase becomes, and the migrations.

A sink is used in a loop of ``write(batch)`` then ``flush()`` (the shape of quixstreams' ``BaseSink``):
``write`` stages the rows *and* the Kafka positions of the batch inside an open transaction, ``flush``
commits both at once. Because the consumed offsets live in the warehouse, in the same transaction as
the rows they produced, a crash at any point keeps either a whole batch (rows and offsets) or none
of it; on partition assignment the runner resumes from the warehouse's offsets
(:meth:`Sink.committed_offsets`). Rows are additionally inserted with ``ON CONFLICT DO NOTHING`` on
their natural keys (receipt id; receipt id + line number; receipt id + product group), so a replay
from older offsets — another consumer group, a zombie consumer after a rebalance, an operator
rewinding — cannot duplicate anything.

Anonymous analytics live apart from the card-linked tables: in the ``analytics`` schema on
PostgreSQL and in a DuckDB file of their own attached as ``analytics`` (see ``sinks.duckdb``), with
the positions of ``purchases.analytics`` in ``analytics.sink_offsets`` beside them. Their rows are
baskets under a keyed pseudonym (``analytics.baskets``, ``analytics.basket_lines``): nothing in them
equals a receipt id, register, card or exact time of the card-linked tables.

Migrations are plain SQL files in ``sinks/migrations`` named ``NNNN_name.sql``, applied in order by
``setup()`` and recorded with a checksum in ``schema_migrations``. The dialects differ in a few type
names only; a file writes ``{double}`` and :data:`DIALECTS` fills it in, and ``{in_analytics}``
before a table of the analytics store that a view of that store reads (``analytics.`` on
PostgreSQL; nothing on DuckDB, whose views resolve names in their own database file, so the file
works when opened on its own). A file whose first line is ``-- dialects: postgres`` (or ``duckdb``)
runs on that dialect only; elsewhere it is recorded as applied with no statements. A statement
must not contain a semicolon outside a dollar-quoted ``$$`` block (files are split on them), and an
applied file must never change: ``setup()`` refuses to run against a warehouse whose recorded
checksum differs (add a new migration instead).
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from ..card_hash import CardHasher
from ..errors import ValidationError, WarehouseError
from ..models import AnalyticsBasket, ConsentChange, Granularity, Purchase
from ..policy import Policy
from ..validation import MAX_INT32

DEFAULT_GROUP = "receiptflow-warehouse"

Dialect = Literal["duckdb", "postgres"]

# Placeholders a migration may use, per dialect.
DIALECTS: dict[Dialect, dict[str, str]] = {
    "duckdb": {"double": "DOUBLE", "in_analytics": ""},
    "postgres": {"double": "DOUBLE PRECISION", "in_analytics": "analytics."},
}
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
    ),
    ("receipt_id",),
)
RECEIPT_ITEMS = Table(
    "receipt_items",
    ("receipt_id", "line_no", "sku", "product_group", "quantity", "unit_price_cents", "amount_cents"),
    ("receipt_id", "line_no"),
)
RECEIPT_GROUPS = Table(
    "receipt_groups",
    ("receipt_id", "product_group", "quantity", "amount_cents", "lines"),
    ("receipt_id", "product_group"),
)
# The anonymous analytics store: one row per basket and per line, no column of a receipt, card or
# register. The basket id is the processor's keyed pseudonym; ``local_hour`` is the store's wall
# clock hour (a TIMESTAMP without zone) for daily and hourly views in local time.
BASKETS = Table(
    "analytics.baskets",
    (
        "basket_id",
        "key_period",
        "chain",
        "store_id",
        "event_hour",
        "local_hour",
        "payment_method",
        "currency",
        "total_cents",
        "line_count",
    ),
    ("basket_id",),
)
BASKET_LINES = Table(
    "analytics.basket_lines",
    ("basket_id", "line_seq", "sku", "product_group", "quantity", "unit_price_cents", "amount_cents"),
    ("basket_id", "line_seq"),
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
    ),
    # The compacted topic's positions identify a change: replays and other groups see the same ones.
    ("source_topic", "source_partition", "source_offset"),
)
TABLES = (RECEIPTS, RECEIPT_ITEMS, RECEIPT_GROUPS, CONSENT_CHANGES, BASKETS, BASKET_LINES)
# Tables of the anonymous analytics store (written with their own offsets, see ANALYTICS_OFFSETS_UPSERT).
ANALYTICS_TABLES = frozenset(t.name for t in (BASKETS, BASKET_LINES))
# Tables whose rows belong to a card: their inserts leave out the rows of erased cards.
CARD_TABLES = frozenset(t.name for t in (RECEIPTS, RECEIPT_ITEMS, RECEIPT_GROUPS, CONSENT_CHANGES))

# Kept for callers that want the bare column lists.
RECEIPT_COLUMNS = RECEIPTS.columns
ITEM_COLUMNS = RECEIPT_ITEMS.columns
GROUP_COLUMNS = RECEIPT_GROUPS.columns
TABLE_KEYS = {t.name: t.key for t in TABLES}

# Offsets upsert, shared by both dialects apart from the parameter style. greatest() keeps the stored
# position monotonic: a zombie consumer that still finishes a batch of a partition after a rebalance
# handed it to someone else must not move the position backwards.
OFFSETS_UPSERT = (
    "INSERT INTO sink_offsets (consumer, topic, kafka_partition, next_offset) VALUES ({p}, {p}, {p}, {p}) "
    "ON CONFLICT (consumer, topic, kafka_partition) DO UPDATE SET "
    "next_offset = greatest(sink_offsets.next_offset, excluded.next_offset)"
)
OFFSETS_SELECT = "SELECT kafka_partition, next_offset FROM sink_offsets WHERE consumer = {p} AND topic = {p}"
# The positions of purchases.analytics live in the analytics store, committed with its rows: on DuckDB
# that is another database file, which one transaction cannot write together with the main one.
ANALYTICS_OFFSETS_UPSERT = OFFSETS_UPSERT.replace("INTO sink_offsets", "INTO analytics.sink_offsets", 1)
ANALYTICS_OFFSETS_SELECT = OFFSETS_SELECT.replace("FROM sink_offsets", "FROM analytics.sink_offsets", 1)

# The chain dimension from the policy file. An upsert, not delete + insert: two sinks starting at once
# both write the same rows without a key conflict, and a chain the policy dropped keeps its row (its
# receipts still refer to it).
CHAINS_UPSERT = (
    "INSERT INTO dim_chains (chain, chain_group, current_level, current_policy_version, updated_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (chain) DO UPDATE SET chain_group = excluded.chain_group, "
    "current_level = excluded.current_level, current_policy_version = excluded.current_policy_version, "
    "updated_at = excluded.updated_at"
)


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
class BasketRecord:
    """A decoded ``purchases.analytics`` record (an anonymous basket) and where it was read."""

    basket: AnalyticsBasket
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """A decoded consent change and where it was read (for the consent audit table)."""

    change: ConsentChange
    topic: str
    partition: int
    offset: int


_INT64 = 2**63 - 1  # BIGINT; INTEGER columns hold the contract's 32-bit ints (MAXMAX_INT32)


def warehouse_problem(p: Purchase) -> str | None:
    """Why ``p`` cannot be stored (a value past its column's type), or None.

    The processor validates every checkout, so this only catches records written before a
    validation rule existed, or by something else: they are dead-lettered, never allowed to fail a
    batch on every restart.
    """
    if len(p.items) > MAX_INT32 or len(p.groups) > MAX_INT32:
        return "too many lines"
    if abs(p.total_cents) > _INT64:
        return f"total_cents {p.total_cents} does not fit a BIGINT"
    for item in p.items:
        if not -MAX_INT32 - 1 <= item.line_no <= MAX_INT32:
            return f"line_no {item.line_no} does not fit an INTEGER"
        if abs(item.amount_cents) > _INT64 or abs(item.unit_price_cents) > _INT64:
            return f"line {item.line_no}: an amount does not fit a BIGINT"
    for g in p.groups:
        if abs(g.amount_cents) > _INT64 or not 0 <= g.lines <= MAX_INT32:
            return f"group {g.product_group!r}: a value does not fit its column"
    return None


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """A record that could not be decoded or stored and went to the dead-letter topic instead: it has
    no rows, but its offset is stored like any other, so the sink does not read it again."""

    topic: str
    partition: int
    offset: int
    error: ValidationError
    key: bytes | None = None
    value: bytes | None = None


AnyRecord = SinkRecord | ConsentRecord | BasketRecord | SkippedRecord


@dataclass
class Rows:
    receipts: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]
    groups: list[tuple[Any, ...]]
    consents: list[tuple[Any, ...]] = field(default_factory=list)
    baskets: list[tuple[Any, ...]] = field(default_factory=list)
    basket_lines: list[tuple[Any, ...]] = field(default_factory=list)
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
        return [(BASKETS, self.baskets), (BASKET_LINES, self.basket_lines)]


def item_count(p: Purchase) -> int:
    """Receipt lines the record carries or summarises; 0 when the policy kept no line information."""
    if p.granularity is Granularity.ITEM:
        return len(p.items)
    if p.granularity is Granularity.PRODUCT_GROUP:
        return sum(g.lines for g in p.groups)
    return 0


def to_rows(batch: Sequence[AnyRecord]) -> Rows:
    """Records → table rows (pure). Items only at ITEM granularity, groups at ITEM and PRODUCT_GROUP;
    analytics baskets become anonymous basket and line rows, consent records audit rows.

    Rows follow the column order of the :class:`Table` definitions above.
    """
    rows = Rows([], [], [])
    seen: set[str] = set()
    for r in batch:
        if isinstance(r, SkippedRecord):
            continue
        if isinstance(r, ConsentRecord):
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
                )
            )
            rows.cards[CONSENT_CHANGES.name].append(c.card_id)
            continue
        if isinstance(r, BasketRecord):
            _add_basket(rows, r.basket)
            continue
        p = r.purchase
        # A redelivered receipt inside one batch: keep the first, as the primary key does across batches.
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
            )
        )
        rows.cards[RECEIPTS.name].append(p.card_id)
        # The processor already truncated the record to its granularity; checking it again here keeps
        # a processor bug from putting finer data into the warehouse than the policy allowed.
        if p.granularity is Granularity.ITEM:
            rows.items.extend(
                (p.receipt_id, i.line_no, i.sku, i.product_group, float(i.quantity), i.unit_price_cents, i.amount_cents)
                for i in p.items
            )
            rows.cards[RECEIPT_ITEMS.name].extend([p.card_id] * len(p.items))
        if p.granularity is not Granularity.RECEIPT:
            rows.groups.extend(
                (p.receipt_id, g.product_group, float(g.quantity), g.amount_cents, g.lines) for g in p.groups
            )
            rows.cards[RECEIPT_GROUPS.name].extend([p.card_id] * len(p.groups))
    return rows


def _add_basket(rows: Rows, b: AnalyticsBasket) -> None:
    # The analytics topic is anonymous by construction; a basket that does not look like a pseudonym
    # (a receipt id, a card) or has an exact time is a processor bug, and the warehouse must not
    # become the place where it leaks.
    if len(b.basket_id) != 32 or any(ch not in "0123456789abcdef" for ch in b.basket_id):
        raise WarehouseError("analytics basket whose id is not a basket pseudonym: refusing to store it")
    if b.event_hour.minute or b.event_hour.second or b.event_hour.microsecond:
        raise WarehouseError(f"analytics basket {b.basket_id} has an exact time, not an hour: refusing to store it")
    local = b.event_hour.astimezone(UTC) + timedelta(minutes=b.event_tz_offset_minutes)
    rows.baskets.append(
        (
            b.basket_id,
            b.key_period,
            b.chain,
            b.store_id,
            b.event_hour,
            local.replace(tzinfo=None),
            b.payment_method,
            b.currency,
            b.total_cents,
            len(b.lines),
        )
    )
    rows.basket_lines.extend(
        (b.basket_id, seq, i.sku, i.product_group, float(i.quantity), i.unit_price_cents, i.amount_cents)
        for seq, i in enumerate(b.lines, start=1)
    )


# The erased-cards record: erasure adds a hash with its rows' deletes, in one transaction.
ERASED_INSERT = "INSERT INTO erased_cards (card_hash, erased_at) VALUES ({p}, {p}) ON CONFLICT (card_hash) DO NOTHING"


def next_offsets(batch: Sequence[AnyRecord], analytics: bool = False) -> list[tuple[str, int, int]]:
    """(topic, partition, offset to resume from) after this batch, sorted: of the analytics baskets
    with ``analytics``, else of every other record.

    Sorted so that two writers upserting the same partitions lock the rows in the same order.
    """
    out: dict[tuple[str, int], int] = {}
    for r in batch:
        if isinstance(r, BasketRecord) != analytics:
            continue
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return [(t, p, o) for (t, p), o in sorted(out.items())]


# --- migrations ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    checksum: str  # sha256 of the file as written (before placeholders), the same for every dialect
    statements: tuple[str, ...]


def migrations(dialect: Dialect, folder: Path | None = None) -> list[Migration]:
    """Every migration in ``folder`` (default: the shipped ``sinks/migrations``), in order, rendered for ``dialect``."""
    source: Path | Traversable = folder if folder is not None else resources.files("receiptflow.sinks") / "migrations"
    found: list[Migration] = []
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        head = entry.name.split("_", 1)[0]
        if not head.isdigit():
            raise WarehouseError(f"migration file {entry.name!r} does not start with a version number")
        text = entry.read_text(encoding="utf-8")
        first = text.split("\n", 1)[0].strip()
        if (
            first.startswith("-- dialects:")
            and dialect not in first.removeprefix("-- dialects:").replace(",", " ").split()
        ):
            # Recorded as applied (with its checksum) so that version numbers stay the same everywhere.
            found.append(Migration(int(head), entry.name, hashlib.sha256(text.encode("utf-8")).hexdigest(), ()))
            continue
        rendered = text
        # Plain replacement, not str.format: SQL may contain braces of its own (struct or JSON literals).
        for name, value in DIALECTS[dialect].items():
            rendered = rendered.replace("{" + name + "}", value)
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        found.append(Migration(int(head), entry.name, checksum, tuple(split_sql(rendered))))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise WarehouseError(f"migration versions must be 1..n without gaps or repeats, found {versions}")
    return found


def split_sql(script: str) -> list[str]:
    """Statements of a migration file: ``--`` comment lines dropped, split on ``;`` outside ``$$`` blocks."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    statements, current = [], []
    # Even parts are outside dollar quotes (a PL/pgSQL body is one odd part, semicolons and all).
    for i, part in enumerate("\n".join(lines).split("$$")):
        if i % 2:
            current.append("$$" + part + "$$")
            continue
        pieces = part.split(";")
        current.append(pieces[0])
        for piece in pieces[1:]:
            statements.append("".join(current))
            current = [piece]
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    pending: list[Migration]  # not applied yet, in order
    unrecorded: list[Migration]  # applied before checksums were kept: record theirs now


def plan_migrations(dialect: Dialect, applied: Mapping[int, str | None], folder: Path | None = None) -> MigrationPlan:
    """What ``setup()`` must do, given ``applied`` (version → recorded checksum); raises if a file was edited."""
    plan = MigrationPlan([], [])
    known = migrations(dialect, folder)
    for m in known:
        if m.version not in applied:
            plan.pending.append(m)
            continue
        recorded = applied[m.version]
        if recorded is None:
            plan.unrecorded.append(m)
        elif recorded != m.checksum:
            raise WarehouseError(
                f"migration {m.name} was changed after it was applied to this warehouse; "
                "put schema changes in a new migration file"
            )
    unknown = sorted(set(applied) - {m.version for m in known})
    if unknown:
        raise WarehouseError(f"the warehouse has migrations {unknown} this code does not know: is it older?")
    return plan


SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)",
    # Warehouses created before checksums were recorded get the column; their NULLs are filled in.
    "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum TEXT",
)


# --- the interface ---------------------------------------------------------------------------------
@dataclass
class WriteResult:
    """Rows actually inserted (conflicts on the natural keys are not counted)."""

    receipts: int = 0
    items: int = 0
    groups: int = 0
    analytics_lines: int = 0  # lines of analytics baskets
    consent_changes: int = 0
    baskets: int = 0

    def add(self, table: str, n: int) -> None:
        if table == RECEIPTS.name:
            self.receipts += n
        elif table == RECEIPT_ITEMS.name:
            self.items += n
        elif table == RECEIPT_GROUPS.name:
            self.groups += n
        elif table == BASKET_LINES.name:
            self.analytics_lines += n
        elif table == BASKETS.name:
            self.baskets += n
        elif table == CONSENT_CHANGES.name:
            self.consent_changes += n


class Sink(abc.ABC):
    """``setup`` / ``write(batch)`` / ``flush``, the stored offsets, and a read helper.

    ``group_id`` names whose positions :meth:`committed_offsets` returns and ``write`` stores: the
    Kafka consumer group of the runner. A sink instance is used from one thread at a time.
    """

    group_id: str
    card_hash: CardHasher  # card id → the salted hash ``erased_cards`` keeps

    @abc.abstractmethod
    def setup(self) -> None:
        """Connect and apply pending migrations (idempotent)."""

    @abc.abstractmethod
    def write(self, batch: Sequence[AnyRecord]) -> None:
        """Stage a batch's rows and next offsets in the open transaction (opened if needed)."""

    @abc.abstractmethod
    def flush(self) -> WriteResult:
        """Commit what was written since the last flush, rows and offsets together."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Drop what was written since the last flush."""

    @abc.abstractmethod
    def sync_chains(self, rows: Sequence[tuple[str, str, str, str, datetime]]) -> None:
        """Upsert the chain dimension (:func:`chain_dimension_rows`) in a transaction of its own.

        Not inside a write: call it between flushes (``open_sink`` does, right after ``setup``).
        """

    @abc.abstractmethod
    def committed_offsets(self, topic: str) -> dict[int, int]:
        """partition → next offset to read, as committed together with the rows."""

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query. Outside a write it sees committed data; inside one, also the staged rows."""

    @abc.abstractmethod
    def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """Run ``statements`` in one transaction of their own (all or nothing); the rows each returned.

        Not inside a write: call it between flushes.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Drop anything not flushed and disconnect (idempotent)."""

    def __enter__(self) -> Sink:
        self.setup()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def warehouse_counts(sink: Sink) -> dict[str, Any]:
    """Receipts and their total cents, overall and per chain: what the demo and tests compare with the truth.

    ``{"receipts": n, "total_cents": c, "per_chain": {chain: {"receipts": n, "total_cents": c}}}``
    """
    total = sink.query("SELECT count(*), coalesce(sum(total_cents), 0) FROM receipts")[0]
    per_chain = sink.query("SELECT chain, count(*), sum(total_cents) FROM receipts GROUP BY chain ORDER BY chain")
    return {
        "receipts": int(total[0]),
        "total_cents": int(total[1]),
        "per_chain": {str(c): {"receipts": int(n), "total_cents": int(s)} for c, n, s in per_chain},
    }
