"""Monthly segments: the pure assignment (hypothesis), the model file and the month read from a
warehouse (a real DuckDB file)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.errors import ConfigError
from receiptflow.jobs.segments import (
    CardMonth,
    assign,
    assign_one,
    class_of,
    load_model,
    month_bounds,
    nearest_archetype,
    parse_model,
    read_month,
)
from receiptflow.models import ConsentChange, ConsentState, ReceiptKind
from receiptflow.policy import load_policy
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import DuckDBSink, SinkConsentRecord, SinkRecord

MODEL = load_model()
GROUPS = [*MODEL.groups, "fuel", "clothing", "household"]  # non-grocery groups do not count
NAMES = {a.name for a in MODEL.archetypes}


@st.composite
def card_months(draw: st.DrawFn) -> CardMonth:
    card = draw(st.sampled_from(["6390", "2710"])) + f"{draw(st.integers(0, 9999)):04d}"
    groups = draw(
        st.none() | st.dictionaries(st.sampled_from(GROUPS), st.integers(0, 80_000), max_size=len(GROUPS)).map(dict)
    )
    return CardMonth(card, draw(st.integers(0, 45)), draw(st.integers(0, 300_000)), groups)


months = st.lists(card_months(), max_size=40, unique_by=lambda m: m.card_id)


@given(months, st.randoms())
def test_assignment_is_deterministic_and_permutation_invariant(cards: list[CardMonth], rnd: random.Random) -> None:
    shuffled = list(cards)
    rnd.shuffle(shuffled)
    first = assign(cards, MODEL)
    assert assign(cards, MODEL) == first
    assert assign(shuffled, MODEL) == first


@given(months)
def test_every_active_card_gets_exactly_one_assignment(cards: list[CardMonth]) -> None:
    got = assign(cards, MODEL)
    assert set(got) == {c.card_id for c in cards if c.visits >= 1}
    for c in cards:
        if c.visits < 1:
            continue
        a = got[c.card_id]
        assert a.visits_class in {n for _, n in MODEL.visits_classes}
        assert a.money_class in {n for _, n in MODEL.money_classes}
        grocery = c.groups is not None and sum(v for g, v in c.groups.items() if g in MODEL.groups) > 0
        # A grocery segment exactly when product data may be used and there is grocery spend.
        assert (a.grocery_segment is not None) == grocery
        assert a.grocery_segment is None or a.grocery_segment in NAMES


@given(months)
def test_a_cards_assignment_depends_only_on_its_own_month(cards: list[CardMonth]) -> None:
    together = assign(cards, MODEL)
    for c in cards:
        if c.visits >= 1:
            assert assign([c], MODEL)[c.card_id] == together[c.card_id]


@given(card_months(), card_months())
def test_classes_are_monotone_in_visits_and_money(a: CardMonth, b: CardMonth) -> None:
    rank_v = [n for _, n in MODEL.visits_classes]
    rank_m = [n for _, n in MODEL.money_classes]
    lo, hi = sorted([a, b], key=lambda m: m.visits)
    if lo.visits >= 1:
        assert rank_v.index(assign_one(lo, MODEL).visits_class) <= rank_v.index(assign_one(hi, MODEL).visits_class)
    lo, hi = sorted([a, b], key=lambda m: m.spend_cents)
    assert rank_m.index(assign_one(lo, MODEL).money_class) <= rank_m.index(assign_one(hi, MODEL).money_class)


@given(card_months(), st.integers(2, 1000))
def test_the_grocery_segment_depends_on_shares_not_on_size(card: CardMonth, k: int) -> None:
    if card.groups is None:
        return
    bigger = {g: v * k for g, v in card.groups.items()}
    assert nearest_archetype(bigger, MODEL) == nearest_archetype(card.groups, MODEL)


def test_each_prototype_is_its_own_segment() -> None:
    for a in MODEL.archetypes:
        mix = {g: round(share * 1_000_000) for g, share in zip(MODEL.groups, a.prototype, strict=True)}
        assert nearest_archetype(mix, MODEL) == a.name


def test_class_bounds() -> None:
    assert [class_of(v, MODEL.visits_classes) for v in (1, 2, 4, 5, 9, 10, 19, 20, 400)] == [
        "occasional",
        "regular",
        "regular",
        "frequent",
        "frequent",
        "very_frequent",
        "very_frequent",
        "daily",
        "daily",
    ]
    assert class_of(4999, MODEL.money_classes) == "under_50" and class_of(5000, MODEL.money_classes) == "50_150"


def test_no_consent_means_no_grocery_segment_only_classes() -> None:
    (a,) = assign([CardMonth("6390000000001", 3, 12_000, None)], MODEL).values()
    assert (a.visits_class, a.money_class, a.grocery_segment) == ("regular", "50_150", None)
    assert "grocery_segment" not in a.fields(MODEL, "2026-11")
    (b,) = assign([CardMonth("6390000000001", 3, 12_000, {"fuel": 9000})], MODEL).values()
    assert b.grocery_segment is None  # consent, but nothing grocery to base a segment on


def test_month_bounds() -> None:
    assert month_bounds("2026-12") == (datetime(2026, 12, 1).date(), datetime(2027, 1, 1).date())
    for bad in ("2026-13", "2026-1", "26-01", "november"):
        with pytest.raises(ConfigError):
            month_bounds(bad)


SHIPPED = (Path(__file__).parents[3] / "src/receiptflow/data/segments.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('name = "seafood"', 'name = "fresh_cook"'), "distinct names"),
        (lambda t: t.replace("fish = 40", "fuel = 40"), "unknown groups"),
        (lambda t: t.replace("{ from = 5, ", "{ from = 1, "), "ascending"),
        (lambda t: t.replace('version = "archetypes-v1"', ""), "version"),
    ],
)
def test_a_broken_model_file_is_refused(edit: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model(edit(SHIPPED))  # type: ignore[operator]


# --- the month from a warehouse ------------------------------------------------------------------------
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def test_read_month_counts_the_month_and_respects_consent(tmp_path: Path) -> None:
    sim = Simulator(31, stores=30, customers=30)
    policy = load_policy()
    records: list[SinkRecord | SinkConsentRecord] = []
    start = datetime(2026, 10, 25, tzinfo=UTC)
    purchases = []
    for i, c in enumerate(sim.stream(600, start, rate=600 / (30 * 86_400))):
        p = process(c, policy, ConsentState(True, True, True), NOW).customer
        purchases.append(p)
        records.append(SinkRecord(p, "purchases.customer", 0, i))
    busy: dict[str, int] = {}
    for p in purchases:
        if p.card_id and p.event_time > datetime(2026, 11, 13, tzinfo=UTC):
            busy[p.card_id] = busy.get(p.card_id, 0) + 1
    withdrawn, regranted = sorted(busy, key=lambda c: (-busy[c], c))[:2]
    mid = datetime(2026, 11, 10, tzinfo=UTC)
    changes = [
        ConsentChange(withdrawn, mid, False, True),
        ConsentChange(regranted, mid, False, True),
        ConsentChange(regranted, mid + timedelta(days=2), True, True),
    ]
    records += [SinkConsentRecord(c, "consents", 0, i) for i, c in enumerate(changes)]
    sink = DuckDBSink(tmp_path / "w.duckdb", erasure_salt=b"test-erasure-salt-0123456789")
    sink.setup()
    try:
        sink.write(records)
        sink.flush()
        got = {m.card_id: m for m in read_month(sink.warehouse, "2026-11")}
        default_on = {m.card_id: m for m in read_month(sink.warehouse, "2026-11", default_product_data=True)}
    finally:
        sink.close()
    november = [p for p in purchases if p.card_id and p.event_time.strftime("%Y-%m") == "2026-11"]
    assert sorted(got) == sorted({p.card_id for p in november if p.card_id})
    assert any(p.receipt_kind is ReceiptKind.REFUND for p in november)
    for card, m in got.items():
        mine = [p for p in november if p.card_id == card]
        # Net figures: sales are visits (a refund is none), money net of refunds without deposits.
        sales = sum(p.receipt_kind is ReceiptKind.SALE for p in mine)
        assert (m.visits, m.spend_cents) == (sales, sum(p.total_cents - p.deposit_cents for p in mine))
    assert got[withdrawn].groups is None  # the newest change withdrew product data
    want: dict[str, int] = {}
    for p in november:
        if p.card_id == regranted and p.event_time > mid:
            for g in p.groups:
                want[g.product_group] = want.get(g.product_group, 0) + g.amount_cents
    assert want and dict(got[regranted].groups or {}) == want  # only what came after the withdrawal
    # Cards without any consent record: the configured default decides.
    plain = [c for c in got if c not in (withdrawn, regranted)]
    assert all(got[c].groups is None for c in plain)
    assert all(default_on[c].groups is not None for c in plain)
    assert assign(got.values(), MODEL) == assign(list(reversed(list(got.values()))), MODEL)
