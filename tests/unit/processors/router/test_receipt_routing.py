"""Routing of checkout v2 receipts: group totals net of returns, deposits in no group, kinds carried on."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.adjustment_split import net_amounts
from receiptflow.codec import Codec
from receiptflow.models import Checkout, CheckoutLine, ConsentState, Granularity, LineKind, Purchase, ReceiptKind
from receiptflow.policy import Decision, group_totals
from receiptflow.processors.profiles.rules import default_rules, delta
from receiptflow.processors.router.route import route
from receiptflow.receipt_parts import Adjustment, AdjustmentKind

from ...receipt_shapes import SHAPES, any_shape
from ...strategies import NOW
from ...test_receipt_shapes import EXAMPLES
from .test_encoding import _routed_bytes

CODEC = Codec()
CONSENT = ConsentState(product_data_marketing=True, electronic_marketing=True, known=True)
RULES = default_rules()


def _decision(level: Granularity) -> Decision:
    return Decision(version_id="test", level=level, known_chain=True)


def _groups(c: Checkout) -> dict[str, tuple[float, int, int]]:
    return {g.product_group: (g.quantity, g.amount_cents, g.lines) for g in group_totals(c.lines)}


def test_groups_are_net_of_returns_voids_discounts_and_benefits() -> None:
    assert _groups(EXAMPLES["returned item"]) == {"dairy": (2.0, 258, 1), "meat": (-1.0, -920, 1)}
    assert _groups(EXAMPLES["void as a pair"]) == {"dairy": (2.0, 258, 1), "soft_drinks": (0.0, 0, 2)}
    assert _groups(EXAMPLES["void as quantity 0"])["soft_drinks"] == (0.0, 0, 1)
    # A discount takes money off the group, not pieces.
    assert _groups(EXAMPLES["line discount"]) == {"dairy": (2.0, 200, 2)}
    assert _groups(EXAMPLES["benefit line"]) == {"dairy": (2.0, 245, 2)}
    assert _groups(EXAMPLES["refund receipt"]) == {"meat": (-1.0, -920, 1)}
    assert _groups(EXAMPLES["weighed goods"]) == {"vegetables": (0.532, 159, 1)}


def test_deposits_are_in_no_group_but_in_deposit_cents() -> None:
    for name in ("pantti line", "deposit slip", "zero total"):
        c = EXAMPLES[name]
        assert "deposit" not in _groups(c)
        p = route(c, _decision(Granularity.PRODUCT_GROUP), CONSENT, NOW).customer
        deposits = sum(x.amount_cents for x in c.lines if x.kind in (LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND))
        assert p.deposit_cents == deposits != 0


def test_the_refund_names_its_original_on_every_topic() -> None:
    routed = route(EXAMPLES["refund receipt"], _decision(Granularity.ITEM), CONSENT, NOW)
    for p in (routed.customer, routed.marketing):
        assert p is not None
        assert (p.receipt_kind, p.original_receipt_id, p.total_cents) == (
            ReceiptKind.REFUND,
            "S-PRISMA-0042-7-000123",
            -920,
        )


def test_a_v1_receipt_routes_as_before() -> None:
    lines = (CheckoutLine(1, "A", "dairy", 2.0, 109, 218), CheckoutLine(2, "B", "dairy", 1.0, 500, 500))
    c = Checkout("r-1", "PRISMA", "P-1", "1", "6390000000001", NOW - timedelta(hours=1), "CARD", 718, lines)  # type: ignore[arg-type]
    p = route(c, _decision(Granularity.PRODUCT_GROUP), CONSENT, NOW).customer
    assert [(g.product_group, g.quantity, g.amount_cents, g.lines) for g in p.groups] == [("dairy", 3.0, 718, 2)]
    assert (p.receipt_kind, p.original_receipt_id, p.deposit_cents, p.adjustment_cents) == (
        ReceiptKind.SALE,
        None,
        0,
        0,
    )


@pytest.mark.parametrize("shape", list(SHAPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_groups_deposits_and_adjustments_add_up_to_the_total(shape: str, data: st.DataObject) -> None:
    c = data.draw(SHAPES[shape])
    level = data.draw(st.sampled_from([Granularity.ITEM, Granularity.PRODUCT_GROUP]))
    p = route(c, _decision(level), CONSENT, NOW).customer
    assert p.total_cents == c.total_cents
    # Receipt-level adjustments are shared out over the groups whenever a goods line can carry them.
    carried = any(v > 0 for v in net_amounts(c.lines).values())
    unshared = 0 if carried else p.adjustment_cents
    assert sum(g.amount_cents for g in p.groups) + p.deposit_cents + unshared == p.total_cents
    # The profile's product-group mix is the same net figure.
    assert sum(delta(p, RULES).groups.values()) == p.total_cents - p.deposit_cents - unshared


def test_a_receipt_benefit_comes_off_the_groups_pro_rata() -> None:
    c = EXAMPLES["pantti line"]
    c = replace(
        c,
        adjustments=(Adjustment(AdjustmentKind.BENEFIT, "BONUS", -100),),
        total_cents=c.total_cents - 100,
    )
    for level in (Granularity.ITEM, Granularity.PRODUCT_GROUP):
        p = route(c, _decision(level), CONSENT, NOW).customer
        # dairy 258 and soft drinks 398 of 656 goods: 39.3 and 60.7 cents, rounded by largest remainder.
        assert [(g.product_group, g.amount_cents, g.lines) for g in p.groups] == [
            ("dairy", 258 - 39, 1),
            ("soft_drinks", 398 - 61, 1),
        ]
        assert (p.deposit_cents, p.adjustment_cents) == (80, -100)
    assert route(c, _decision(Granularity.RECEIPT), CONSENT, NOW).customer.groups == ()


@settings(max_examples=80, deadline=None)
@given(c=any_shape, level=st.sampled_from(list(Granularity)))
def test_v2_purchases_round_trip_the_wire(c: Checkout, level: Granularity) -> None:
    p = route(c, _decision(level), CONSENT, NOW).customer
    back = Purchase.from_avro(CODEC.decode(CODEC.encode("purchase", p.to_avro()), expect="purchase").value)
    assert back == p


@settings(max_examples=80, deadline=None)
@given(c=any_shape)
def test_v2_receipts_splice_into_the_same_bytes_as_the_ordinary_encoding(c: Checkout) -> None:
    data = CODEC.encode("checkout", c.to_avro())
    _, lines_raw = CODEC.decode_checkout(data)
    assert lines_raw is not None, "checkout v2 lines are laid out like purchase v2 items"
    pairs = _routed_bytes(CODEC, data, CONSENT, NOW)
    assert pairs
    for spliced, ordinary in pairs:
        assert spliced == ordinary
