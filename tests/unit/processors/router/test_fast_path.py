"""The compiled fast path against the Python core: the same records, byte for byte, and the same dead letters.

Two router steps over the same schemas, policy and analytics key, one with the fast path and one
without, take the same input (generated checkouts of every receipt shape, v1 and v2 writers, any
consent state, mutated and garbage bytes) and must produce equal outputs (topic, key, value bytes,
timestamp), the same rejection and the same staged changes. The fast path must also really take the
valid checkouts it is meant for, or the equality would prove nothing.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import replace
from datetime import timedelta
from typing import Any

import fastavro
import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiptflow.codec import Codec
from receiptflow.models import (
    Checkout,
    CheckoutLine,
    ConsentChange,
    ConsentState,
    LineKind,
    PaymentMethod,
    ReceiptKind,
    Unit,
)
from receiptflow.policy import load_policy
from receiptflow.processors.router import fast_path
from receiptflow.processors.router.consent import ConsentHistory
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.state import PartitionState, Staged
from receiptflow.processors.router.step import RouteStep, StepResult
from receiptflow.receipt_parts import Adjustment, AdjustmentKind
from receiptflow.topics import TopicNames

from ...receipt_shapes import any_shape, refund
from ...strategies import NOW, checkouts
from ...test_adjustment_split import goods_lines
from ...test_fuzz import edge_checkouts, framed_garbage, mutated, valid_checkouts

pytestmark = pytest.mark.unit

NAMES = TopicNames("")
CODEC = Codec()
POLICY = load_policy()
BASKETS = BasketPseudonymiser(b"fast-path-test-analytics-key")
DEFAULT = ConsentState(False, False, known=False)
FAST = RouteStep(NAMES, POLICY, CODEC, BASKETS, DEFAULT, "router-test-0", fast=True)
PYTHON = RouteStep(NAMES, POLICY, CODEC, BASKETS, DEFAULT, "router-test-0", fast=False)
CARDS = ["6390000000001", "2710000000002"]
EQUAL = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _message(value: bytes | None, key: bytes | None = b"k", offset: int = 7) -> Message:
    return Message(
        topic=NAMES.checkouts,
        partition=0,
        offset=offset,
        key=key,
        value=value,
        timestamp=(TIMESTAMP_LOG_APPEND_TIME, 1_764_000_000_123),
    )


def _v1(c: Checkout) -> bytes:
    """``c`` written with checkout v1 (schema id 1): the fast path then reads it the way Avro resolution does."""
    v1 = CODEC.catalog.by_id(1)
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, v1.schema_id))
    fastavro.schemaless_writer(buf, v1.fast, c.to_avro())
    return buf.getvalue()


def _v1_compatible(c: Checkout) -> bool:
    plain_lines = all(x.kind is LineKind.SALE and x.unit is Unit.PIECE and x.ref_line_no is None for x in c.lines)
    return c.receipt_kind is ReceiptKind.SALE and not c.adjustments and not c.payments and plain_lines


@st.composite
def consent_states(draw: st.DrawFn) -> dict[int, PartitionState]:
    """Committed consent histories for the cards: none, or one or two changes before and after the sales."""
    consent = {}
    for card in CARDS:
        history = ConsentHistory()
        for _ in range(draw(st.integers(0, 2))):
            at = NOW - timedelta(days=draw(st.integers(0, 30 * 365)))
            history = history.with_change(ConsentChange(card, at, draw(st.booleans()), draw(st.booleans())))
        if history.changes:
            consent[card] = history
    return {0: PartitionState(consent=consent)}


def _both(
    value: bytes | None, state: dict[int, PartitionState], fast_step: RouteStep = FAST
) -> tuple[StepResult, Staged]:
    """Route ``value`` both ways; assert the results are equal and return the fast path's."""
    fast_staged, python_staged = Staged(), Staged()
    fast = fast_step.step(_message(value), state, fast_staged, NOW)
    python = PYTHON.step(_message(value), state, python_staged, NOW)
    assert fast.outputs == python.outputs
    assert (fast.rejected is None) == (python.rejected is None)
    if python.rejected is not None:
        assert fast.rejected is not None
        assert (fast.rejected.reason, fast.rejected.message, fast.rejected.field) == (
            python.rejected.reason,
            python.rejected.message,
            python.rejected.field,
        )
    assert fast.unknown_chain == python.unknown_chain
    assert fast_staged == python_staged
    return fast, fast_staged


# A decision for calling the extension directly: item level for both, a policy version, full consent.
DECISION = (0, 0, "test-policy", (True, True, True))


