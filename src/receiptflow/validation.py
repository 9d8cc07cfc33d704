"""Validation of input records: the reasons a checkout or a consent change is refused.

``validate`` raises :class:`~receiptflow.errors.ValidationError` with a reason code the dead-letter
topic records (:mod:`receiptflow.dlq_write` makes the letter). The producers validate before they send,
the router before it routes, and every reader of consent changes (:mod:`receiptflow.consent_codec`):
so it sits below all of them. Nothing here touches Kafka, Redis or the clock: ``now`` is an argument.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta

from .errors import ValidationError
from .models import Checkout, CheckoutLine, ConsentChange
from .receipt_parts import AMOUNT_SIGN, LineKind, ReceiptKind

# A single receipt above this is a data error, not a sale (100 000 EUR).
MAX_TOTAL_CENTS = 10_000_000
MAX_LINES = 2_000
MAX_QUANTITY = 100_000  # pieces, kg or l on one line, either sign
MAX_FUTURE = timedelta(minutes=10)  # register clocks drift; more than this is a broken clock
EARLIEST_EVENT = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
# A consent change older than this when written is refused (the default of RECEIPTFLOW_CONSENT_MAX_AGE_DAYS).
CONSENT_MAX_AGE = timedelta(days=90)
# Where a customer can give or change consent (a v2 consent change's ``channel``).
CONSENT_CHANNELS = frozenset({"app", "web", "store", "customer_service"})
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


def validate_consent(
    change: ConsentChange, now: datetime, max_age: timedelta = CONSENT_MAX_AGE, *, proof: bool = True
) -> None:
    """Raise ValidationError for a consent change that must not be accepted at ``now``.

    ``now`` is the time the change is judged against: for a record on the ``consents`` topic its
    broker append time (:func:`receiptflow.consent_codec.decode_consent`), so a restore or a replay
    judges it as it was judged when first read. ``proof``: the change must name its principal,
    channel and consent text, as the page and ``produce --kind consent`` write it (readers check
    only their form: a v1 record, or one of an older client, has none of them).
    """
    check_text(change.card_id, "card_id")
    check_text(change.source, "source", required=False)
    check_text(change.principal, "principal", required=proof)
    check_text(change.channel, "channel", required=proof)
    check_text(change.text_version, "text_version", required=proof)
    if change.channel and change.channel not in CONSENT_CHANNELS:
        raise ValidationError(
            "unknown_channel",
            f"channel {change.channel!r} is not one of {', '.join(sorted(CONSENT_CHANNELS))}",
            "channel",
        )
    check_consent_time(change.event_time, now, max_age)


def check_consent_time(event_time: datetime, now: datetime, max_age: timedelta = CONSENT_MAX_AGE) -> None:
    """Raise ValidationError for a consent change's time outside its bounds at ``now``.

    At most the registers' clock drift ahead (``MAX_FUTURE``, as checkouts), never before
    ``EARLIEST_EVENT``, and not older than ``max_age`` (``RECEIPTFLOW_CONSENT_MAX_AGE_DAYS``): a change
    dated ahead would outrank the card holder's own later changes until its date, one dated far back
    is a broken clock or a record held back for no good reason.
    """
    if event_time > now + MAX_FUTURE:
        raise ValidationError(
            "future_event_time",
            f"event_time {event_time.isoformat()} is after {now.astimezone(event_time.tzinfo).isoformat()} "
            f"(when it was written, plus {MAX_FUTURE.seconds // 60} min of clock drift allowed)",
            "event_time",
        )
    if event_time < EARLIEST_EVENT:
        raise ValidationError("absurd_event_time", f"event_time {event_time.isoformat()} is too old", "event_time")
    if event_time < now - max_age:
        raise ValidationError(
            "stale_consent_time",
            f"event_time {event_time.isoformat()} is more than {max_age.days} days before "
            f"{now.astimezone(event_time.tzinfo).isoformat()} (when it was written)",
            "event_time",
        )


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
    _check_kind(c)
    if abs(c.total_cents) > MAX_TOTAL_CENTS:
        raise ValidationError("absurd_amount", f"total_cents {c.total_cents} exceeds {MAX_TOTAL_CENTS}", "total_cents")
    if c.event_time > now + MAX_FUTURE:
        raise ValidationError(
            "future_event_time",
            # Both times in the register's offset, so a person compares like with like.
            f"event_time {c.event_time.isoformat()} is after {now.astimezone(c.event_time.tzinfo).isoformat()} "
            f"(now, plus {MAX_FUTURE.seconds // 60} min of clock drift allowed)",
            "event_time",
        )
    if c.event_time < EARLIEST_EVENT:
        raise ValidationError("absurd_event_time", f"event_time {c.event_time.isoformat()} is too old", "event_time")
    line_sum = _check_lines(c)
    adjusted = 0
    for i, adj in enumerate(c.adjustments):
        check_text(adj.code, f"adjustments[{i}].code", required=False)
        if adj.amount_cents > 0:
            raise ValidationError("wrong_sign", f"a {adj.kind} of +{adj.amount_cents} cents", f"adjustments[{i}]")
        if adj.amount_cents < -MAX_TOTAL_CENTS:
            raise ValidationError("absurd_amount", f"a {adj.kind} of {adj.amount_cents} cents", f"adjustments[{i}]")
        adjusted += adj.amount_cents
    if c.lines and line_sum + adjusted != c.total_cents:
        detail = f" and adjustments {adjusted}" if adjusted else ""
        raise ValidationError(
            "totals_mismatch",
            f"lines add up to {line_sum} cents{detail}, total_cents is {c.total_cents}",
            "total_cents",
        )
    if c.payments:
        paid = sum(p.amount_cents for p in c.payments)
        if paid != c.total_cents or any(abs(p.amount_cents) > MAX_TOTAL_CENTS for p in c.payments):
            raise ValidationError(
                "totals_mismatch", f"payments add up to {paid} cents, total is {c.total_cents}", "payments"
            )


def _check_lines(c: Checkout) -> int:
    """Raise ValidationError for a line that must not be accepted; the lines' amounts added up."""
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
        _check_line(line, where)
        line_sum += line.amount_cents
    return line_sum


