"""Time order across consents and checkouts: the merge's rules, and routing over any arrival order.

The reference for every property is the plain sort of what was written, by record timestamp with
consents first on a tie; the merge sees the same records arrive in arbitrary chunks per input, with
"caught up" true only once an input has delivered everything it holds.
"""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from receiptflow.models import Checkout, CheckoutLine, ConsentChange, PaymentMethod
from receiptflow.policy import parse_policy
from receiptflow.processors.router.consent import ConsentHistory, effective_consent
from receiptflow.processors.router.merge import BEHIND_WAIT_FACTOR, TimeOrderedMerge
from receiptflow.processors.router.route import DEFAULT_CONSENT, route

from ...strategies import NOW

CONSENTS, CHECKOUTS = "consents", "checkouts"
CARD = "6390000000001"
POLICY = parse_policy({"default_level": "item", "chains": {}})

Record = tuple[str, int, int]  # (topic, timestamp ms, sequence within its topic)


@st.composite
def written(draw: st.DrawFn) -> dict[str, list[Record]]:
    """What was written to each input of one partition: timestamps non-decreasing per topic (append time)."""
    out: dict[str, list[Record]] = {}
    for topic in (CONSENTS, CHECKOUTS):
        stamps = sorted(draw(st.lists(st.integers(0, 50), max_size=12)))
        out[topic] = [(topic, ts, i) for i, ts in enumerate(stamps)]
    return out


@st.composite
def arrivals(draw: st.DrawFn, records: dict[str, list[Record]]) -> list[tuple[str, int]]:
    """An arrival schedule: chunks (topic, how many) in any interleaving, each topic in its own order."""
    left = {t: len(rs) for t, rs in records.items()}
    schedule = []
    while any(left.values()):
        topic = draw(st.sampled_from([t for t, n in left.items() if n]))
        n = draw(st.integers(1, left[topic]))
        schedule.append((topic, n))
        left[topic] -= n
    return schedule


def _reference(records: dict[str, list[Record]]) -> list[Record]:
    rank = {CONSENTS: 0, CHECKOUTS: 1}
    return sorted((r for rs in records.values() for r in rs), key=lambda r: (r[1], rank[r[0]], r[2]))


def _merge_all(records: dict[str, list[Record]], schedule: list[tuple[str, int]]) -> list[Record]:
    """Feed the schedule chunk by chunk, releasing after each; no time passes (max_wait never ends)."""
    merge: TimeOrderedMerge[Record] = TimeOrderedMerge([CONSENTS, CHECKOUTS], max_wait=math.inf)
    delivered = dict.fromkeys(records, 0)

    def caught_up(topic: str, partition: int) -> bool:
        assert partition == 0
        return delivered[topic] == len(records[topic])

    out: list[Record] = []
    for topic, n in schedule:
        for record in records[topic][delivered[topic] : delivered[topic] + n]:
            merge.add(topic, 0, record[1], record)
        delivered[topic] += n
        out += merge.release(0.0, caught_up)
    assert merge.pending() == 0
    return out


@given(written().flatmap(lambda r: st.tuples(st.just(r), arrivals(r))))
def test_any_arrival_order_is_released_in_write_order(
    case: tuple[dict[str, list[Record]], list[tuple[str, int]]],
) -> None:
    records, schedule = case
    assert _merge_all(records, schedule) == _reference(records)


def _checkout(seq: int, minutes_before: int) -> Checkout:
    line = CheckoutLine(1, "6410100000000", "dairy", 1.0, 250, 250)
    return Checkout(
        receipt_id=f"R{seq}",
        chain="PRISMA",
        store_id="S1",
        register_id="1",
        card_id=CARD,
        event_time=NOW - timedelta(minutes=minutes_before),
        payment_method=PaymentMethod.CARD,
        total_cents=250,
        lines=(line,),
    )


def _route_in_order(order: list[Record], flags: dict[tuple[str, int], tuple[bool, int]]) -> list[tuple[str, bool]]:
    """What reaches marketing per receipt when the records are applied in ``order``."""
    history = ConsentHistory()
    out = []
    for topic, _ts, seq in order:
        allow, minutes = flags[(topic, seq)]
        if topic == CONSENTS:
            history = history.with_change(ConsentChange(CARD, NOW - timedelta(minutes=minutes), allow, allow))
            continue
        c = _checkout(seq, minutes)
        routed = route(
            c, POLICY.version_at(c.chain, c.event_time), effective_consent(history, c.event_time, DEFAULT_CONSENT), NOW
        )
        out.append((c.receipt_id, routed.marketing is not None and bool(routed.marketing.items)))
    return sorted(out)


@given(st.data())
def test_routing_over_any_arrival_order_equals_routing_in_timestamp_order(data: st.DataObject) -> None:
    """Consent grants and withdrawals with event times anywhere, checkouts made before or after them."""
    records = data.draw(written())
    schedule = data.draw(arrivals(records))
    flags = {
        (topic, seq): (data.draw(st.booleans()), data.draw(st.integers(0, 30)))
        for rs in records.values()
        for topic, _ts, seq in rs
    }
    assert _route_in_order(_merge_all(records, schedule), flags) == _route_in_order(_reference(records), flags)


