"""Rebuild every customer profile from the warehouse (``receiptflow profiles rebuild``).

For when Redis was lost, a profile rule changed (points per chain, a catalogue fact) or a new Redis
is to be filled beside the old one. The warehouse keeps what the live path used: each customer
receipt as the policy allowed it (items, group totals), the consent state it was routed under
(``consent_product_data_marketing``), its event time and local date, and the audit of consent
changes. From those rows :func:`purchase_from_rows` rebuilds the very :class:`Purchase` the profile
agent received (its :func:`~receiptflow.processors.profiles.rules.delta` is the same, field for
field), and the rebuild writes through :func:`apply_events`: the profile store's own scripts with
the live arguments, in pipelined batches. Rebuild and live path share every rule, so they cannot
drift apart.

**Order and consent.** Each card's purchases and consent changes are applied in event-time order (a
consent change before a purchase of the same millisecond; it counts for that purchase only when it
is stricter: a withdrawal at the purchase instant applies, a grant at it does not, which is what the
live path gives in either processing order, see ``Profile.product_allowed_at``). Which change is the
card's newest is decided by when it was written (``consent_changes.appended_at``, the broker's
append time, and ``source_offset`` with each change: the profile script skips a change written
before the one it holds; of two written in one millisecond the later offset counts), as on the live
path: a grant dated ahead never outranks a withdrawal written after it. That is what the live path
converges to: a purchase routed under product-data consent adds product data unless a withdrawal at
or after its event time exists (live: it is deleted when the withdrawal is recorded, or refused when
the withdrawal was recorded first, even after a later re-grant) or the newest withdrawal before it
was not followed by a grant strictly before it (live: refused). One difference remains, a race the
live path resolves by processing order: a purchase made after a re-grant that the profile agent
applied before it recorded the withdrawal the re-grant followed: live drops its product data (the
withdrawal deletes everything when it is recorded), the rebuild keeps it — live is the stricter
reading. Likewise when a card's changes were written in another order than their dates (a register's
clock behind): the newest consent is the same, but a withdrawal that the rebuild meets after a
change written later is skipped there, while live recorded it first (its time then holds back
purchases made before it).

Receipts more than ``RECEIPTFLOW_PROFILE_DEDUP_DAYS`` older than the card's newest one, which the
live path refuses as too late, count in a rebuild (it applies them in order). The dedup set ends up
the same as live: the receipts of the last ``dedup`` days behind the card's newest.

**Where it writes.** By default into the configured Redis: each card's keys are deleted and rebuilt
in one pipeline (segment fields go with them: run ``segments run`` afterwards); stop the profile
agent meanwhile, or rebuild into another Redis (``--redis-url``) and switch. Erased cards stay
erased: the scripts check the erased-cards record of the Redis written to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from ..consent_codec import WrittenConsent, as_written, millis
from ..metrics import Metrics
from ..models import (
    CheckoutLine,
    ConsentChange,
    ConsentState,
    Granularity,
    GroupTotal,
    LineKind,
    Purchase,
    ReceiptKind,
    Unit,
)
from ..processors.profiles.fold import Profile, fold
from ..processors.profiles.rules import Rules, event_ms
from ..processors.profiles.store import ApplyResult, RedisProfileStore
from ..sinks.queries import Warehouse

Progress = Callable[[int, int], None]  # (events done, events in all)
Event = Purchase | ConsentChange | WrittenConsent  # a bare change: written at its event time

_RECEIPT_COLUMNS = (
    "receipt_id, chain, store_id, card_id, event_time, event_local_date, payment_method, currency, total_cents, "
    "granularity, policy_version, consent_product_data_marketing, consent_electronic_marketing, consent_known, "
    "processed_at, receipt_kind, original_receipt_id, deposit_cents, adjustment_cents"
)


# The consent_changes columns consent_from_row reads (the rebuild, the page).
CONSENT_COLUMNS = (
    "card_id, changed_at, product_data_marketing, electronic_marketing, source, appended_at, principal, channel, "
    "text_version, source_offset"
)


def event_time_at(instant: datetime, local_date: date) -> datetime:
    """``instant`` in a fixed zone in which its date is ``local_date`` (the register's day).

    The warehouse keeps the instant and the register's local date, not its UTC offset; a profile
    uses exactly those two (the event ms and the day bucket), so any zone that gives the same date
    gives the same profile. UTC when it does, else the smallest shift that does.
    """
    utc = instant.astimezone(UTC)
    if utc.date() == local_date:
        return utc
    if local_date > utc.date():
        shift = datetime.combine(local_date, time(0), UTC) - utc
    else:
        shift = datetime.combine(local_date, time(23, 59, 59, 999_999), UTC) - utc
    if not timedelta(hours=-24) < shift < timedelta(hours=24):
        raise ValueError(f"local date {local_date} is not within a day of {utc.isoformat()}")
    return utc.astimezone(timezone(shift))


def purchase_from_rows(
    receipt: Sequence[Any], items: Iterable[Sequence[Any]], groups: Iterable[Sequence[Any]]
) -> Purchase:
    """The customer purchase a warehouse receipt row (``_RECEIPT_COLUMNS``) and its item and group rows
    (``line_no, sku, product_group, quantity, unit_price_cents, amount_cents, line_kind, unit,
    ref_line_no`` and ``product_group, quantity, amount_cents, lines``) were written from. Not kept in
    the warehouse, and not used by a profile: the register id."""
    (rid, chain, store, card, at, local, method, currency, total, gran, version, pdm, em, known, processed, *v2) = (
        receipt
    )
    kind, original, deposits, adjustments = v2
    return Purchase(
        receipt_id=str(rid),
        chain=str(chain),
        store_id=str(store),
        register_id=None,
        card_id=None if card is None else str(card),
        event_time=event_time_at(at, local),
        payment_method=str(method),
        currency=str(currency),
        total_cents=int(total),
        granularity=Granularity(gran),
        items=tuple(
            CheckoutLine(
                int(n),
                str(sku),
                str(g),
                float(q),
                int(price),
                int(amount),
                LineKind(k),
                Unit(u),
                None if ref is None else int(ref),
            )
            for n, sku, g, q, price, amount, k, u, ref in sorted(items, key=lambda r: int(r[0]))
        ),
        groups=tuple(GroupTotal(str(g), float(q), int(amount), int(lines)) for g, q, amount, lines in groups),
        policy_version=str(version),
        consent=ConsentState(bool(pdm), bool(em), bool(known)),
        processed_at=processed,
        receipt_kind=ReceiptKind(kind),
        original_receipt_id=None if original is None else str(original),
        deposit_cents=int(deposits),
        adjustment_cents=int(adjustments),
    )


def consent_from_row(row: Sequence[Any]) -> WrittenConsent:
    """A ``consent_changes`` row (``CONSENT_COLUMNS``) as the change and the time it was written."""
    card, at, pdm, em, source, appended, principal, channel, text_version, offset = row
    change = ConsentChange(
        str(card), at, bool(pdm), bool(em), str(source), str(principal), str(channel), str(text_version)
    )
    return WrittenConsent.of(change, None if appended is None else millis(appended), int(offset))


def _event_order(e: Event) -> tuple[int, int, str]:
    if isinstance(e, ConsentChange | WrittenConsent):
        # Placed by its own time among the purchases; which change is the newest is decided by when
        # it was written (the script skips one written before the recorded one), whatever the order.
        change = as_written(e).change
        return int(change.event_time.timestamp() * 1000), 0, "1" if change.product_data_marketing else "0"
    return event_ms(e), 1, e.receipt_id


def in_event_order(events: Iterable[Event]) -> list[Event]:
    """Purchases and consent changes in the order a rebuild applies them (see the module docstring)."""
    return sorted(events, key=_event_order)


def rebuild_fold(events: Iterable[Event], rules: Rules) -> dict[str, Profile]:
    """The profiles a rebuild writes, as the pure fold (what the Redis path is tested against)."""
    return fold(in_event_order(events), rules)


# --- writing: the live scripts, in one pipeline --------------------------------------------------
def apply_events(
    store: RedisProfileStore, events: Sequence[Event], reset: Sequence[str] = ()
) -> tuple[ApplyResult, int]:
    """Apply purchases and consent changes in the order given, in one pipelined round trip.

    The store's own write path (:meth:`RedisProfileStore.apply_events`, the one the live agent
    uses), so a profile rebuilt from the warehouse is written exactly as the live path writes it.
    ``reset`` cards' keys are deleted first, in the same pipeline. Returns the purchases' outcomes and
    how many consent changes changed a profile.
    """
    return store.apply_events(events, reset, what="profile rebuild batch")


# --- reading the warehouse -----------------------------------------------------------------------
def card_pages(db: Warehouse, page: int) -> Iterator[list[str]]:
    """Every card with a receipt or a consent change, sorted, ``page`` at a time (keyset pagination)."""
    p = db.p
    after = ""
    while True:
        rows = db.query(
            f"SELECT card_id FROM (SELECT card_id FROM receipts WHERE card_id IS NOT NULL AND card_id > {p} "
            f"UNION SELECT card_id FROM consent_changes WHERE card_id > {p}) AS c ORDER BY card_id LIMIT {int(page)}",
            (after, after),
        )
        if not rows:
            return
        cards = [str(r[0]) for r in rows]
        yield cards
        after = cards[-1]


def read_events(db: Warehouse, first: str, last: str) -> dict[str, list[Event]]:
    """Purchases and consent changes of the cards ``first`` .. ``last`` (inclusive), per card, unordered."""
    p = db.p
    where = f"r.card_id >= {p} AND r.card_id <= {p}"
    receipts = db.query(f"SELECT {_RECEIPT_COLUMNS} FROM receipts AS r WHERE {where}", (first, last))
    items: dict[str, list[tuple[Any, ...]]] = {}
    for row in db.query(
        "SELECT i.receipt_id, i.line_no, i.sku, i.product_group, i.quantity, i.unit_price_cents, i.amount_cents, "
        "i.line_kind, i.unit, i.ref_line_no "
        f"FROM receipt_items AS i JOIN receipts AS r ON r.receipt_id = i.receipt_id WHERE {where}",
        (first, last),
    ):
        items.setdefault(str(row[0]), []).append(row[1:])
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in db.query(
        "SELECT g.receipt_id, g.product_group, g.quantity, g.amount_cents, g.lines "
        f"FROM receipt_groups AS g JOIN receipts AS r ON r.receipt_id = g.receipt_id WHERE {where} "
        "ORDER BY g.receipt_id, g.product_group",
        (first, last),
    ):
        groups.setdefault(str(row[0]), []).append(row[1:])
    out: dict[str, list[Event]] = {}
    for row in receipts:
        rid = str(row[0])
        purchase = purchase_from_rows(row, items.get(rid, ()), groups.get(rid, ()))
        assert purchase.card_id is not None
        out.setdefault(purchase.card_id, []).append(purchase)
    for row in db.query(
        f"SELECT {CONSENT_COLUMNS} FROM consent_changes WHERE card_id >= {p} AND card_id <= {p}",
        (first, last),
    ):
        change = consent_from_row(row)
        out.setdefault(change.card_id, []).append(change)
    return out


def count_events(db: Warehouse) -> int:
    """Purchases with a card plus consent changes: the total a rebuild's progress counts towards."""
    (receipts,) = db.query("SELECT count(*) FROM receipts WHERE card_id IS NOT NULL")[0]
    (changes,) = db.query("SELECT count(*) FROM consent_changes")[0]
    return int(receipts) + int(changes)


