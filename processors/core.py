"""The processor's pure core: validate a checkout and route it to the output topics.

``validate`` raises :class:`~receiptflow.errors.ValidationError` with a reason code the dead-letter
topic records; ``route`` turns a valid checkout, the policy decision and the consent state into the
records for ``purchases.customer``, ``purchases.marketing`` and ``purchases.analytics``. Nothing here
touches Kafka, Redis or the clock: ``now`` is an argument, so the same input always gives the same
output.

The analytics record is an :class:`~receiptflow.models.AnalyticsBasket`, not a purchase: it must not
be joinable to the card-linked records of the same receipt, so it carries no receipt, register or
card id, no processing time, no policy lineage and no exact event time. Its basket id comes from the
:class:`~receiptflow.processors.pseudonym.BasketPseudonymiser` the caller passes in (the key is read
by the caller; without one no analytics record is made).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from ..errors import ValidationError
from ..models import (
    AnalyticsBasket,
    BasketLine,
    Checkout,
    CheckoutLine,
    ConsentChange,
    ConsentState,
    Granularity,
    GroupTotal,
    Purchase,
    offset_minutes_of,
)
from .policy import Decision, Policy, group_totals, truncate
from .pseudonym import BasketPseudonymiser, key_period

# A single receipt above this is a data error, not a sale (100 000 EUR).
MAX_TOTAL_CENTS = 10_000_000
MAX_LINES = 2_000
MAX_FUTURE = timedelta(minutes=10)  # register clocks drift; more than this is a broken clock
EARLIEST_EVENT = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Ids, SKUs and group names: far below the broker's 1 MB message limit, and what a warehouse key
# column and an index can hold. Avro ``int`` fields (and INTEGER columns) are 32-bit.
MAX_STRING_CHARS = 128
MAX_INT32 = 2**31 - 1
# Control, format (zero-width, bidi overrides), surrogate, private-use, unassigned and line/paragraph
# separator characters: invisible or ambiguous in an id, so "6390…01" and "6390…01\u200b" would
# become two cards that look the same.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def check_text(value: str, field: str, *, required: bool = True) -> None:
    """Raise ValidationError unless ``value`` is a short NFC string without control or invisible characters."""
    if required and not value.strip():
        raise ValidationError("missing_id", f"{field} is empty", field)
    if len(value) > MAX_STRING_CHARS:
        raise ValidationError("too_long", f"{field} has {len(value)} characters (at most {MAX_STRING_CHARS})", field)
    if not value.isascii():
        for ch in value:
            if unicodedata.category(ch) in _BAD_CATEGORIES:
                raise ValidationError("invalid_characters", f"{field} contains U+{ord(ch):04X}", field)
        if not unicodedata.is_normalized("NFC", value):
            raise ValidationError("not_normalized", f"{field} is not in Unicode NFC", field)
    elif not value.isprintable():
        bad = next(ch for ch in value if not ch.isprintable())
        raise ValidationError("invalid_characters", f"{field} contains U+{ord(bad):04X}", field)


def validate_consent(change: ConsentChange) -> None:
    """Raise ValidationError for a consent change that must not be accepted."""
    check_text(change.card_id, "card_id")
    check_text(change.source, "source", required=False)


# No consent record: nothing may be used for marketing (privacy-safe default).
DEFAULT_CONSENT = ConsentState(product_data_marketing=False, electronic_marketing=False, known=False)


def validate(c: Checkout, now: datetime) -> None:
    """Raise ValidationError(reason, message, field) for a checkout that must not be accepted."""
    for name in ("receipt_id", "chain", "store_id", "register_id"):
        check_text(getattr(c, name), name)
    if c.card_id is not None:
        if not c.card_id.strip():
            raise ValidationError("missing_id", "card_id is an empty string (use null for anonymous)", "card_id")
        check_text(c.card_id, "card_id")
    if not _CURRENCY.match(c.currency):
        raise ValidationError("schema", f"currency {c.currency!r} is not an ISO 4217 code", "currency")
    if c.total_cents < 0:
        raise ValidationError("negative_amount", f"total_cents is {c.total_cents}", "total_cents")
    if c.total_cents > MAX_TOTAL_CENTS:
        raise ValidationError("absurd_amount", f"total_cents {c.total_cents} exceeds {MAX_TOTAL_CENTS}", "total_cents")
    if c.event_time > now + MAX_FUTURE:
        raise ValidationError(
            "future_event_time", f"event_time {c.event_time.isoformat()} is after {now.isoformat()}", "event_time"
        )
    if c.event_time < EARLIEST_EVENT:
        raise ValidationError("absurd_event_time", f"event_time {c.event_time.isoformat()} is too old", "event_time")
    if len(c.lines) > MAX_LINES:
        raise ValidationError("absurd_amount", f"{len(c.lines)} lines on one receipt", "lines")
    seen: set[int] = set()
    line_sum = 0
    for i, line in enumerate(c.lines):
        where = f"lines[{i}]"
        if not 0 < line.line_no <= MAX_INT32:
            raise ValidationError(
                "out_of_range", f"line_no {line.line_no} is not in 1..{MAX_INT32}", f"{where}.line_no"
            )
        if line.line_no in seen:
            raise ValidationError("duplicate_line", f"line_no {line.line_no} appears twice", f"{where}.line_no")
        seen.add(line.line_no)
        check_text(line.sku, f"{where}.sku")
        check_text(line.product_group, f"{where}.product_group")
        if line.amount_cents < 0 or line.unit_price_cents < 0:
            raise ValidationError("negative_amount", f"line {line.line_no} has a negative amount", where)
        if line.amount_cents > MAX_TOTAL_CENTS or line.unit_price_cents > MAX_TOTAL_CENTS:
            raise ValidationError(
                "absurd_amount", f"line {line.line_no} amount {line.amount_cents}, unit {line.unit_price_cents}", where
            )
        if not line.quantity > 0 or line.quantity > 100_000:
            raise ValidationError("absurd_amount", f"line {line.line_no} quantity {line.quantity}", where)
        line_sum += line.amount_cents
    if c.lines and line_sum != c.total_cents:
        raise ValidationError(
            "totals_mismatch", f"lines add up to {line_sum} cents, total_cents is {c.total_cents}", "total_cents"
        )


@dataclass(frozen=True, slots=True)
class Routed:
    """What one valid checkout becomes; None means: nothing for that topic."""

    customer: Purchase
    marketing: Purchase | None
    analytics: AnalyticsBasket | None


def _round_to_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# The canonical order of a basket's lines (a C-level key: this runs for every line of every receipt).
_LINE_ORDER = attrgetter("product_group", "sku", "amount_cents", "quantity", "unit_price_cents")


def analytics_basket(c: Checkout, baskets: BasketPseudonymiser) -> AnalyticsBasket:
    """The anonymous analytics record of a valid checkout with lines.

    The lines are sorted into a canonical order: the register's line numbers and scanning order are
    facts of the receipt that the card-linked items keep, so the basket does not.
    """
    period = key_period(c.event_time)
    lines = tuple(
        [
            BasketLine(i.sku, i.product_group, i.quantity, i.unit_price_cents, i.amount_cents)
            for i in sorted(c.lines, key=_LINE_ORDER)
        ]
    )
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
    groups = group_totals(c.lines) if c.lines else ()
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
    )
    marketing: Purchase | None = None
    if c.card_id is not None and (consent.product_data_marketing or consent.electronic_marketing):
        # Without product-data consent, marketing sees product groups at most.
        level = decision.level if consent.product_data_marketing else decision.level.coarsest(Granularity.PRODUCT_GROUP)
        if level is decision.level:
            marketing = customer
        else:
            m_gran, m_items, m_groups = truncate(c, level, groups)
            marketing = _with_detail(customer, m_gran, m_items, m_groups)
    # Anonymous line-level data: no card, no register, no receipt id, the hour of the sale only.
    analytics = analytics_basket(c, baskets) if c.lines and baskets is not None else None
    return Routed(customer, marketing, analytics)


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


def dead_letter_record(
    exc: ValidationError,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    now: datetime,
    processor: str,
) -> dict[str, object]:
    """The ``dead_letter`` record for rejected input: the original bytes, why, and where they came from."""
    return {
        "reason": exc.reason,
        "message": exc.message,
        "field": exc.field,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "original_key": key,
        "original_value": value,
        "failed_at": now,
        "processor": processor,
    }
