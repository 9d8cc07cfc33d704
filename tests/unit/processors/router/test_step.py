"""The router's per-record step without a broker: what a checkout or consent record becomes and what it stages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Message
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from receiptflow.codec import Codec
from receiptflow.metrics import Metrics
from receiptflow.models import Checkout, CheckoutLine, ConsentChange, ConsentState, PaymentMethod
from receiptflow.policy import load_policy
from receiptflow.processors.router.consent import ConsentHistory
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import DEFAULT_CONSENT
from receiptflow.processors.router.state import PartitionState, RouterStats, Staged
from receiptflow.processors.router.step import RouteStep, marketing_outcome
from receiptflow.topics import TopicNames

from ...strategies import NOW, checkouts

pytestmark = pytest.mark.unit

NAMES = TopicNames("")
CODEC = Codec()
STEP = RouteStep(
    NAMES, load_policy(), CODEC, BasketPseudonymiser(b"route-step-test-analytics-key"), DEFAULT_CONSENT, "router-test-0"
)
CARD = "6390000000001"


def _checkout(receipt: str = "r-1", chain: str = "SOKOS", **change: Any) -> Checkout:
    lines = (
        CheckoutLine(1, "6410100000000", "dairy", 2.0, 109, 218),
        CheckoutLine(2, "6410103779194", "meat", 1.0, 500, 500),
    )
    fields: dict[str, Any] = {
        "receipt_id": receipt,
        "chain": chain,
        "store_id": f"{chain}-0001",
        "register_id": "01",
        "card_id": CARD,
        "event_time": NOW - timedelta(hours=1),
        "payment_method": PaymentMethod("CARD"),
        "total_cents": 718,
        "lines": lines,
    } | change
    return Checkout(**fields)


def _msg(topic: str, value: bytes | None, key: bytes | None = None, partition: int = 0, offset: int = 0) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=key, value=value)


def _checkout_msg(c: Checkout, offset: int = 0) -> Message:
    key = (c.card_id or c.store_id).encode()
    return _msg(NAMES.checkouts, CODEC.encode("checkout", c.to_avro()), key, offset=offset)


def _consent_msg(pdm: bool, em: bool, at_hours_ago: float, card: str = CARD) -> Message:
    change = ConsentChange(card, NOW - timedelta(hours=at_hours_ago), pdm, em)
    return _msg(NAMES.consents, CODEC.encode("consent_change", change.to_avro()), card.encode())


def _by_topic(outputs: list[Any]) -> dict[str, Any]:
    found = {o.topic: o for o in outputs}
    assert len(found) == len(outputs), "one record per topic"
    return found


def test_a_checkout_without_consent_goes_to_customer_and_the_aggregators_baskets_only() -> None:
    staged = Staged()
    result = STEP.step(_checkout_msg(_checkout()), {}, staged, NOW)
    out = _by_topic(result.outputs)
    assert set(out) == {NAMES.purchases_customer, NAMES.analytics_baskets}
    customer = CODEC.decode(out[NAMES.purchases_customer].value, expect="purchase").value
    assert out[NAMES.purchases_customer].key == CARD.encode()
    assert customer["granularity"] == "ITEM" and customer["policy_version"] == "sokos-item-2010"
    assert customer["consent"] == {"product_data_marketing": False, "electronic_marketing": False, "known": False}
    # Keyed by chain, not store: one chain's local day (the aggregator's window) is on one partition.
    assert out[NAMES.analytics_baskets].key == b"SOKOS"
    basket = CODEC.decode(out[NAMES.analytics_baskets].value, expect="analytics_basket").value
    assert (basket["chain"], basket["store_id"]) == ("SOKOS", "SOKOS-0001")
    assert staged.seen == {(0, "r-1"): int((NOW - timedelta(hours=1)).timestamp() * 1000)}
    assert staged.processed == {"SOKOS": 1}
    assert staged.routed == {NAMES.purchases_customer: 1, NAMES.analytics_baskets: 1}
    assert result.rejected is None and result.unknown_chain is None


def test_the_policy_level_of_the_chain_is_applied() -> None:
    result = STEP.step(_checkout_msg(_checkout(chain="PRISMA")), {}, Staged(), NOW)
    customer = CODEC.decode(_by_topic(result.outputs)[NAMES.purchases_customer].value, expect="purchase").value
    assert customer["granularity"] == "PRODUCT_GROUP" and customer["items"] == []
    assert {g["product_group"]: g["amount_cents"] for g in customer["groups"]} == {"dairy": 218, "meat": 500}


def test_full_consent_sends_the_same_record_to_marketing() -> None:
    staged = Staged()
    assert STEP.step(_consent_msg(True, True, at_hours_ago=5), {}, staged, NOW).outputs == []
    assert staged.consent_changes == 1
    out = _by_topic(STEP.step(_checkout_msg(_checkout()), {}, staged, NOW).outputs)
    assert out[NAMES.purchases_marketing].value == out[NAMES.purchases_customer].value
    assert out[NAMES.purchases_marketing].key == CARD.encode()


def test_marketing_without_product_data_consent_gets_product_groups_only() -> None:
    staged = Staged()
    STEP.step(_consent_msg(False, True, at_hours_ago=5), {}, staged, NOW)
    out = _by_topic(STEP.step(_checkout_msg(_checkout()), {}, staged, NOW).outputs)
    marketing = CODEC.decode(out[NAMES.purchases_marketing].value, expect="purchase").value
    assert marketing["granularity"] == "PRODUCT_GROUP" and marketing["items"] == []
    customer = CODEC.decode(out[NAMES.purchases_customer].value, expect="purchase").value
    assert customer["granularity"] == "ITEM" and len(customer["items"]) == 2


def test_committed_consent_applies_and_a_staged_withdrawal_overrides_it() -> None:
    granted = ConsentHistory().with_change(ConsentChange(CARD, NOW - timedelta(hours=9), True, True))
    state = {0: PartitionState(consent={CARD: granted})}
    out = _by_topic(STEP.step(_checkout_msg(_checkout("r-1")), state, Staged(), NOW).outputs)
    assert NAMES.purchases_marketing in out
    staged = Staged()
    STEP.step(_consent_msg(False, False, at_hours_ago=3), state, staged, NOW)
    out = _by_topic(STEP.step(_checkout_msg(_checkout("r-2")), state, staged, NOW).outputs)
    assert NAMES.purchases_marketing not in out
    assert state[0].consent[CARD] == granted  # the committed state is not touched by the step


def test_a_tombstone_erases_the_cards_history_in_the_transaction() -> None:
    granted = ConsentHistory().with_change(ConsentChange(CARD, NOW - timedelta(hours=9), True, True))
    state = {0: PartitionState(consent={CARD: granted})}
    staged = Staged()
    assert STEP.step(_msg(NAMES.consents, None, CARD.encode()), state, staged, NOW).outputs == []
    assert staged.consent == {(0, CARD): ConsentHistory()} and staged.consent_changes == 0
    out = _by_topic(STEP.step(_checkout_msg(_checkout()), state, staged, NOW).outputs)
    assert NAMES.purchases_marketing not in out


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (CODEC.encode("checkout", _checkout(event_time=NOW + timedelta(hours=2)).to_avro()), "future_event_time"),
        (CODEC.encode("checkout", _checkout(total_cents=1).to_avro()), "totals_mismatch"),
        (b"not avro at all", "undecodable"),
        (None, "undecodable"),
    ],
)
def test_a_bad_checkout_becomes_a_dead_letter_with_its_reason(value: bytes | None, reason: str) -> None:
    staged = Staged()
    result = STEP.step(_msg(NAMES.checkouts, value, b"card-key", partition=0, offset=41), {}, staged, NOW)
    # Nothing to write from the step itself: the worker seals the letter (the vault is I/O).
    assert result.outputs == [] and result.letter is not None
    letter = result.letter
    assert letter.error.reason == reason
    assert (letter.topic, letter.partition, letter.offset) == (NAMES.checkouts, 0, 41)
    assert (letter.key, letter.value) == (b"card-key", value)
    assert result.rejected is not None and result.rejected.reason == reason
    assert staged.dead_letters == {reason: 1} and staged.seen == {} and staged.processed == {}


def test_a_bad_consent_change_becomes_a_dead_letter() -> None:
    staged = Staged()
    bad = CODEC.encode("consent_change", ConsentChange("card\u200b1", NOW, True, True).to_avro())
    result = STEP.step(_msg(NAMES.consents, bad, b"card\xe2\x80\x8b1"), {}, staged, NOW)
    assert result.outputs == [] and result.letter is not None
    assert (result.letter.topic, result.letter.value) == (NAMES.consents, bad)
    assert staged.consent == {} and staged.consent_changes == 0 and sum(staged.dead_letters.values()) == 1


def test_a_duplicate_is_dropped_whether_staged_or_committed() -> None:
    staged = Staged()
    assert STEP.step(_checkout_msg(_checkout("r-1")), {}, staged, NOW).outputs
    assert STEP.step(_checkout_msg(_checkout("r-1"), offset=1), {}, staged, NOW).outputs == []
    assert staged.duplicates == 1 and staged.processed == {"SOKOS": 1}
    committed = {0: PartitionState(seen={"r-9": 1})}
    assert STEP.step(_checkout_msg(_checkout("r-9")), committed, staged, NOW).outputs == []
    assert staged.duplicates == 2 and staged.routed[NAMES.purchases_customer] == 1


def test_an_unknown_chain_is_routed_at_the_strictest_level_and_reported() -> None:
    result = STEP.step(_checkout_msg(_checkout(chain="NEW_CHAIN")), {}, Staged(), NOW)
    assert result.unknown_chain == "NEW_CHAIN"
    customer = CODEC.decode(_by_topic(result.outputs)[NAMES.purchases_customer].value, expect="purchase").value
    assert customer["granularity"] == "RECEIPT"


@settings(max_examples=60, deadline=None)
@given(st.lists(checkouts(), min_size=1, max_size=12), st.data())
def test_every_record_is_routed_once_dropped_as_a_duplicate_or_dead_lettered(
    distinct: list[Checkout], data: st.DataObject
) -> None:
    # Each checkout sent one to three times, in any order: the upstream outbox is at-least-once.
    sent = data.draw(st.permutations([c for c in distinct for _ in range(data.draw(st.integers(1, 3)))]))
    staged = Staged()
    customer_ids = []
    for offset, c in enumerate(sent):
        result = STEP.step(_checkout_msg(c, offset), {}, staged, NOW)
        for o in result.outputs:
            if o.topic == NAMES.purchases_customer:
                customer_ids.append(CODEC.decode(o.value, expect="purchase").value["receipt_id"])
    processed = sum(staged.processed.values())
    assert processed + staged.duplicates + sum(staged.dead_letters.values()) == len(sent)
    assert len(customer_ids) == len(set(customer_ids)) == processed
    assert {rid for _, rid in staged.seen} == set(customer_ids)


def _stamped(msg: Message, at_ms: int) -> Message:
    return Message(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        timestamp=(TIMESTAMP_LOG_APPEND_TIME, at_ms),
    )


def test_the_truncation_and_consent_mix_are_staged_per_routed_receipt() -> None:
    staged, other = Staged(), "2710000000002"
    STEP.step(_consent_msg(False, True, at_hours_ago=5), {}, staged, NOW)
    STEP.step(_consent_msg(True, False, at_hours_ago=5, card=other), {}, staged, NOW)
    STEP.step(_checkout_msg(_checkout("r-1")), {}, staged, NOW)  # electronic marketing only
    STEP.step(_checkout_msg(_checkout("r-1")), {}, staged, NOW)  # a duplicate: not counted again
    STEP.step(_checkout_msg(_checkout("r-2", card_id=other)), {}, staged, NOW)  # product data
    STEP.step(_checkout_msg(_checkout("r-3", chain="PRISMA", card_id="6390000000099")), {}, staged, NOW)
    STEP.step(_checkout_msg(_checkout("r-4", card_id=None)), {}, staged, NOW)
    STEP.step(_checkout_msg(_checkout("r-5", total_cents=1)), {}, staged, NOW)  # dead letter: not routed
    assert staged.granularity == {("SOKOS", "ITEM"): 3, ("PRISMA", "PRODUCT_GROUP"): 1}
    assert staged.marketing == {"product_groups": 1, "product_data": 1, "withheld": 1, "anonymous": 1}


def test_card_linked_outputs_carry_the_checkouts_append_time_and_the_basket_does_not() -> None:
    staged, appended = Staged(), 1_700_000_000_123
    STEP.step(_consent_msg(True, True, at_hours_ago=5), {}, staged, NOW)
    result = STEP.step(_stamped(_checkout_msg(_checkout("r-1")), appended), {}, staged, NOW)
    stamps = {o.topic: o.timestamp for o in result.outputs}
    assert stamps == {
        NAMES.purchases_customer: appended,
        NAMES.purchases_marketing: appended,
        NAMES.analytics_baskets: 0,  # stamped by the producer when sent
    }
    STEP.step(_checkout_msg(_checkout("r-2")), {}, staged, NOW)  # no timestamp: nothing to measure from
    bad = STEP.step(_stamped(_checkout_msg(_checkout("r-3", total_cents=1)), appended + 1), {}, staged, NOW)
    assert bad.outputs == [] and bad.letter is not None  # its letter is written by the worker, stamped when sent
    assert staged.appended == [appended]


def test_a_committed_transaction_reports_the_mix_and_the_routers_end_to_end_time() -> None:
    staged, appended = Staged(), 1_700_000_000_000
    STEP.step(_stamped(_checkout_msg(_checkout("r-1")), appended), {}, staged, NOW)
    STEP.step(_stamped(_checkout_msg(_checkout("r-2", chain="PRISMA", card_id=None)), appended + 500), {}, staged, NOW)
    metrics = Metrics(CollectorRegistry(), roles=["router"])
    staged.report(RouterStats(), metrics, consumed=2, committed_at=appended / 1000 + 2.0)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert sample("receiptflow_routed_granularity_total", chain="SOKOS", granularity="ITEM") == 1
    assert sample("receiptflow_routed_granularity_total", chain="PRISMA", granularity="PRODUCT_GROUP") == 1
    assert sample("receiptflow_marketing_consent_total", outcome="withheld") == 1
    assert sample("receiptflow_marketing_consent_total", outcome="anonymous") == 1
    assert sample("receiptflow_checkout_to_output_seconds_count", stage="router") == 2
    assert sample("receiptflow_checkout_to_output_seconds_sum", stage="router") == pytest.approx(2.0 + 1.5)


@pytest.mark.parametrize(
    ("has_card", "pdm", "em", "outcome"),
    [
        (True, True, True, "product_data"),
        (True, True, False, "product_data"),
        (True, False, True, "product_groups"),
        (True, False, False, "withheld"),
        (False, True, True, "anonymous"),
    ],
)
def test_the_marketing_outcome_follows_the_consent(has_card: bool, pdm: bool, em: bool, outcome: str) -> None:
    assert marketing_outcome(has_card, ConsentState(pdm, em, known=True)) == outcome


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "python core"])
def test_a_grant_written_in_the_same_millisecond_as_a_checkout_does_not_reach_it(fast: bool) -> None:
    # The merge applies a consent change before a checkout appended in the same millisecond, so a
    # withdrawal then counts; a grant must not: in a tie of the write order the stricter reading wins
    # (seen in the peers benchmark: an e-mail grant and a checkout of its card appended at one instant).
    step = RouteStep(
        NAMES, load_policy(), CODEC, BasketPseudonymiser(b"route-step-test-analytics-key"), DEFAULT_CONSENT, "r", fast
    )
    appended = int(NOW.timestamp() * 1000) + 123  # consent changes are judged at their append time
    staged = Staged()
    step.step(_stamped(_consent_msg(False, False, at_hours_ago=48), appended - 60_000), {}, staged, NOW)
    step.step(_stamped(_consent_msg(True, True, at_hours_ago=5), appended), {}, staged, NOW)
    tied = _by_topic(step.step(_stamped(_checkout_msg(_checkout("r-1")), appended), {}, staged, NOW).outputs)
    assert NAMES.purchases_marketing not in tied
    consent = CODEC.decode(tied[NAMES.purchases_customer].value, expect="purchase").value["consent"]
    assert consent == {"product_data_marketing": False, "electronic_marketing": False, "known": True}
    # One millisecond later the grant is known before the checkout: it applies.
    later = _by_topic(step.step(_stamped(_checkout_msg(_checkout("r-2")), appended + 1), {}, staged, NOW).outputs)
    assert NAMES.purchases_marketing in later
    # A withdrawal in the same millisecond as a checkout applies to it.
    step.step(_stamped(_consent_msg(False, False, at_hours_ago=2), appended + 5), {}, staged, NOW)
    withdrawn = _by_topic(step.step(_stamped(_checkout_msg(_checkout("r-3")), appended + 5), {}, staged, NOW).outputs)
    assert NAMES.purchases_marketing not in withdrawn


def test_the_tie_survives_the_transaction_and_a_restore() -> None:
    # The grant is committed in one transaction and the tied checkout comes in the next.
    appended = int(NOW.timestamp() * 1000) + 500
    grant = ConsentChange(CARD, NOW - timedelta(hours=5), True, True)
    committed = ConsentHistory().with_change(grant, written_ms=appended)
    state = {0: PartitionState(consent={CARD: committed})}
    tied = _by_topic(STEP.step(_stamped(_checkout_msg(_checkout("r-1")), appended), state, Staged(), NOW).outputs)
    assert NAMES.purchases_marketing not in tied
    later = _by_topic(STEP.step(_stamped(_checkout_msg(_checkout("r-2")), appended + 1), state, Staged(), NOW).outputs)
    assert NAMES.purchases_marketing in later


def test_a_consent_record_is_judged_at_its_append_time_so_a_restore_judges_it_as_the_stream_did() -> None:
    """A change dated 100 days back, appended a minute after its date: good when it was read, and still
    good when a restore reads it today (the horizon is 90 days). Appended today it is stale."""
    old = _consent_msg(False, True, at_hours_ago=100 * 24)
    dated_ms = int((NOW - timedelta(days=100)).timestamp() * 1000)
    assert STEP.consent_change(_stamped(old, dated_ms + 60_000), NOW) is not None
    staged = Staged()
    result = STEP.step(_stamped(old, int(NOW.timestamp() * 1000)), {}, staged, NOW)
    assert result.rejected is not None and result.rejected.reason == "stale_consent_time"
    assert staged.dead_letters == {"stale_consent_time": 1} and not staged.consent


def test_a_grant_dated_tomorrow_is_dead_lettered_and_a_grant_inside_the_drift_never_outranks_a_later_withdrawal() -> (
    None
):
    staged, appended = Staged(), int(NOW.timestamp() * 1000)
    tomorrow = _consent_msg(True, True, at_hours_ago=-24)
    rejected = STEP.step(_stamped(tomorrow, appended), {}, staged, NOW)
    assert rejected.rejected is not None and rejected.rejected.reason == "future_event_time"
    # The worker seals and dead-letters it (the vault is I/O); the step hands it over and writes nothing.
    assert rejected.letter is not None and rejected.letter.error.reason == "future_event_time"
    assert rejected.outputs == []
    # Eight minutes ahead is inside the registers' drift: accepted, but the withdrawal written after it rules.
    STEP.step(_stamped(_consent_msg(True, True, at_hours_ago=-8 / 60), appended + 1), {}, staged, NOW)
    STEP.step(_stamped(_consent_msg(False, True, at_hours_ago=0), appended + 2), {}, staged, NOW)
    c = _checkout("r-ahead", "K_CITYMARKET", event_time=NOW + timedelta(minutes=9))  # an item-level chain
    out = _by_topic(STEP.step(_stamped(_checkout_msg(c), appended + 3), {}, staged, NOW).outputs)
    consent = CODEC.decode(out[NAMES.purchases_customer].value, expect="purchase").value["consent"]
    assert consent == {"product_data_marketing": False, "electronic_marketing": True, "known": True}
    marketing = CODEC.decode(out[NAMES.purchases_marketing].value, expect="purchase").value
    assert marketing["granularity"] == "PRODUCT_GROUP" and not marketing["items"] and marketing["groups"]