# --- the rebuild -----------------------------------------------------------------------------------
@dataclass
class RebuildStats:
    cards: int = 0
    purchases: int = 0  # applied
    consent_changes: int = 0  # recorded (an older change than one already recorded changes nothing)
    erased: int = 0  # purchases of erased cards, not applied
    duplicates: int = 0  # should stay 0: the warehouse holds each receipt once
    late: int = 0  # should stay 0: the rebuild applies each card's receipts in order
    round_trips: int = 0


def rebuild(
    db: Warehouse,
    store: RedisProfileStore,
    *,
    cards_per_batch: int = 500,
    events_per_round_trip: int = 5000,
    progress: Progress | None = None,
    metrics: Metrics | None = None,
) -> RebuildStats:
    """Rebuild every profile the warehouse ``db`` knows into ``store`` (see the module docstring).

    Cards are read ``cards_per_batch`` at a time; their keys are reset and their events applied in
    pipelines of about ``events_per_round_trip`` scripts (a card's events never span two pipelines
    out of order: pipelines of one connection run in sequence).
    """
    stats = RebuildStats()
    total = count_events(db)
    done = 0
    if progress is not None:
        progress(0, total)
    for cards in card_pages(db, cards_per_batch):
        per_card = read_events(db, cards[0], cards[-1])
        queue: list[Event] = []
        reset: list[str] = []
        for card in cards:
            reset.append(card)
            queue.extend(in_event_order(per_card.get(card, ())))
            if len(queue) >= events_per_round_trip:
                _flush(store, queue, reset, stats)
                queue, reset = [], []
        if queue or reset:
            _flush(store, queue, reset, stats)
        stats.cards += len(cards)
        done += sum(len(v) for v in per_card.values())
        if metrics is not None:
            metrics.profile_rebuild_cards_total.inc(len(cards))
        if progress is not None:
            progress(done, max(total, done))
    return stats


