"""The processor's pure core: route a valid checkout to the output topics.

Validation lives in :mod:`receiptflow.validation` (the producers and the dead-letter path use it too);
``process`` validates, then routes. ``route`` turns a valid checkout, the policy decision and the consent state into the
records for ``purchases.customer``, ``purchases.marketing`` and ``purchases.baskets`` (the anonymous
basket, which only the aggregator reads and publishes as analytics cells). Nothing here
touches Kafka, Redis or the clock: ``now`` is an argument, so the same input always gives the same
output.

The analytics record is an :class:`~receiptflow.models.AnalyticsBasket`, not a purchase: it must not
be joinable to the card-linked records of the same receipt, so it carries no receipt, register or
card id, no processing time, no policy lineage and no exact event time. Its basket id comes from the
:class:`~receiptflow.processors.router.pseudonym.BasketPseudonymiser` the caller passes in (the key is read
by the caller; without one no analytics record is made).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter

from receiptflow.adjustment_split import line_shares
from receiptflow.models import (
    AnalyticsBasket,
    BasketLine,
    Checkout,
    CheckoutLine,
    ConsentState,
    Granularity,
    GroupTotal,
    Purchase,
    offset_minutes_of,
)
from receiptflow.policy import Decision, Policy, deposit_cents, group_totals, truncate
from receiptflow.validation import validate

from .pseudonym import BasketPseudonymiser, key_period

# No consent record: nothing may be used for marketing (privacy-safe default).
DEFAULT_CONSENT = ConsentState(product_data_marketing=False, electronic_marketing=False, known=False)


@dataclass(frozen=True, slots=True)
class Routed:
    """What one valid checkout becomes; None means: nothing for that topic."""

    customer: Purchase
    marketing: Purchase | None
    analytics: AnalyticsBasket | None


def _round_to_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# The canonical order of a basket's lines (a C-level key: this runs for every line of every receipt).
_LINE_ORDER = attrgetter(
    "product_group", "sku", "amount_cents", "quantity", "unit_price_cents", "kind", "unit", "adjustment_cents"
)


def analytics_basket(c: Checkout, baskets: BasketPseudonymiser) -> AnalyticsBasket:
    """The anonymous analytics record of a valid checkout with lines.

    The lines are sorted into a canonical order: the register's line numbers and scanning order are
    facts of the receipt that the card-linked items keep, so the basket does not. Each goods line
    carries its share of the receipt-level adjustments (:mod:`receiptflow.adjustment_split`), which
    is what keeps the line numbers out: the share is worked out here, where they are known. A refund
    names no original: baskets of one shopper stay unlinkable.
    """
    period = key_period(c.event_time)
    shares = line_shares(c.lines, c.adjustments) if c.adjustments else {}
    made = [
        BasketLine(
            i.sku,
            i.product_group,
            i.quantity,
            i.unit_price_cents,
            i.amount_cents,
            i.kind,
            i.unit,
            shares.get(i.line_no, 0),
        )
        for i in c.lines
    ]
    lines = tuple(sorted(made, key=_LINE_ORDER))
    return AnalyticsBasket(
        basket_id=baskets.basket_id(c.receipt_id, period),
        key_period=period,
        chain=c.chain,
        store_id=c.store_id,
        event_hour=_round_to_hour(c.event_time),
        event_tz_offset_minutes=offset_minutes_of(c.event_time),
        payment_method=str(c.payment_method),
        currency=c.currency,
        total_cents=c.total_cents,
        lines=lines,
        receipt_kind=c.receipt_kind,
        deposit_cents=deposit_cents(c.lines),
        adjustment_cents=sum([a.amount_cents for a in c.adjustments]),
    )


def route(
    c: Checkout,
    decision: Decision,
    consent: ConsentState,
    now: datetime,
    baskets: BasketPseudonymiser | None = None,
) -> Routed:
    """Apply the policy level and consent to a valid checkout.

    When the marketing record would equal the customer record, ``marketing is customer`` (the same
    object): callers may then encode it once. The analytics record needs ``baskets`` (the keyed
    pseudonymiser); without it, or for a checkout without lines, ``analytics`` is None.
    """
    groups = group_totals(c.lines, c.adjustments) if c.lines else ()
    granularity, items, cgroups = truncate(c, decision.level, groups)
    customer = Purchase(
        receipt_id=c.receipt_id,
        chain=c.chain,
        store_id=c.store_id,
        register_id=c.register_id,
        card_id=c.card_id,
        event_time=c.event_time,
        payment_method=str(c.payment_method),
        currency=c.currency,
        total_cents=c.total_cents,
        granularity=granularity,
        items=items,
        groups=cgroups,
        policy_version=decision.version_id,
        consent=consent,
        processed_at=now,
        receipt_kind=c.receipt_kind,
        original_receipt_id=c.original_receipt_id,
        deposit_cents=deposit_cents(c.lines),
        adjustment_cents=sum([a.amount_cents for a in c.adjustments]),
    )
    marketing: Purchase | None = None
    level = marketing_level(c.card_id is not None, consent, decision.level)
    if level is not None:
        if level is decision.level:
            marketing = customer
        else:
            m_gran, m_items, m_groups = truncate(c, level, groups)
            marketing = _with_detail(customer, m_gran, m_items, m_groups)
    # Anonymous line-level data: no card, no register, no receipt id, the hour of the sale only.
    analytics = analytics_basket(c, baskets) if c.lines and baskets is not None else None
    return Routed(customer, marketing, analytics)


def marketing_level(has_card: bool, consent: ConsentState, level: Granularity) -> Granularity | None:
    """The level of the marketing record of a receipt routed at ``level``; None: no marketing record.

    Only a card holder's receipt, and only with some marketing consent; without product-data
    consent, marketing sees product groups at most.
    """
    if not has_card or not (consent.product_data_marketing or consent.electronic_marketing):
        return None
    return level if consent.product_data_marketing else level.coarsest(Granularity.PRODUCT_GROUP)


def _with_detail(
    p: Purchase, granularity: Granularity, items: tuple[CheckoutLine, ...], groups: tuple[GroupTotal, ...]
) -> Purchase:
    # The same copy as dataclasses.replace, without its per-call field introspection (hot path).
    return Purchase(
        receipt_id=p.receipt_id,
        chain=p.chain,
        store_id=p.store_id,
        register_id=p.register_id,
        card_id=p.card_id,
        event_time=p.event_time,
        payment_method=p.payment_method,
        currency=p.currency,
        total_cents=p.total_cents,
        granularity=granularity,
        items=items,
        groups=groups,
        policy_version=p.policy_version,
        consent=p.consent,
        processed_at=p.processed_at,
        receipt_kind=p.receipt_kind,
        original_receipt_id=p.original_receipt_id,
        deposit_cents=p.deposit_cents,
        adjustment_cents=p.adjustment_cents,
    )


def process(
    c: Checkout,
    policy: Policy,
    consent: ConsentState | None,
    now: datetime,
    baskets: BasketPseudonymiser | None = None,
) -> Routed:
    """validate + policy decision + route; raises ValidationError for invalid input."""
    validate(c, now)
    return route(c, policy.version_at(c.chain, c.event_time), consent or DEFAULT_CONSENT, now, baskets)
