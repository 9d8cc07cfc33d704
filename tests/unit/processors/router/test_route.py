"""Processor core: validation reasons and routing (no finer data than allowed, totals kept)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.errors import ValidationError
from receiptflow.models import Checkout, CheckoutLine, ConsentState, Granularity
from receiptflow.policy import load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import DEFAULT_CONSENT, process
from receiptflow.validation import validate

from ...strategies import NOW, checkouts

POLICY = load_policy()
BASKETS = BasketPseudonymiser(b"core-test-analytics-key")
consents = st.builds(ConsentState, st.booleans(), st.booleans(), st.booleans())


def _valid() -> Checkout:
    lines = (
        CheckoutLine(1, "6410100000000", "dairy", 2.0, 109, 218),
        CheckoutLine(2, "6410103779194", "meat", 1.0, 500, 500),
    )
    return Checkout("r-1", "PRISMA", "PRISMA-0001", "01", "6390000000001", NOW - timedelta(hours=1), "CARD", 718, lines)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"receipt_id": " "}, "missing_id", "receipt_id"),
        ({"store_id": ""}, "missing_id", "store_id"),
        ({"card_id": ""}, "missing_id", "card_id"),
        ({"total_cents": 700}, "totals_mismatch", "total_cents"),
        ({"total_cents": -5, "lines": ()}, "negative_amount", "total_cents"),
        ({"total_cents": 10_000_001, "lines": ()}, "absurd_amount", "total_cents"),
        ({"event_time": NOW + timedelta(hours=2)}, "future_event_time", "event_time"),
        ({"currency": "euro"}, "schema", "currency"),
    ],
)
def test_each_kind_of_bad_input_has_its_reason(change: dict, reason: str, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError) as info:
        validate(replace(_valid(), **change), NOW)
    assert info.value.reason == reason
    assert info.value.field == field


def test_negative_line_and_duplicate_line_numbers() -> None:
    c = _valid()
    neg = replace(c, lines=(replace(c.lines[0], amount_cents=-218), c.lines[1]), total_cents=282)
    with pytest.raises(ValidationError) as info:
        validate(neg, NOW)
    assert info.value.reason == "negative_amount"
    dup = replace(c, lines=(c.lines[0], replace(c.lines[1], line_no=1)))
    with pytest.raises(ValidationError) as info:
        validate(dup, NOW)
    assert info.value.reason == "duplicate_line"


def test_small_clock_skew_is_accepted() -> None:
    validate(replace(_valid(), event_time=NOW + timedelta(minutes=5)), NOW)


def test_prisma_customer_record_is_product_group_level() -> None:
    routed = process(_valid(), POLICY, None, NOW)
    assert routed.customer.granularity is Granularity.PRODUCT_GROUP
    assert routed.customer.items == ()
    assert {g.product_group: g.amount_cents for g in routed.customer.groups} == {"dairy": 218, "meat": 500}
    assert routed.customer.policy_version == "prisma-pg-2010"
    assert routed.customer.consent == DEFAULT_CONSENT
    assert routed.marketing is None  # no consent record: nothing for marketing


@given(checkouts(), st.one_of(st.none(), consents))
def test_no_output_is_finer_than_allowed(c: Checkout, consent: ConsentState | None) -> None:
    routed = process(c, POLICY, consent, NOW, BASKETS)
    allowed = POLICY.version_at(c.chain, c.event_time).level
    cust = routed.customer
    assert cust.granularity.rank >= allowed.rank
    assert cust.total_cents == c.total_cents
    if cust.granularity is not Granularity.ITEM:
        assert cust.items == ()
    if cust.granularity is Granularity.RECEIPT:
        assert cust.groups == ()
    effective = consent or DEFAULT_CONSENT
    if routed.marketing is not None:
        m = routed.marketing
        assert c.card_id is not None
        assert effective.product_data_marketing or effective.electronic_marketing
        assert m.granularity.rank >= allowed.rank
        if not effective.product_data_marketing:
            assert m.items == ()
            assert m.granularity.rank >= Granularity.PRODUCT_GROUP.rank
    else:
        assert c.card_id is None or not (effective.product_data_marketing or effective.electronic_marketing)
    assert (routed.analytics is not None) == bool(c.lines)
    if routed.analytics is not None:
        a = routed.analytics
        # Nothing on the record names the receipt, its register or card, or its lineage.
        record = a.to_avro()
        assert not {"receipt_id", "register_id", "card_id", "processed_at", "policy_version"} & set(record)
        if len(c.receipt_id) >= 12:  # shorter ones occur in a hex digest by chance
            assert c.receipt_id not in a.basket_id
        assert a.basket_id == BASKETS.basket_id(c.receipt_id, a.key_period)
        assert a.event_hour.minute == 0 and a.event_hour.second == 0 and a.event_hour.microsecond == 0
        assert a.event_hour <= c.event_time < a.event_hour + timedelta(hours=1)
        assert sum(i.amount_cents for i in a.lines) == a.total_cents == c.total_cents
        assert sorted(a.lines, key=lambda x: (x.product_group, x.sku, x.amount_cents)) == list(a.lines)


def test_without_the_key_there_is_no_analytics_record() -> None:
    assert process(_valid(), POLICY, None, NOW).analytics is None
    basket = process(_valid(), POLICY, None, NOW, BASKETS).analytics
    assert basket is not None and basket.key_period == "2026-11" and basket.basket_id != "r-1"


@given(checkouts(), st.one_of(st.none(), consents))
def test_same_input_same_output(c: Checkout, consent: ConsentState | None) -> None:
    assert process(c, POLICY, consent, NOW) == process(c, POLICY, consent, NOW)


@given(checkouts(), st.one_of(st.none(), consents))
def test_marketing_shares_the_customer_record_only_when_equal(c: Checkout, consent: ConsentState | None) -> None:
    # The router encodes a shared record once; that is only right when the two records are equal.
    routed = process(c, POLICY, consent, NOW)
    m = routed.marketing
    if m is None:
        return
    same_detail = (m.granularity, m.items, m.groups) == (
        routed.customer.granularity,
        routed.customer.items,
        routed.customer.groups,
    )
    assert (m is routed.customer) == same_detail
    if m is not routed.customer:
        assert m.granularity.rank > routed.customer.granularity.rank


@given(checkouts(), st.one_of(st.none(), consents))
def test_shared_avro_conversion_equals_separate_conversion(c: Checkout, consent: ConsentState | None) -> None:
    routed = process(c, POLICY, consent, NOW)
    shared: dict[int, list[dict[str, object]]] = {}
    for p in (routed.customer, routed.marketing, routed.analytics):
        if p is not None:
            assert p.to_avro(shared) == p.to_avro()
