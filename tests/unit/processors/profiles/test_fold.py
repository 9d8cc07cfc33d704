"""The profile fold: duplicates and order do not change the result; windows, mix, affinities,
nutrition, points, consent and the dedup horizon behave as documented."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.consent_codec import WrittenConsent
from receiptflow.models import CheckoutLine, ConsentChange, ConsentState, Granularity, Purchase, ReceiptKind
from receiptflow.processors.profiles.fold import Outcome, Profile, apply_consent, apply_delta, fold, update, windows
from receiptflow.processors.profiles.rules import (
    AFFINITY_GROUPS,
    delta,
    epoch_day,
    load_points,
    load_rules,
    product_facts,
    receipt_key,
)
from receiptflow.receipt_parts import DEPOSIT_KINDS, GOODS_KINDS

from ...profile_strategies import purchase_lists, to_purchase
from ...strategies import NOW
from ..router.test_route import _valid

# A horizon longer than the strategies' 20-year span: order cannot matter at all.
WIDE = replace(load_rules(), dedup_ms=30 * 365 * 86_400_000)
RULES = load_rules()


@given(purchase_lists(), st.randoms())
def test_duplicates_and_shuffling_do_not_change_profiles(purchases: list[Purchase], rnd: random.Random) -> None:
    expected = fold(purchases, WIDE)
    noisy = purchases + [p for p in purchases if rnd.random() < 0.3]
    rnd.shuffle(noisy)
    assert fold(noisy, WIDE) == expected


@given(purchase_lists(span_days=30), st.randoms())
def test_within_the_dedup_horizon_order_does_not_matter_with_shipped_rules(
    purchases: list[Purchase], rnd: random.Random
) -> None:
    expected = fold(purchases, RULES)
    noisy = purchases + [p for p in purchases if rnd.random() < 0.3]
    rnd.shuffle(noisy)
    assert fold(noisy, RULES) == expected


def _group_cents(p: Purchase) -> dict[str, int]:
    """Money per product group: from the groups where the purchase carries them, else its items
    (deposits are in no group); receipt-level purchases have neither."""
    out: dict[str, int] = {}
    if p.groups:
        for g in p.groups:
            out[g.product_group] = out.get(g.product_group, 0) + g.amount_cents
    else:
        for i in p.items:
            if i.kind not in DEPOSIT_KINDS:
                out[i.product_group] = out.get(i.product_group, 0) + i.amount_cents
    return out


@given(purchase_lists())
def test_visits_spend_points_and_mix_add_up(purchases: list[Purchase]) -> None:
    profiles = fold(purchases, WIDE)
    # Refunds are no visits; spend and points count goods net of refunds, never deposits.
    assert sum(p.visits for p in profiles.values()) == sum(p.receipt_kind is ReceiptKind.SALE for p in purchases)
    goods = {p.receipt_id: p.total_cents - p.deposit_cents for p in purchases}
    assert sum(p.spend_cents for p in profiles.values()) == sum(goods.values())
    assert sum(p.points for p in profiles.values()) == sum(WIDE.points(p.chain, goods[p.receipt_id]) for p in purchases)
    for prof in profiles.values():
        mine = [p for p in purchases if p.card_id == prof.card_id]
        consented = [p for p in mine if p.consent.product_data_marketing]
        # The mix holds exactly the group money of consented receipts: groups where the purchase
        # carries them, else its items (receipt-level purchases have neither).
        assert sum(prof.groups.values()) == sum(sum(_group_cents(p).values()) for p in consented)
        assert prof.first_ms == min(int(p.event_time.timestamp() * 1000) for p in mine)
        assert prof.last_ms == max(int(p.event_time.timestamp() * 1000) for p in mine)
        # Every affinity is the newest consented receipt that bought its group (on balance).
        for group, kind in AFFINITY_GROUPS.items():
            having = [int(p.event_time.timestamp() * 1000) for p in consented if _group_cents(p).get(group, 0) > 0]
            assert prof.affinity.get(kind) == (max(having) if having else None)


@given(purchase_lists(), st.dates(date(2006, 1, 1), date(2027, 12, 31)))
def test_windows_equal_a_brute_force_count(purchases: list[Purchase], today: date) -> None:
    for card, prof in fold(purchases, WIDE).items():
        mine = [p for p in purchases if p.card_id == card]
        newest = max(p.event_time.date() for p in mine)
        for n, (visits, cents) in windows(prof, today).items():
            # Buckets reach 365 days behind the card's newest day: a window fully inside that range is exact.
            if (newest - (today - timedelta(days=n - 1))).days >= 365:
                continue
            inside = [p for p in mine if today - timedelta(days=n) < p.event_time.date() <= today]
            # A refund is no visit; money is net of refunds and returns, without deposits.
            sales = [p for p in inside if p.receipt_kind is ReceiptKind.SALE]
            assert (visits, cents) == (len(sales), sum(p.total_cents - p.deposit_cents for p in inside)), (card, n)


@given(purchase_lists())
def test_nutrition_comes_only_from_consented_item_lines(purchases: list[Purchase]) -> None:
    facts = product_facts()
    for card, prof in fold(purchases, WIDE).items():
        lines = [
            line
            for p in purchases
            if p.card_id == card and p.consent.product_data_marketing
            for line in p.items
            if line.sku in facts and line.kind in GOODS_KINDS  # a discount line is no more of the product
        ]
        assert prof.nutrition.get("item_cents", 0) == sum(line.amount_cents for line in lines)
        domestic = sum(line.amount_cents for line in lines if facts[line.sku].domestic)
        assert prof.nutrition.get("domestic_cents", 0) == domestic
        assert sum(prof.salt_by_group.values()) == prof.nutrition.get("salt_mg", 0)
        assert sum(prof.sugar_by_group.values()) == prof.nutrition.get("sugar_mg", 0)
        # Net of returns: signed grams of the vegetable and fruit lines among them.
        veg = [x for x in lines if facts[x.sku].vegetable_or_fruit and facts[x.sku].net_g is not None]
        assert prof.nutrition.get("vegfruit_g", 0) == sum(round(x.quantity * (facts[x.sku].net_g or 0)) for x in veg)


def _purchase(
    receipt: str, when: datetime, *, lines: tuple[CheckoutLine, ...] | None = None, chain: str = "K_MARKET"
) -> Purchase:
    base = replace(_valid(), receipt_id=receipt, chain=chain, event_time=when)
    if lines is not None:
        base = replace(base, lines=lines, total_cents=sum(line.amount_cents for line in lines))
    return to_purchase(base, product_consent=True)


def test_nutrition_of_one_line_is_grams_times_the_catalogue() -> None:
    # Edam 500 g: 1.6 g salt, 340 kcal per 100 g; 4.6 kg CO2e per pack; domestic.
    line = CheckoutLine(1, "6410111137573", "dairy", 2.0, 549, 1098)
    p = _purchase("r-edam", NOW - timedelta(days=1), lines=(line,))
    assert p.granularity is Granularity.ITEM
    d = delta(p, RULES)
    assert dict(d.nutrition) == {
        "item_cents": 1098,
        "co2e_g": 9200,
        "domestic_cents": 1098,
        "food_g": 1000,
        "salt_mg": 16000,
        "energy_kcal": 3400,
    }
    assert dict(d.salt_by_group) == {"dairy": 16000}


def test_product_group_purchases_give_a_mix_but_no_nutrition() -> None:
    line = CheckoutLine(1, "6410111137573", "dairy", 2.0, 549, 1098)
    p = _purchase("r-pg", NOW - timedelta(days=1), lines=(line,), chain="PRISMA")
    assert p.granularity is Granularity.PRODUCT_GROUP
    prof = update(Profile(p.card_id or ""), p, RULES)
    assert dict(prof.groups) == {"dairy": 1098}
    assert not prof.nutrition


def test_points_use_the_chain_rate_and_round_down() -> None:
    rates, default = load_points()
    assert rates["NESTE"] == Decimal("0.5") and default == 0
    assert RULES.points("NESTE", 1999) == 9
    assert RULES.points("K_MARKET", 1999) == 19
    assert RULES.points("UNKNOWN", 1999) == 0


def test_a_receipt_beyond_the_dedup_horizon_is_refused_and_a_duplicate_is_not_counted() -> None:
    new = _purchase("r-new", NOW)
    old = _purchase("r-old", NOW - timedelta(days=36))
    prof, outcome = apply_delta(Profile(new.card_id or ""), delta(new, RULES), RULES)
    assert outcome is Outcome.APPLIED
    same, outcome = apply_delta(prof, delta(new, RULES), RULES)
    assert (same, outcome) == (prof, Outcome.DUPLICATE)
    same, outcome = apply_delta(prof, delta(old, RULES), RULES)
    assert (same, outcome) == (prof, Outcome.LATE)
    # Ids are kept only within the horizon behind the newest receipt.
    assert set(prof.seen) == {receipt_key("r-new")}


def test_buckets_older_than_a_year_behind_the_newest_day_are_dropped() -> None:
    ps = [_purchase(f"r-{i}", NOW - timedelta(days=d)) for i, d in enumerate((0, 100, 364, 365, 400))]
    prof = fold(ps, WIDE)[ps[0].card_id or ""]
    newest = epoch_day(ps[0].event_time.date())
    assert sorted(newest - d for d in prof.days) == [0, 100, 364]
    assert prof.visits == 5  # lifetime keeps everything


def test_withdrawal_removes_product_fields_and_stops_new_ones() -> None:
    p1 = _purchase("r-1", NOW - timedelta(days=2))
    prof = update(Profile(p1.card_id or ""), p1, RULES)
    assert prof.has_product_data()
    withdrawn = apply_consent(prof, ConsentChange(prof.card_id, NOW - timedelta(days=1), False, True))
    assert not withdrawn.has_product_data()
    assert (withdrawn.visits, withdrawn.spend_cents) == (prof.visits, prof.spend_cents)
    # A purchase routed under consent before the withdrawal reached the router adds no product data.
    later = update(withdrawn, _purchase("r-2", NOW - timedelta(hours=1)), RULES)
    assert later.visits == 2 and not later.has_product_data()
    # An older consent change (a compacted topic replayed) does not undo the withdrawal.
    stale = apply_consent(later, ConsentChange(prof.card_id, NOW - timedelta(days=3), True, True))
    assert stale == later
    regranted = apply_consent(later, ConsentChange(prof.card_id, NOW, True, True))
    # A grant at exactly the purchase instant does not grant for that purchase (the stricter side
    # of the tie); a purchase one millisecond later is under the grant.
    assert not update(regranted, _purchase("r-3", NOW), RULES).has_product_data()
    assert update(regranted, _purchase("r-4", NOW + timedelta(milliseconds=1)), RULES).has_product_data()


def test_simultaneous_consent_changes_count_as_the_stricter_one() -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    prof = Profile("6390000000001")
    give, withdraw = ConsentChange(prof.card_id, at, True, True), ConsentChange(prof.card_id, at, False, True)
    a = apply_consent(apply_consent(prof, give), withdraw)
    b = apply_consent(apply_consent(prof, withdraw), give)
    assert a == b and a.consent is not None and not a.consent.product_data


@settings(max_examples=50)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=30))
def test_update_is_pure(days_back: list[int]) -> None:
    p = Profile("6390000000001")
    out = p
    for i, d in enumerate(days_back):
        out = update(out, _purchase(f"r-{i}", NOW - timedelta(days=d)), RULES)
    assert p == Profile("6390000000001")
    assert out.visits == len(days_back) - sum(1 for i, d in enumerate(days_back) if d > min(days_back[:i] or [d]) + 35)


@given(
    st.sampled_from([None, True, False]),
    st.lists(st.booleans(), max_size=4),
    st.booleans(),
    st.integers(0, 4),
    st.integers(1, 3600),
)
def test_a_consent_change_at_the_purchase_instant_counts_only_if_stricter_in_any_processing_order(
    prior: bool | None, at_instant: list[bool], routed_with_consent: bool, position: int, prior_back_s: int
) -> None:
    # A card's consent changes reach the profile in their topic order; the purchase made at the very
    # instant of some of them can be processed before, between or after them.
    purchase = replace(_purchase("r-tie", NOW), consent=ConsentState(routed_with_consent, True, True))
    card = purchase.card_id or ""
    changes = [ConsentChange(card, NOW, allowed, True) for allowed in at_instant]
    if prior is not None:
        changes.insert(0, ConsentChange(card, NOW - timedelta(seconds=prior_back_s), prior, True))
    events: list[Purchase | ConsentChange] = list(changes)
    events.insert(min(position, len(events)), purchase)
    profile = fold(events, RULES)[card]
    # The state at the instant: the one before it, tightened (never loosened) by the changes at it.
    expected = routed_with_consent and prior is not False and all(at_instant)
    assert profile.has_product_data() == expected
    assert profile.visits == 1


@given(st.lists(st.tuples(st.integers(-2, 2), st.booleans()), min_size=1, max_size=6), st.randoms())
def test_a_purchase_among_ordered_consent_changes_is_never_looser_than_the_state_at_its_instant(
    changes_ms: list[tuple[int, bool]], rnd: random.Random
) -> None:
    # Consent changes near the purchase instant (before, at, after it), in topic (time) order; the
    # purchase, routed under consent, processed anywhere among them.
    purchase = _purchase("r-near", NOW)
    card = purchase.card_id or ""
    ordered = sorted(changes_ms, key=lambda c: c[0])
    changes = [ConsentChange(card, NOW + timedelta(milliseconds=ms), allowed, True) for ms, allowed in ordered]
    newest_before = max((ms for ms, _ in ordered if ms < 0), default=None)
    # The state at the instant: the newest changes before it (simultaneous ones: their stricter
    # combination), tightened by the changes at it; a later withdrawal deletes what was derived.
    allowed_at = all(allowed for ms, allowed in ordered if ms in (newest_before, 0))
    kept = allowed_at and all(allowed for ms, allowed in ordered if ms > 0)

    events: list[Purchase | ConsentChange] = list(changes)
    events.insert(rnd.randint(0, len(events)), purchase)
    profile = fold(events, RULES)[card]
    assert profile.visits == 1
    if profile.has_product_data():
        assert kept
    # Processed after every change (as a rebuild applies them), exactly the state at its instant.
    assert fold([*changes, purchase], RULES)[card].has_product_data() == kept


@given(
    st.lists(st.tuples(st.integers(1, 6), st.booleans(), st.integers(-3, 3)), min_size=1, max_size=6),
    st.randoms(use_true_random=False),
)
def test_the_newest_written_change_is_recorded_whatever_its_date_and_the_order_applied(
    changes: list[tuple[int, bool, int]], rnd: random.Random
) -> None:
    """Append times drawn apart from the event times: the mark holds the newest written change (those
    written in one millisecond: the stricter), whatever order the script is given them in."""
    card = "6390000000001"
    written = [
        WrittenConsent(ConsentChange(card, NOW + timedelta(days=days), product, True), ms)
        for ms, product, days in changes
    ]
    shuffled = written[:]
    rnd.shuffle(shuffled)
    profile = Profile(card)
    for w in shuffled:
        profile = apply_consent(profile, w)
    last = max(ms for ms, _, _ in changes)
    assert profile.consent is not None
    assert profile.consent.written_ms == last
    assert profile.consent.product_data == all(product for ms, product, _ in changes if ms == last)


def test_a_grant_dated_tomorrow_does_not_outrank_a_withdrawal_written_after_it() -> None:
    card = "6390000000001"
    written = int(NOW.timestamp() * 1000)
    grant = WrittenConsent(ConsentChange(card, NOW + timedelta(days=1), True, True), written)
    withdrawal = WrittenConsent(ConsentChange(card, NOW, False, True), written + 1)
    for order in ((grant, withdrawal), (withdrawal, grant)):
        profile = Profile(card)
        for w in order:
            profile = apply_consent(profile, w)
        assert profile.consent is not None and not profile.consent.product_data
        assert not profile.product_allowed_at(written + 86_400_000 * 2)


def test_of_one_producer_batch_the_later_offset_is_recorded() -> None:
    card = "6390000000001"
    grant = WrittenConsent(ConsentChange(card, NOW, True, True), 5, offset=10)
    withdrawal = WrittenConsent(ConsentChange(card, NOW - timedelta(hours=1), False, True), 5, offset=11)
    for order in ((grant, withdrawal), (withdrawal, grant)):
        profile = Profile(card)
        for w in order:
            profile = apply_consent(profile, w)
        assert profile.consent is not None and not profile.consent.product_data
        assert profile.consent.position == (5, 11)