def _flush(store: RedisProfileStore, queue: list[Event], reset: list[str], stats: RebuildStats) -> None:
    result, consents = apply_events(store, queue, reset=reset)
    stats.round_trips += 1
    stats.purchases += result.applied
    stats.duplicates += result.duplicates
    stats.late += result.late
    stats.erased += result.erased
    stats.consent_changes += consents


def project_all(
    db: Warehouse,
    store: RedisProfileStore,
    *,
    cards_per_batch: int = 500,
    progress: Progress | None = None,
    metrics: Metrics | None = None,
) -> int:
    """Rewrite every card's marketing projection from its profile as of today (``profiles project``).

    A projection holds the windows and affinities of the day it was written (see
    :mod:`receiptflow.processors.profiles.marketing`); run daily so that a card without new purchases
    leaves its windows as the days pass. Card ids come from the warehouse (profile keys carry none).
    Returns how many projections were written or deleted (cards without a profile lose theirs).
    """
    del metrics  # no metric of its own: the job's output line says what it did
    if store.projections is None:
        raise ValueError("profiles project needs a store with the marketing key")
    (total,) = db.query(
        "SELECT count(*) FROM (SELECT card_id FROM receipts WHERE card_id IS NOT NULL "
        "UNION SELECT card_id FROM consent_changes) AS c"
    )[0]
    done = written = 0
    for cards in card_pages(db, cards_per_batch):
        written += store.projections.refresh(cards)
        done += len(cards)
        if progress is not None:
            progress(done, max(int(total), done))
    return written
