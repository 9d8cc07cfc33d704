"""The profile fold: duplicates and order do not change the result."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from receiptflow.models import Purchase
from receiptflow.processors.core import process
from receiptflow.processors.policy import load_policy
from receiptflow.processors.profiles import Profile, fold, update

from .strategies import NOW, checkouts
from .test_core import _valid

POLICY = load_policy()


def _purchases(cs: list) -> list[Purchase]:  # type: ignore[type-arg]
    out = []
    seen = set()
    for i, c in enumerate(cs):
        # Receipt ids must be unique for distinct receipts; hypothesis may draw the same one twice.
        if c.receipt_id in seen:
            continue
        seen.add(c.receipt_id)
        out.append(process(c, POLICY, None, NOW + timedelta(seconds=i)).customer)
    return out


@given(st.lists(checkouts(), max_size=25), st.randoms())
def test_duplicates_and_shuffling_do_not_change_profiles(cs, rnd: random.Random) -> None:  # type: ignore[no-untyped-def]
    purchases = _purchases(cs)
    expected = fold(purchases)
    noisy = purchases + [p for p in purchases if rnd.random() < 0.3]
    rnd.shuffle(noisy)
    assert fold(noisy) == expected


@given(st.lists(checkouts(), max_size=25))
def test_visits_and_spend_add_up(cs) -> None:  # type: ignore[no-untyped-def]
    purchases = _purchases(cs)
    profiles = fold(purchases)
    carded = [p for p in purchases if p.card_id is not None]
    assert sum(p.visits for p in profiles.values()) == len(carded)
    assert sum(p.spend_cents for p in profiles.values()) == sum(p.total_cents for p in carded)
    for prof in profiles.values():
        assert sum(prof.groups.values()) <= prof.spend_cents


def test_update_is_pure() -> None:
    p = Profile("6390000000001")
    assert update(p, _one()) is not p
    assert p.visits == 0


def _one() -> Purchase:
    return process(_valid(), POLICY, None, NOW).customer