def _taken(value: bytes) -> bool:
    """Whether the one-call form (``handle``) takes ``value``: it asks for a decision and writes the records.

    It must agree with the older two-call form the extension keeps for older revisions (``decode``,
    then ``route``): the same facts to decide on, the same records for the same decision, and a
    reason it can name whenever ``decode`` declines.
    """
    fast = FAST.fast
    assert fast is not None
    asked = []

    def decide(*facts: object) -> tuple[int, int | None, str, tuple[bool, bool, bool], str]:
        asked.append(facts)
        return (*DECISION, "context")

    handled = fast.handle(value, fast_path.millis(NOW), decide)
    facts = fast.decode(value, fast_path.millis(NOW))
    assert asked == ([facts] if facts is not None else [])
    if facts is None:
        assert isinstance(handled, str) and handled in fast_path.DECLINED
        return False
    routed = fast.route(value, *DECISION, fast_path.millis(NOW))
    assert routed is not None and handled == ("context", *routed)
    return True


def test_the_fast_path_is_built_and_takes_the_bundled_schemas() -> None:
    # `make setup` builds the extension; without it (or with a schema field it cannot map) this fails,
    # so the equality tests below never pass by comparing the Python core with itself.
    assert fast_path.available(), "receiptflow_fast is not built: run make setup"
    assert FAST.fast is not None and PYTHON.fast is None


@EQUAL
@given(st.one_of(checkouts(), any_shape), consent_states())
def test_valid_checkouts_are_routed_to_the_same_bytes(c: Checkout, state: dict[int, PartitionState]) -> None:
    value = CODEC.encode("checkout", c.to_avro())
    assert FAST.fast is not None
    # The generated checkouts are valid printable-ASCII receipts: the fast path must take every one.
    assert FAST.fast.decode(value, fast_path.millis(NOW)) is not None
    assert _taken(value)
    result, staged = _both(value, state)
    assert result.rejected is None and sum(staged.routed.values()) == len(result.outputs) >= 1


@EQUAL
@given(checkouts().filter(_v1_compatible), consent_states())
def test_v1_checkouts_are_routed_to_the_same_bytes(c: Checkout, state: dict[int, PartitionState]) -> None:
    value = _v1(c)
    assert FAST.fast is not None and FAST.fast.decode(value, fast_path.millis(NOW)) is not None
    assert _taken(value)
    _both(value, state)


@EQUAL
@given(st.one_of(mutated(valid_checkouts), framed_garbage, edge_checkouts(), st.binary(max_size=64), st.none()))
def test_garbage_gets_the_same_dead_letter_or_the_same_records(value: bytes | None) -> None:
    if value is not None:
        _taken(value)  # whichever way, the one-call form agrees with the two-call form
    _both(value, {})


@EQUAL
@given(any_shape)
def test_an_invalid_change_of_a_valid_receipt_is_left_to_the_python_core(c: Checkout) -> None:
    # Broken on purpose in ways the fast path checks itself: it must decline, the core dead-letters.
    broken = [
        c.to_avro() | {"total_cents": c.total_cents + 1} if c.lines else None,
        c.to_avro() | {"currency": "eur"},
        c.to_avro() | {"receipt_id": " "},
        c.to_avro() | {"store_id": "S\u00e4-1"},  # valid, but not ASCII: the core decides
        c.to_avro() | {"event_time": NOW + timedelta(minutes=11)},
    ]
    assert FAST.fast is not None
    for record in broken:
        if record is None:
            continue
        value = CODEC.encode("checkout", record)
        assert FAST.fast.decode(value, fast_path.millis(NOW)) is None
        assert not _taken(value)
        _both(value, {})


def test_a_duplicate_is_dropped_the_same_way() -> None:
    c = CODEC.encode("checkout", _sample().to_avro())
    for step in (FAST, PYTHON):
        staged = Staged()
        first = step.step(_message(c), {}, staged, NOW)
        second = step.step(_message(c), {}, staged, NOW)
        assert first.outputs and second.outputs == [] and staged.duplicates == 1


def _sample() -> Checkout:
    return Checkout(
        receipt_id="R-1",
        chain="SOKOS",
        store_id="SOKOS-0001",
        register_id="01",
        card_id=CARDS[0],
        event_time=NOW - timedelta(hours=1),
        payment_method=PaymentMethod.CARD,
        total_cents=218,
        lines=(CheckoutLine(1, "6410100000000", "dairy", 2.0, 109, 218),),
    )


def test_an_output_field_without_a_mapping_is_refused_at_start_up() -> None:
    # A new schema version the fast path has no value for (here a basket line colour) must switch it
    # off when the router starts, not write records without that field.
    assert fast_path.FastRouter is not None
    header, raw = CODEC.writer("analytics_basket")
    changed = json.loads(json.dumps(raw))
    changed["fields"][-1]["type"]["items"]["fields"].append({"name": "colour", "type": "string"})
    checkouts = [(v.schema_id, json.dumps(v.raw), True) for v in CODEC.catalog.versions("checkout")]
    purchase_header, purchase = CODEC.writer("purchase")
    purchase_args = (purchase_header, json.dumps(purchase))
    with pytest.raises(ValueError, match="colour"):
        fast_path.FastRouter(checkouts, purchase_args, (header, json.dumps(changed)), BASKETS.key)
    assert fast_path.FastRouter(checkouts, purchase_args, (header, json.dumps(raw)), BASKETS.key) is not None


