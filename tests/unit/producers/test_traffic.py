"""Simulated traffic: injected faults are recorded in the ground truth, deterministically."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from receiptflow.codec import Codec
from receiptflow.errors import ValidationError
from receiptflow.models import Checkout
from receiptflow.producers.simulator import BAD_KINDS, Simulator, Traffic, day_of_checkouts, is_open
from receiptflow.validation import validate

START = datetime(2026, 11, 24, 7, tzinfo=UTC)


def _traffic(seed: int) -> tuple[Traffic, list]:  # type: ignore[type-arg]
    codec = Codec()
    t = Traffic(
        Simulator(seed, stores=30, customers=100),
        lambda c: codec.encode("checkout", c.to_avro()),
        dup_rate=0.1,
        bad_rate=0.05,
        consent_change_rate=0.02,
        out_of_order_rate=0.05,
    )
    return t, list(t.initial_consents(START)) + list(t.emissions(2000, START, rate=10))


def test_faults_are_injected_and_recorded() -> None:
    t, out = _traffic(9)
    kinds = Counter(e.kind for e in out)
    truth = t.sim.truth
    assert kinds["checkout"] == truth.receipts == 2000
    assert kinds["duplicate"] == len(truth.duplicates) > 100
    assert kinds["bad"] == len(truth.bad) > 50
    assert {b["reason"] for b in truth.bad} == set(BAD_KINDS)
    assert kinds["consent"] == len(truth.consents) > sum(len(c.cards) for c in t.sim.customers)
    assert truth.out_of_order > 50
    # Every duplicate repeats a receipt that was delivered before it.
    delivered: set[str] = set()
    for e in out:
        if e.kind == "checkout":
            delivered.add(e.checkout.receipt_id)
        elif e.kind == "duplicate":
            assert e.checkout.receipt_id in delivered
    # Out-of-order delivery: some checkout arrives after one with a later event time.
    times = [e.checkout.event_time for e in out if e.kind == "checkout"]
    assert any(b < a for a, b in itertools.pairwise(times))


def test_same_seed_same_traffic() -> None:
    _, a = _traffic(4)
    _, b = _traffic(4)
    assert [(e.kind, e.label, e.raw) for e in a] == [(e.kind, e.label, e.raw) for e in b]


def test_a_day_follows_opening_hours_and_peaks() -> None:
    sim = Simulator(5, stores=40, customers=100)
    day = day_of_checkouts(sim, 3000, datetime(2026, 11, 24, 12, tzinfo=UTC))
    hours = Counter(c.event_time.hour for c in day)
    assert all(is_open(c.chain, c.event_time.hour) for c in day)
    assert hours[17] > hours[8] > hours[6]
    assert sum(hours[h] for h in range(0, 6)) == 0


def test_each_bad_record_is_refused_for_the_reason_recorded_and_every_checkout_is_valid() -> None:
    # Bad records are made from ordinary traffic, refunds and v2 shapes included: the one change
    # injected must be what the router refuses them for, and nothing else may be refused.
    codec = Codec()
    for seed in (9, 10, 11):
        _, out = _traffic(seed)
        for e in out:
            if e.kind == "bad" and e.reason != "undecodable":
                with pytest.raises(ValidationError) as info:
                    validate(Checkout.from_avro(codec.decode(e.raw).value), START + timedelta(hours=1))
                assert info.value.reason == e.reason
            elif e.checkout is not None:
                validate(e.checkout, START + timedelta(hours=1))


def test_back_dated_traffic_still_has_event_times_in_the_future_of_when_it_is_sent() -> None:
    # Days-old traffic sent now: a bad record's future event time is in the future of now, not of its day.
    codec, now = Codec(), START + timedelta(days=9)
    t = Traffic(Simulator(3, stores=10, customers=20), lambda c: codec.encode("checkout", c.to_avro()), bad_rate=0.2)
    sent = t.emissions(400, START, rate=1, now=now)
    future = [e for e in sent if e.kind == "bad" and e.reason == "future_event_time"]
    assert future
    for e in future:
        checkout = Checkout.from_avro(codec.decode(e.raw).value)
        assert checkout.event_time == now + timedelta(days=2)
        with pytest.raises(ValidationError) as info:
            validate(checkout, now + timedelta(hours=1))
        assert info.value.reason == "future_event_time"
