"""The rebuild's pure parts and its warehouse reads: a purchase read back from warehouse rows brings
the same increments as the one the profile agent received, and the event-order fold keeps the live
path's consent semantics."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiptflow.consent_codec import WrittenConsent
from receiptflow.jobs.profile_rebuild import (
    _RECEIPT_COLUMNS,
    card_pages,
    count_events,
    event_time_at,
    in_event_order,
    purchase_from_rows,
    read_events,
    rebuild_fold,
)
from receiptflow.models import ConsentChange, ConsentState, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.fold import fold
from receiptflow.processors.profiles.rules import delta, load_rules
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import DuckDBSink, SinkConsentRecord, SinkRecord, to_rows
from receiptflow.sinks.tables import RECEIPTS

from ..profile_strategies import purchase_lists

RULES = load_rules()
# Dedup horizon wider than any drawn span: the fold is then order-independent (no receipt is late).
WIDE = replace(RULES, dedup_ms=30 * 365 * 86_400_000)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
RECEIPT_NAMES = [c.strip() for c in _RECEIPT_COLUMNS.split(",")]


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.integers(-14 * 60, 14 * 60),
)
def test_event_time_at_keeps_the_instant_and_the_local_date(instant: datetime, offset_minutes: int) -> None:
    local = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    got = event_time_at(instant, local.date())
    assert got.timestamp() == instant.timestamp()
    assert got.date() == local.date()


def _from_rows(p: Purchase) -> Purchase:
    """``p`` written as the sink writes it, and read back as the rebuild reads it."""
    rows = to_rows([SinkRecord(p, "purchases.customer", 0, 0)])
    (receipt,) = rows.receipts
    by_name = dict(zip(RECEIPTS.columns, receipt, strict=True))
    return purchase_from_rows(
        [by_name[c] for c in RECEIPT_NAMES], [r[1:] for r in rows.items], [r[1:] for r in rows.groups]
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(purchase_lists(max_size=12, span_days=400))
def test_a_purchase_read_back_from_warehouse_rows_brings_the_same_delta(purchases: list[Purchase]) -> None:
    for p in purchases:
        assert delta(_from_rows(p), RULES) == delta(p, RULES)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(purchase_lists(max_size=20, span_days=400), st.randoms())
def test_without_consent_changes_the_rebuild_is_the_fold(purchases: list[Purchase], rnd: Any) -> None:
    shuffled = list(purchases)
    rnd.shuffle(shuffled)
    assert rebuild_fold(shuffled, WIDE) == fold(purchases, WIDE)


def _purchases(card: str, times: list[datetime], consented: bool = True) -> list[Purchase]:
    sim = Simulator(11, stores=20, customers=20)
    policy = load_policy()
    out = []
    for at in times:
        c = next(c for c in sim.stream(50, at, rate=1) if c.lines and c.chain in ("PRISMA", "K_CITYMARKET"))
        p = process(
            replace(c, card_id=card, receipt_id=f"R{at.isoformat()}", event_time=at), policy, None, NOW
        ).customer
        out.append(replace(p, consent=ConsentState(consented, True, True)))
    return out


def test_consent_semantics_of_the_event_order() -> None:
    card = "6390000000001"
    t = [NOW - timedelta(days=d) for d in (10, 8, 6, 4, 2)]
    before, between, after = _purchases(card, t[:1]), _purchases(card, t[2:3]), _purchases(card, t[4:5])
    withdraw = ConsentChange(card, t[1], False, True)
    regrant = ConsentChange(card, t[3], True, True)

    # Routed under consent before a withdrawal: the withdrawal deletes its product data.
    prof = rebuild_fold([*before, withdraw], RULES)[card]
    assert prof.visits == 1 and not prof.has_product_data()
    # A purchase after the withdrawal, routed under consent (the router had not seen it yet): none.
    prof = rebuild_fold([*before, withdraw, *between], RULES)[card]
    assert prof.visits == 2 and not prof.has_product_data()
    # After a re-grant: only what came after it.
    prof = rebuild_fold([*after, regrant, *between, withdraw, *before], RULES)[card]
    only_after = rebuild_fold(after, RULES)[card]
    assert prof.visits == 3 and prof.groups == only_after.groups and prof.nutrition == only_after.nutrition
    assert prof.consent is not None and prof.consent.product_data


def test_a_consent_change_goes_before_a_purchase_of_the_same_millisecond() -> None:
    card = "6390000000001"
    (p,) = _purchases(card, [NOW])
    change = ConsentChange(card, NOW, False, True)
    assert in_event_order([p, change]) == [change, p]


# --- the warehouse reads, on a real DuckDB file -----------------------------------------------------
def test_read_events_returns_what_the_sink_wrote(tmp_path: Path) -> None:
    sim = Simulator(21, stores=30, customers=40)
    policy = load_policy()
    records: list[SinkRecord | SinkConsentRecord] = []
    purchases = []
    for i, c in enumerate(sim.stream(400, NOW - timedelta(days=20), rate=400 / (20 * 86_400))):
        p = process(c, policy, ConsentState(i % 2 == 0, True, True), NOW).customer
        purchases.append(p)
        records.append(SinkRecord(p, "purchases.customer", 0, i))
    changes = [ConsentChange(card, NOW - timedelta(days=5), False, True) for card in sorted(sim.truth.per_card)[:5]]
    # Appended a few seconds after their date: the rebuild reads the append time back to order them by.
    written = [WrittenConsent(c, int(c.event_time.timestamp() * 1000) + 2000 + i, i) for i, c in enumerate(changes)]
    records += [SinkConsentRecord(w.change, "consents", 0, w.offset, w.written_ms) for w in written]
    sink = DuckDBSink(tmp_path / "w.duckdb", erasure_salt=b"test-erasure-salt-0123456789")
    sink.setup()
    try:
        sink.write(records)
        sink.flush()
        pages = list(card_pages(sink.warehouse, 7))
        cards = [c for page in pages for c in page]
        assert cards == sorted(set(sim.truth.per_card) | {c.card_id for c in changes})
        assert all(len(page) <= 7 for page in pages)
        assert count_events(sink.warehouse) == sum(1 for p in purchases if p.card_id) + len(changes)
        got: dict[str, list[Any]] = {}
        for page in pages:
            got.update(read_events(sink.warehouse, page[0], page[-1]))
    finally:
        sink.close()
    assert sorted(got) == cards
    read_purchases = [e for events in got.values() for e in events if isinstance(e, Purchase)]
    want = {p.receipt_id: delta(p, RULES) for p in purchases if p.card_id}
    assert {p.receipt_id: delta(p, RULES) for p in read_purchases} == want
    assert len(read_purchases) == len(want)
    events = [e for v in got.values() for e in v]
    read_changes = sorted((e.card_id, e.written_ms, e.change) for e in events if isinstance(e, WrittenConsent))
    assert read_changes == sorted((w.card_id, w.written_ms, w.change) for w in written)
    assert rebuild_fold([e for v in got.values() for e in v], RULES) == rebuild_fold([*purchases, *written], RULES)


@pytest.mark.parametrize("local_hour", [0, 1, 23])
def test_a_receipt_near_midnight_keeps_its_local_day(local_hour: int) -> None:
    helsinki = timezone(timedelta(hours=2))
    at = datetime(2026, 11, 20, local_hour, 30, tzinfo=helsinki)
    (p,) = _purchases("6390000000001", [at])
    assert delta(_from_rows(p), RULES).day == delta(p, RULES).day