@st.composite
def adjusted_receipts(draw: st.DrawFn) -> Checkout:
    """Receipts with receipt-level adjustments over goods, returns, deposits and reducing lines that name a line."""
    # A deposit is charged with a positive quantity (the split's own strategy does not need that).
    lines = [replace(x, quantity=abs(x.quantity)) if x.kind is LineKind.DEPOSIT else x for x in draw(goods_lines)]
    for kind in draw(st.lists(st.sampled_from([LineKind.DISCOUNT, LineKind.BENEFIT, LineKind.VOID]), max_size=3)):
        target = draw(st.sampled_from(lines))
        off = draw(st.integers(0, 2_000))
        qty = -1.0 if kind is LineKind.VOID else 0.0
        no = len(lines) + 1
        lines.append(CheckoutLine(no, "SKU", target.product_group, qty, 0, -off, kind, ref_line_no=target.line_no))
    adjustments = tuple(
        Adjustment(draw(st.sampled_from(list(AdjustmentKind))), "BONUS", -draw(st.integers(0, 20_000)))
        for _ in range(draw(st.integers(1, 3)))
    )
    total = sum(x.amount_cents for x in lines) + sum(a.amount_cents for a in adjustments)
    return Checkout(
        receipt_id=f"R-{draw(st.integers(1, 10**9))}",
        chain=draw(st.sampled_from(["SOKOS", "PRISMA", "K_MARKET"])),
        store_id="S-1",
        register_id="3",
        card_id=draw(st.sampled_from([None, *CARDS])),
        event_time=NOW - timedelta(minutes=draw(st.integers(1, 10_000))),
        payment_method=PaymentMethod.CARD,
        total_cents=total,
        lines=tuple(lines),
        adjustments=adjustments,
    )


@EQUAL
@given(adjusted_receipts(), consent_states())
def test_receipt_level_adjustments_are_split_the_same_way(c: Checkout, state: dict[int, PartitionState]) -> None:
    value = CODEC.encode("checkout", c.to_avro())
    assert FAST.fast is not None and FAST.fast.decode(value, fast_path.millis(NOW)) is not None
    assert _taken(value)
    result, _ = _both(value, state)
    assert result.rejected is None


class _CountingStep(RouteStep):
    """A route step that counts its consent lookups (one per routed checkout, on either path)."""

    lookups = 0

    def _consent(self, *args: Any) -> ConsentState:
        self.lookups += 1
        return super()._consent(*args)


def _unwritable_refunds() -> _CountingStep:
    """A fast step whose purchase writer lacks the REFUND receipt kind, which the start-up check does not
    write: the fast path decides a refund, cannot write it, and the Python core routes it."""
    step = _CountingStep(NAMES, POLICY, CODEC, BASKETS, DEFAULT, "router-test-0", fast=True)
    header, raw = CODEC.writer("purchase")
    changed = json.loads(json.dumps(raw))
    kind = next(f for f in changed["fields"] if f["name"] == "receipt_kind")
    kind["type"]["symbols"].remove("REFUND")
    checkouts = [
        (v.schema_id, json.dumps(v.raw), CODEC.splices_lines(v.schema_id)) for v in CODEC.catalog.versions("checkout")
    ]
    basket_header, basket = CODEC.writer("analytics_basket")
    step.fast = fast_path.FastRouter(
        checkouts, (header, json.dumps(changed)), (basket_header, json.dumps(basket)), BASKETS.key
    )
    return step


UNWRITABLE_REFUNDS = _unwritable_refunds()


@EQUAL
@given(refund(), consent_states())
def test_a_decided_checkout_the_fast_path_cannot_write_is_routed_by_the_core_on_that_decision(
    c: Checkout, state: dict[int, PartitionState]
) -> None:
    value = CODEC.encode("checkout", c.to_avro())
    fast = UNWRITABLE_REFUNDS.fast
    assert fast is not None
    handled = fast.handle(value, fast_path.millis(NOW), lambda *facts: (*DECISION, "context"))
    assert handled == ("context", None, None, None)  # decided, not written
    before = UNWRITABLE_REFUNDS.lookups
    result, _ = _both(value, state, UNWRITABLE_REFUNDS)
    assert result.rejected is None and result.outputs
    # The core routed on the fast path's decision: dedup, policy and consent were not done again.
    assert UNWRITABLE_REFUNDS.lookups - before == 1
