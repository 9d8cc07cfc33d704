"""Hypothesis strategies for purchases as the profile agent receives them (any granularity, any consent)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import strategies as st

from receiptflow.models import Checkout, ConsentState, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.router.route import process

from .receipt_shapes import any_shape
from .strategies import NOW, checkouts

POLICY = load_policy()
CARDS = ["6390000000001", "2710000000002", "6390000000019"]


def to_purchase(c: Checkout, product_consent: bool) -> Purchase:
    p = process(c, POLICY, None, NOW + timedelta(seconds=1)).customer
    return replace(p, consent=ConsentState(product_consent, product_consent, True))


@st.composite
def purchase_lists(draw: st.DrawFn, max_size: int = 25, span_days: int = 20 * 365) -> list[Purchase]:
    """Distinct receipts of a few cards, event times within ``span_days`` before NOW, mixed consent."""
    # v1-like sales and the shapes of checkout v2 (refunds, returns, deposits, discounts, voids...).
    cs = draw(st.lists(st.one_of(checkouts(), any_shape), max_size=max_size))
    out = []
    seen: set[str] = set()
    for c in cs:
        # Receipt ids must be unique for distinct receipts; hypothesis may draw the same one twice.
        if c.receipt_id in seen:
            continue
        seen.add(c.receipt_id)
        back = draw(st.integers(0, span_days * 86_400))
        when = (NOW - timedelta(seconds=back)).astimezone(c.event_time.tzinfo)
        card = draw(st.sampled_from(CARDS))
        out.append(to_purchase(replace(c, event_time=when, card_id=card), draw(st.booleans())))
    return out
