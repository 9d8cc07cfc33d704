"""The route step with erased cards and retractions, without I/O: both paths drop an erased card's
records before anything else, and a consent change that narrows marketing use writes one retraction."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.card_hash import CardHasher
from receiptflow.codec import Codec
from receiptflow.erasures import ErasedCards
from receiptflow.models import Checkout, CheckoutLine, ConsentChange, ConsentState, PaymentMethod
from receiptflow.policy import load_policy
from receiptflow.processors.router.consent import ConsentHistory
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import DEFAULT_CONSENT
from receiptflow.processors.router.state import PartitionState, Staged
from receiptflow.processors.router.step import Output, RouteStep
from receiptflow.retractions import Reason, Retraction, Scope
from receiptflow.topics import TopicNames

from ...strategies import NOW, checkouts

pytestmark = pytest.mark.unit

NAMES = TopicNames("")
CODEC = Codec()
BASKETS = BasketPseudonymiser(b"route-step-erased-test-analytics-key")
FAST = RouteStep(NAMES, load_policy(), CODEC, BASKETS, DEFAULT_CONSENT, "router-test-0", fast=True)
PYTHON = RouteStep(NAMES, load_policy(), CODEC, BASKETS, DEFAULT_CONSENT, "router-test-0", fast=False)
CARDS = ("6390000000001", "2710000000002")
HASHER = CardHasher(b"route-step-erased-test-erasure-salt")


def _erased(*cards: str) -> ErasedCards:
    erased = ErasedCards(HASHER)
    erased.learn({HASHER(c): NOW - timedelta(days=1) for c in cards})
    return erased


_APPENDED = itertools.count(int(NOW.timestamp() * 1000))


def _msg(topic: str, value: bytes | None, key: bytes | None, offset: int = 0) -> Message:
    # Each consent change appended a millisecond after the one before, at the step's now (they are judged
    # at their append time: one of 1970 would be refused as dated in the future).
    appended = next(_APPENDED) if topic == NAMES.consents else 1_000
    return Message(
        topic=topic, partition=0, offset=offset, key=key, value=value, timestamp=(TIMESTAMP_LOG_APPEND_TIME, appended)
    )


def _checkout_msg(c: Checkout, key: bytes | None = None) -> Message:
    return _msg(NAMES.checkouts, CODEC.encode("checkout", c.to_avro()), key or (c.card_id or c.store_id).encode())


def _consent_msg(card: str, pdm: bool, em: bool, hours_ago: float, key: str | None = None) -> Message:
    change = ConsentChange(card, NOW - timedelta(hours=hours_ago), pdm, em)
    return _msg(NAMES.consents, CODEC.encode("consent_change", change.to_avro()), (key or card).encode())


# --- checkouts ---------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(c=checkouts(), erased=st.sets(st.sampled_from(CARDS)), by_key=st.booleans())
def test_a_checkout_of_an_erased_card_writes_nothing_and_others_are_routed_as_without_erasures(
    c: Checkout, erased: set[str], by_key: bool
) -> None:
    # by_key False: the record is keyed by something else, so only its card id can tell (both paths).
    key = None if by_key else b"store-key"
    for step in (FAST, PYTHON):
        staged, plain = Staged(), Staged()
        result = step.step(_checkout_msg(c, key), {}, staged, NOW, _erased(*erased))
        expected = step.step(_checkout_msg(c, key), {}, plain, NOW)
        if c.card_id is not None and c.card_id in erased:
            assert result.outputs == [] and result.rejected is None
            assert staged.erased == {"checkout": 1} and not staged.seen and not staged.cards
            assert not staged.dead_letters and not staged.routed
        else:
            assert result.outputs == expected.outputs
            assert staged == plain and not staged.erased


def test_an_invalid_checkout_of_an_erased_card_is_no_dead_letter() -> None:
    c = replace(_valid(), total_cents=1)  # totals do not add up: a dead letter for any other card
    assert PYTHON.step(_checkout_msg(c), {}, Staged(), NOW).rejected is not None
    for key in (None, b"store-key"):  # caught by the key, and by the card id alone
        staged = Staged()
        result = PYTHON.step(_checkout_msg(c, key), {}, staged, NOW, _erased(CARDS[0]))
        assert result.outputs == [] and result.rejected is None
        assert staged.erased == {"checkout": 1} and not staged.dead_letters


def test_an_undecodable_record_keyed_by_an_erased_card_is_no_dead_letter() -> None:
    staged = Staged()
    result = PYTHON.step(_msg(NAMES.checkouts, b"\x00garbage", CARDS[0].encode()), {}, staged, NOW, _erased(CARDS[0]))
    assert result.outputs == [] and staged.erased == {"checkout": 1} and not staged.dead_letters


def _valid() -> Checkout:
    line = CheckoutLine(1, "6410100000000", "dairy", 2.0, 109, 218)
    when = NOW - timedelta(hours=1)
    return Checkout("r-1", "SOKOS", "SOKOS-0001", "01", CARDS[0], when, PaymentMethod("CARD"), 218, (line,))


# --- consent changes ---------------------------------------------------------------------------------
def test_a_consent_change_of_an_erased_card_changes_nothing() -> None:
    for key in (None, "2710000000002"):  # keyed by the card, or by another: the card id in it counts
        staged = Staged()
        result = PYTHON.step(_consent_msg(CARDS[0], True, True, 1, key), {}, staged, NOW, _erased(CARDS[0]))
        assert result.outputs == [] and result.rejected is None
        assert staged.erased == {"consent": 1} and not staged.consent and staged.consent_changes == 0


def test_the_erasures_tombstone_still_clears_the_cards_history() -> None:
    history = ConsentHistory().with_change(ConsentChange(CARDS[0], NOW - timedelta(days=1), True, True))
    state = {0: PartitionState(consent={CARDS[0]: history})}
    staged = Staged()
    result = PYTHON.step(_msg(NAMES.consents, None, CARDS[0].encode()), state, staged, NOW, _erased(CARDS[0]))
    assert result.outputs == [] and not staged.erased
    assert staged.consent[(0, CARDS[0])] == ConsentHistory()


def _retractions(outputs: list[Output]) -> list[Retraction]:
    assert all(o.topic == NAMES.retractions for o in outputs)
    return [Retraction.from_avro(CODEC.decode(o.value, expect="retraction").value) for o in outputs]


@pytest.mark.parametrize(
    ("before", "after", "scope"),
    [
        ((True, True), (False, True), Scope.PRODUCT_DATA),
        ((True, True), (True, False), Scope.ELECTRONIC),
        ((True, True), (False, False), Scope.ALL),
        ((True, False), (False, False), Scope.ALL),
        ((False, True), (False, False), Scope.ALL),
        ((False, False), (True, True), None),
        ((True, False), (True, True), None),
        ((True, True), (True, True), None),
    ],
)
def test_a_consent_change_that_narrows_marketing_use_writes_a_retraction(
    before: tuple[bool, bool], after: tuple[bool, bool], scope: Scope | None
) -> None:
    staged = Staged()
    assert PYTHON.step(_consent_msg(CARDS[0], *before, hours_ago=9), {}, staged, NOW).outputs == []
    result = PYTHON.step(_consent_msg(CARDS[0], *after, hours_ago=3), {}, staged, NOW)
    found = _retractions(result.outputs)
    if scope is None:
        assert found == [] and not staged.retractions
        return
    assert found == [Retraction(CARDS[0], Reason.WITHDRAWAL, scope, NOW - timedelta(hours=3), NOW, "router-test-0")]
    assert [o.key for o in result.outputs] == [CARDS[0].encode()]
    assert staged.retractions == {str(scope): 1} and staged.routed[NAMES.retractions] == 1
    # The same change delivered again retracts nothing more.
    assert PYTHON.step(_consent_msg(CARDS[0], *after, hours_ago=3), {}, staged, NOW).outputs == []


def test_a_first_withdrawal_narrows_from_the_configured_default() -> None:
    generous = RouteStep(NAMES, load_policy(), CODEC, BASKETS, ConsentState(True, True, False), "r", fast=False)
    assert _retractions(generous.step(_consent_msg(CARDS[0], False, False, 1), {}, Staged(), NOW).outputs)[0].scope == (
        Scope.ALL
    )
    assert PYTHON.step(_consent_msg(CARDS[0], False, False, 1), {}, Staged(), NOW).outputs == []


def test_a_late_withdrawal_behind_a_newer_grant_still_retracts() -> None:
    # The grant is newer by event time, so the card's newest state stays granted; the withdrawal's own
    # state narrows what marketing may have had between the two (the stricter reading).
    staged = Staged()
    PYTHON.step(_consent_msg(CARDS[0], True, True, hours_ago=1), {}, staged, NOW)
    result = PYTHON.step(_consent_msg(CARDS[0], False, False, hours_ago=5), {}, staged, NOW)
    [retraction] = _retractions(result.outputs)
    assert retraction.scope is Scope.ALL and retraction.effective_at == NOW - timedelta(hours=5)