def _check_kind(c: Checkout) -> None:
    """The receipt kind's rules: a refund names the receipt it pays back; only a refund names one."""
    if c.receipt_kind is ReceiptKind.REFUND:
        original = c.original_receipt_id
        if original is None or original == c.receipt_id:
            raise ValidationError(
                "missing_original", "a refund must name the receipt it refunds (not itself)", "original_receipt_id"
            )
        check_text(original, "original_receipt_id")
        if c.total_cents > 0:
            raise ValidationError("wrong_sign", f"a refund pays back, total_cents is +{c.total_cents}", "total_cents")
        return
    if c.original_receipt_id is not None:
        raise ValidationError("schema", f"a {c.receipt_kind} receipt names an original receipt", "original_receipt_id")
    if c.receipt_kind is ReceiptKind.CANCEL and c.total_cents != 0:
        raise ValidationError("totals_mismatch", f"a cancelled receipt totals 0, not {c.total_cents}", "total_cents")
    if c.total_cents < 0 and not c.lines:
        # Without lines nothing says what was paid back: the v1 rule.
        raise ValidationError("negative_amount", f"total_cents is {c.total_cents}", "total_cents")


def _check_line(line: CheckoutLine, where: str) -> None:
    """Magnitudes first (garbage), then the signs the line's kind requires (docs/design.md, Receipts v2)."""
    amount, qty, kind = line.amount_cents, line.quantity, line.kind
    if line.unit_price_cents < 0:
        raise ValidationError("negative_amount", f"line {line.line_no} has a negative unit price", where)
    if abs(amount) > MAX_TOTAL_CENTS or line.unit_price_cents > MAX_TOTAL_CENTS:
        raise ValidationError(
            "absurd_amount", f"line {line.line_no} amount {amount}, unit {line.unit_price_cents}", where
        )
    if not abs(qty) <= MAX_QUANTITY:  # also NaN
        raise ValidationError("absurd_amount", f"line {line.line_no} quantity {qty}", where)
    if line.ref_line_no is not None and not 0 < line.ref_line_no <= MAX_INT32:
        raise ValidationError("out_of_range", f"ref_line_no {line.ref_line_no} is not in 1..{MAX_INT32}", where)
    if kind is LineKind.SALE:
        if amount < 0:
            raise ValidationError("negative_amount", f"line {line.line_no} has a negative amount", where)
        if not (qty > 0 or (qty == 0 and amount == 0)):  # quantity 0 and nothing charged: voided in place
            raise ValidationError("absurd_amount", f"line {line.line_no} quantity {qty}", where)
        return
    if AMOUNT_SIGN[kind] > 0:
        ok = amount >= 0 and qty > 0
    elif kind in (LineKind.DISCOUNT, LineKind.BENEFIT):
        ok = amount <= 0 and qty >= 0
    elif kind is LineKind.VOID:
        ok = amount <= 0 and qty <= 0
    else:  # RETURN, DEPOSIT_REFUND: goods or deposit going back
        ok = amount <= 0 and qty < 0
    if not ok:
        raise ValidationError("wrong_sign", f"a {kind} line {line.line_no} with amount {amount}, quantity {qty}", where)
