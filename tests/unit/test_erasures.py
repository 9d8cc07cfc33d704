"""The erased cards a process knows, asked about clear card ids (pure: no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.card_hash import CardHasher, erased_hash
from receiptflow.erasures import ErasedCards

pytestmark = pytest.mark.unit

SALT = b"erased-cards-test-erasure-salt"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
cards = st.text(alphabet="0123456789", min_size=8, max_size=16)


@given(erased=st.sets(cards, max_size=8), others=st.sets(cards, max_size=8))
def test_a_card_is_erased_exactly_when_its_salted_hash_was_recorded(erased: set[str], others: set[str]) -> None:
    known = ErasedCards(CardHasher(SALT))
    new = known.learn({erased_hash(c, SALT): T0 for c in erased})
    assert len(new) == len(known) == len(erased)
    for c in erased:
        assert c in known
    for c in others - erased:
        assert c not in known
    assert sorted(known.among([*erased, *others], new)) == sorted(c for c in [*erased, *others] if c in erased)


def test_learning_again_keeps_the_first_time_and_reports_only_what_is_new() -> None:
    known = ErasedCards(CardHasher(SALT))
    h = erased_hash("6390000000001", SALT)
    assert known.learn({h: T0 + timedelta(days=1)}) == {h}
    assert known.learn({h: T0}) == set()
    assert known.hashes[h] == T0
    assert known.among(["6390000000001"], set()) == []


def test_nothing_erased_asks_no_hash() -> None:
    def never(card: str) -> str:
        raise AssertionError("hashed although nothing is erased")

    known = ErasedCards(never)
    assert "6390000000001" not in known and not known


def test_another_salt_does_not_recognise_the_card() -> None:
    known = ErasedCards(CardHasher(b"another-install-erasure-salt"))
    known.learn({erased_hash("6390000000001", SALT): T0})
    assert "6390000000001" not in known
