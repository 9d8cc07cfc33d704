"""Profiles of checkout v2: spend net of refunds exactly once, no points on deposits, product facts net of returns."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.models import Checkout, CheckoutLine, LineKind, PaymentMethod, Purchase, ReceiptKind
from receiptflow.processors.profiles.fold import Profile, fold
from receiptflow.processors.profiles.rules import default_rules, delta

from ...profile_strategies import to_purchase
from ...receipt_shapes import SHAPES, sales
from ...strategies import NOW

CARD = "6390000000001"
RULES = default_rules()


def _checkout(
    rid: str, lines: list[CheckoutLine], when_days_ago: float, chain: str = "PRISMA", **kw: object
) -> Checkout:
    return Checkout(
        rid,
        chain,
        "PRISMA-0042",
        "7",
        CARD,
        NOW - timedelta(days=when_days_ago),
        PaymentMethod.CARD,
        sum(x.amount_cents for x in lines),
        tuple(lines),
        **kw,  # type: ignore[arg-type]
    )


@st.composite
def sale_and_refund(draw: st.DrawFn) -> tuple[Purchase, Purchase]:
    """A sale (with its bottle deposits) and, days later, the refund of some of its lines."""
    lines = draw(sales())
    bottles = draw(st.integers(0, 4))
    if bottles:
        lines.append(
            CheckoutLine(len(lines) + 1, "PANTTI-040", "deposit", float(bottles), 40, 40 * bottles, LineKind.DEPOSIT)
        )
    sold_days_ago = draw(st.integers(5, 30))
    sale = _checkout("S-1", lines, sold_days_ago)
    goods = [x for x in lines if x.kind is LineKind.SALE]
    back = draw(st.lists(st.sampled_from(goods), min_size=1, max_size=len(goods), unique_by=lambda x: x.line_no))
    returned = [x.returned(i + 1) for i, x in enumerate(back)]
    refund = _checkout(
        "S-2",
        returned,
        sold_days_ago - draw(st.integers(1, 4)),
        receipt_kind=ReceiptKind.REFUND,
        original_receipt_id="S-1",
    )
    consent = draw(st.booleans())
    return to_purchase(sale, consent), to_purchase(refund, consent)


@settings(max_examples=150, deadline=None)
@given(pair=sale_and_refund(), copies=st.tuples(st.integers(1, 3), st.integers(1, 3)), order=st.randoms())
def test_a_refund_nets_the_cards_spend_exactly_once_in_any_order(
    pair: tuple[Purchase, Purchase], copies: tuple[int, int], order: object
) -> None:
    sale, refund = pair
    deliveries = [sale] * copies[0] + [refund] * copies[1]
    order.shuffle(deliveries)  # type: ignore[attr-defined]
    profile = fold(deliveries, RULES)[CARD]
    goods_sold = sale.total_cents - sale.deposit_cents
    assert profile.spend_cents == goods_sold + refund.total_cents
    assert profile.visits == 1  # the refund is no visit
    assert profile.points == RULES.points("PRISMA", goods_sold) + RULES.points("PRISMA", refund.total_cents)
    assert sum(c for _, c in profile.days.values()) == profile.spend_cents
    # The same as folding the sale alone and then the refund once.
    assert profile == fold([sale, refund], RULES)[CARD]
    if sale.consent.product_data_marketing:
        net: dict[str, int] = {}
        for g in sale.groups + refund.groups:
            net[g.product_group] = net.get(g.product_group, 0) + g.amount_cents
        assert {g: c for g, c in profile.groups.items() if c} == {g: c for g, c in net.items() if c}


@settings(max_examples=60, deadline=None)
@given(goods=sales(), consent=st.booleans())
def test_a_full_refund_leaves_nothing_but_the_visit(goods: list[CheckoutLine], consent: bool) -> None:
    # K-group chains keep items: the nutrition and climate counters come from item lines.
    sale = to_purchase(replace(_checkout("S-1", goods, 3), chain="K_MARKET"), consent)
    assert sale.items
    if consent and any(x.sku in RULES.products for x in goods):
        assert fold([sale], RULES)[CARD].nutrition, "the sale alone leaves product facts"
    returned = [x.returned(i + 1) for i, x in enumerate(goods)]
    refund = _checkout("S-3", returned, 1, chain="K_MARKET", receipt_kind=ReceiptKind.REFUND, original_receipt_id="S-1")
    p = fold([sale, to_purchase(refund, consent)], RULES)[CARD]
    assert (p.visits, p.spend_cents, p.points) == (1, 0, 0)
    # Product facts are net of returns: nothing bought on balance, no group, no grams.
    assert {k: v for k, v in p.groups.items() if v} == {}
    assert {k: v for k, v in p.nutrition.items() if v} == {}
    assert {k: v for k, v in p.salt_by_group.items() if v} == {}


@settings(max_examples=60, deadline=None)
@given(c=SHAPES["pantti"])
def test_no_points_or_spend_on_deposits(c: Checkout) -> None:
    p = to_purchase(replace(c, card_id=CARD), True)
    d = delta(p, RULES)
    # Net bottle deposits: a return slip may take back exactly what the bottles cost (then 0).
    deposit_kinds = (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND)
    assert p.deposit_cents == sum(x.amount_cents for x in c.lines if x.kind in deposit_kinds)
    assert any(x.kind in deposit_kinds for x in c.lines)
    assert d.cents == c.total_cents - p.deposit_cents
    assert d.points == RULES.points(c.chain, d.cents)
    assert "deposit" not in d.groups
    assert fold([p], RULES)[CARD].points == d.points


def test_returned_pet_food_marks_no_affinity() -> None:
    food = CheckoutLine(1, "X-DOG", "pet_food", -1.0, 500, -500, LineKind.RETURN)
    milk = CheckoutLine(2, "6410100000000", "dairy", 1.0, 129, 129)
    p = to_purchase(_checkout("S-9", [food, milk], 1), True)
    assert "pet" not in delta(p, RULES).affinity
    assert fold([p], RULES)[CARD].affinity == {}


def test_a_v1_sale_still_counts_as_before() -> None:
    milk = CheckoutLine(1, "6410100000000", "dairy", 2.0, 129, 258)
    p = to_purchase(_checkout("S-8", [milk], 1), True)
    prof = fold([p], RULES)[CARD]
    assert (prof.visits, prof.spend_cents, prof.points) == (1, 258, RULES.points("PRISMA", 258))
    assert prof.groups == {"dairy": 258}
    assert isinstance(prof, Profile)