def test_a_checkout_waits_for_an_input_that_is_behind_while_the_consumer_delivers() -> None:
    merge: TimeOrderedMerge[str] = TimeOrderedMerge([CONSENTS, CHECKOUTS], max_wait=2.0)
    at_end: dict[str, bool | None] = {CONSENTS: False, CHECKOUTS: True}  # consents behind

    def caught_up(topic: str, partition: int) -> bool | None:
        return at_end[topic]

    merge.add(CHECKOUTS, 3, 100, "checkout")
    # The consumer keeps delivering other partitions' records: the checkout waits past max_wait.
    assert merge.release(10.0, caught_up, last_delivery=10.0) == []
    assert merge.release(15.0, caught_up, last_delivery=14.9) == []
    # The withdrawal written before the checkout arrives, and consents are read to the end.
    merge.add(CONSENTS, 3, 90, "withdrawal")
    at_end[CONSENTS] = True
    assert merge.release(15.1, caught_up, last_delivery=15.1) == ["withdrawal", "checkout"]
    # Consents are behind again, and the consumer delivers nothing more: the wait ends after max_wait.
    at_end[CONSENTS] = False
    merge.add(CHECKOUTS, 3, 200, "late")
    assert merge.release(20.0, caught_up, last_delivery=19.0) == []
    assert merge.release(21.99, caught_up, last_delivery=19.0) == []
    assert merge.release(22.0, caught_up, last_delivery=19.0) == ["late"]
    # However busy the consumer is, the wait for an input that is behind is bounded too.
    merge.add(CHECKOUTS, 3, 300, "bounded")
    assert merge.release(30.0, caught_up, last_delivery=30.0) == []
    assert merge.release(30.0 + 2.0 * BEHIND_WAIT_FACTOR - 0.01, caught_up) == []
    assert merge.release(30.0 + 2.0 * BEHIND_WAIT_FACTOR, caught_up) == ["bounded"]
    assert merge.pending() == 0


def test_an_input_whose_end_is_unknown_is_waited_for_max_wait() -> None:
    merge: TimeOrderedMerge[str] = TimeOrderedMerge([CONSENTS, CHECKOUTS], max_wait=2.0)
    merge.add(CHECKOUTS, 0, 100, "checkout")
    unknown = lambda topic, p: None if topic == CONSENTS else True  # noqa: E731 - no fetch answered yet
    assert merge.release(5.0, unknown) == []
    assert merge.release(6.99, unknown) == []
    assert merge.release(7.0, unknown) == ["checkout"]


def test_an_input_read_to_its_end_releases_at_once() -> None:
    merge: TimeOrderedMerge[str] = TimeOrderedMerge([CONSENTS, CHECKOUTS], max_wait=60.0)
    merge.add(CHECKOUTS, 0, 5, "a")
    merge.add(CHECKOUTS, 0, 7, "b")
    assert merge.release(0.0, lambda topic, p: True) == ["a", "b"]
    assert merge.pending() == 0


def test_ties_put_the_consent_change_first_and_partitions_are_independent() -> None:
    merge: TimeOrderedMerge[str] = TimeOrderedMerge([CONSENTS, CHECKOUTS], max_wait=60.0)
    merge.add(CHECKOUTS, 0, 5, "checkout-0")
    merge.add(CONSENTS, 0, 5, "consent-0")
    merge.add(CHECKOUTS, 1, 1, "checkout-1")  # partition 1's consents are behind
    caught_up = lambda topic, p: p == 0  # noqa: E731
    assert merge.release(0.0, caught_up) == ["consent-0", "checkout-0"]
    assert merge.buffered(CHECKOUTS, 1) == 1
    assert merge.release(0.0, caught_up, limit=0) == []


def test_revoked_and_rewound_buffers_are_forgotten() -> None:
    merge: TimeOrderedMerge[str] = TimeOrderedMerge([CONSENTS, CHECKOUTS], max_wait=60.0)
    for p in (0, 1, 2):
        merge.add(CHECKOUTS, p, 1, f"c{p}")
    merge.drop([1])
    assert merge.pending() == 2 and merge.buffered(CHECKOUTS, 1) == 0
    merge.clear()
    assert merge.pending() == 0 and merge.release(1e9, lambda topic, p: False) == []


def test_limit_keeps_the_rest_in_order() -> None:
    merge: TimeOrderedMerge[int] = TimeOrderedMerge([CONSENTS, CHECKOUTS], max_wait=0.0)
    for i in range(5):
        merge.add(CHECKOUTS, 0, i, i)
    assert merge.release(0.0, lambda topic, p: True, limit=3) == [0, 1, 2]
    assert merge.release(0.0, lambda topic, p: True) == [3, 4]
