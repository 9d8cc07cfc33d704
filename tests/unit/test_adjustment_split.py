"""Receipt-level discounts and benefits split over goods lines: exact, bounded, deterministic."""

from __future__ import annotations

import random
from dataclasses import replace
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.adjustment_split import largest_remainder, line_shares, net_amounts
from receiptflow.models import CheckoutLine, LineKind
from receiptflow.policy import deposit_cents, group_totals
from receiptflow.receipt_parts import Adjustment, AdjustmentKind

weights = st.dictionaries(st.integers(1, 60), st.integers(-5_000, 50_000), min_size=1, max_size=12)
amounts = st.integers(-100_000, 0)


@given(amount=amounts, w=weights)
def test_the_shares_add_up_to_the_amount_exactly(amount: int, w: dict[int, int]) -> None:
    shares = largest_remainder(amount, w)
    assert shares.keys() == w.keys()
    if any(v > 0 for v in w.values()):
        assert sum(shares.values()) == amount
    else:
        assert set(shares.values()) == {0}  # nothing to carry it: no share at all


@given(amount=amounts, w=weights)
def test_each_share_is_its_pro_rata_part_rounded_by_less_than_a_cent(amount: int, w: dict[int, int]) -> None:
    shares = largest_remainder(amount, w)
    total = sum(max(v, 0) for v in w.values())
    for k, v in w.items():
        assert shares[k] <= 0
        if v <= 0:
            assert shares[k] == 0
        else:
            assert abs(shares[k] - Fraction(amount * v, total)) < 1
            if -amount <= total:
                assert -shares[k] <= v  # no line gives more than it cost


@given(amount=amounts, w=weights, seed=st.integers(0, 2**32))
def test_the_split_does_not_depend_on_the_order_of_the_lines(amount: int, w: dict[int, int], seed: int) -> None:
    items = list(w.items())
    random.Random(seed).shuffle(items)
    assert largest_remainder(amount, dict(items)) == largest_remainder(amount, w)


@given(amount=amounts, w=weights)
def test_splitting_again_over_the_shares_gives_the_same_shares(amount: int, w: dict[int, int]) -> None:
    shares = largest_remainder(amount, w)
    assert largest_remainder(amount, {k: -v for k, v in shares.items()}) == shares
    # The whole of the weights split over themselves is the weights.
    positive = {k: max(v, 0) for k, v in w.items()}
    assert largest_remainder(-sum(positive.values()), positive) == {k: -v for k, v in positive.items()}


@given(amount=amounts, w=weights)
def test_a_larger_line_never_gets_a_smaller_share(amount: int, w: dict[int, int]) -> None:
    shares = largest_remainder(amount, w)
    for a, wa in w.items():
        for b, wb in w.items():
            if wa > wb:
                assert shares[a] <= shares[b]


def test_ties_go_to_the_lower_line_number() -> None:
    assert largest_remainder(-1, {2: 100, 1: 100}) == {1: -1, 2: 0}
    assert largest_remainder(-2, {3: 50, 1: 50, 2: 50}) == {1: -1, 2: -1, 3: 0}
    # The worked example of docs/design.md: 1 € off goods of 2.58, 9.20 and 1.59 €.
    assert largest_remainder(-100, {1: 258, 2: 920, 3: 159}) == {1: -19, 2: -69, 3: -12}


MILK = CheckoutLine(1, "6410405082657", "dairy", 2.0, 129, 258)
MEAT = CheckoutLine(2, "6415712502059", "meat", 1.0, 920, 920)
VEG = CheckoutLine(3, "2300000000000", "vegetables", 0.532, 299, 159)


def test_net_amounts_take_the_discounts_and_voids_that_name_a_line() -> None:
    lines = [
        MILK,
        replace(MEAT, line_no=2),
        CheckoutLine(3, "CAMPAIGN-17", "dairy", 1.0, 0, -58, LineKind.DISCOUNT, ref_line_no=1),
        CheckoutLine(4, "6415712502059", "meat", -1.0, 920, -920, LineKind.VOID, ref_line_no=2),
        CheckoutLine(5, "PANTTI-040", "deposit", 2.0, 40, 80, LineKind.DEPOSIT, ref_line_no=1),
        CheckoutLine(6, "6415600540016", "soft_drinks", -1.0, 199, -199, LineKind.RETURN, ref_line_no=1),
    ]
    # The deposit and a return (whose ref names a line of the sold receipt) change nothing.
    assert net_amounts(lines) == {1: 200, 2: 0, 4: -920, 6: -199}
    shares = line_shares(lines, [Adjustment(AdjustmentKind.BENEFIT, "BONUS", -50)])
    assert shares == {1: -50}  # the only line with anything left to discount


goods_lines = st.lists(
    st.builds(
        lambda g, q, price, kind: CheckoutLine(
            0,
            "SKU",
            g,
            q if kind is LineKind.SALE else -q,
            price,
            round(q * price) * (1 if kind in (LineKind.SALE, LineKind.DEPOSIT) else -1),
            kind,
        ),
        st.sampled_from(["dairy", "meat", "deposit", "bread"]),
        st.integers(1, 4).map(float),
        st.integers(1, 3_000),
        st.sampled_from([LineKind.SALE, LineKind.SALE, LineKind.SALE, LineKind.RETURN, LineKind.DEPOSIT]),
    ),
    min_size=1,
    max_size=10,
).map(lambda xs: [replace(x, line_no=i + 1) for i, x in enumerate(xs)])


@settings(max_examples=200)
@given(lines=goods_lines, off=st.integers(0, 20_000), seed=st.integers(0, 2**32))
def test_group_totals_are_the_goods_net_of_the_adjustments(lines: list[CheckoutLine], off: int, seed: int) -> None:
    adjustments = [Adjustment(AdjustmentKind.BENEFIT, "BONUS", -off)]
    groups = group_totals(lines, adjustments)
    goods = sum(x.amount_cents for x in lines) - deposit_cents(lines)
    carried = any(x.kind is LineKind.SALE and x.amount_cents > 0 for x in lines)
    assert sum(g.amount_cents for g in groups) == goods - (off if carried else 0)
    # Each group: its goods lines' amounts and shares; deposit lines are in none and take no share.
    shares = line_shares(lines, adjustments)
    want: dict[str, int] = {}
    for x in lines:
        if x.kind is not LineKind.DEPOSIT:
            want[x.product_group] = want.get(x.product_group, 0) + x.amount_cents + shares.get(x.line_no, 0)
        else:
            assert x.line_no not in shares
    assert {g.product_group: g.amount_cents for g in groups} == want
    # Without adjustments the groups are as before, and the lines' order changes nothing.
    plain = {g.product_group: g for g in group_totals(lines)}
    for g in groups:
        assert (g.quantity, g.lines) == (plain[g.product_group].quantity, plain[g.product_group].lines)
        assert g.amount_cents <= plain[g.product_group].amount_cents
    shuffled = list(lines)
    random.Random(seed).shuffle(shuffled)
    assert group_totals(shuffled, adjustments) == groups
