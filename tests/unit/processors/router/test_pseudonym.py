"""Basket pseudonyms: keyed, rotated by month, never the receipt id, unlinkable without the key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.processors.router.pseudonym import BASKET_ID_HEX, BasketPseudonymiser, key_period

keys = st.binary(min_size=16, max_size=64)
receipt_ids = st.text(min_size=1, max_size=60)
# Receipt ids as registers write them are long (S-PRISMA-0042-7-000123); one of 12 or more characters,
# even all hex, occurs in a 32-character digest by chance with probability below 10^-13.
long_receipt_ids = st.one_of(st.text(min_size=12, max_size=60), st.text("0123456789abcdef", min_size=12, max_size=40))
periods = st.from_regex(r"20[0-9]{2}-(0[1-9]|1[0-2])", fullmatch=True)


@given(keys, st.lists(receipt_ids, min_size=2, max_size=200, unique=True), periods)
def test_distinct_receipts_get_distinct_ids(key: bytes, rids: list[str], period: str) -> None:
    p = BasketPseudonymiser(key)
    ids = [p.basket_id(r, period) for r in rids]
    # 128-bit ids: a collision among 200 would be a 2^-113 event, i.e. a bug.
    assert len(set(ids)) == len(ids)
    assert all(len(i) == BASKET_ID_HEX and int(i, 16) >= 0 for i in ids)


@given(keys, receipt_ids, periods)
def test_the_same_receipt_and_period_give_the_same_id(key: bytes, rid: str, period: str) -> None:
    # The same id on every worker and after a restart: a redelivered receipt is one basket.
    assert BasketPseudonymiser(key).basket_id(rid, period) == BasketPseudonymiser(bytes(key)).basket_id(rid, period)


@given(keys, keys, receipt_ids, periods)
def test_another_key_gives_another_id(key: bytes, other: bytes, rid: str, period: str) -> None:
    if key == other:
        return
    assert BasketPseudonymiser(key).basket_id(rid, period) != BasketPseudonymiser(other).basket_id(rid, period)


@given(keys, receipt_ids, periods, periods)
def test_another_period_gives_another_id(key: bytes, rid: str, period: str, other: str) -> None:
    if period == other:
        return
    p = BasketPseudonymiser(key)
    assert p.basket_id(rid, period) != p.basket_id(rid, other)
    assert p.period_key(period) != p.period_key(other)


@settings(max_examples=300)
@given(keys, long_receipt_ids, periods)
def test_the_id_never_contains_the_receipt_id(key: bytes, rid: str, period: str) -> None:
    basket = BasketPseudonymiser(key).basket_id(rid, period)
    assert rid not in basket and basket not in rid


def test_a_short_key_is_refused_and_the_key_is_not_printed() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        BasketPseudonymiser(b"short")
    p = BasketPseudonymiser(b"k" * 32)
    assert "kkkk" not in repr(p)


def test_the_period_is_the_month_of_the_sale_in_utc() -> None:
    helsinki = timezone(timedelta(hours=2))
    assert key_period(datetime(2026, 12, 1, 1, 30, tzinfo=helsinki)) == "2026-11"  # 23:30 UTC on 30 November
    assert key_period(datetime(2026, 12, 1, 2, 0, tzinfo=helsinki)) == "2026-12"
    assert key_period(datetime(2027, 1, 31, 23, 59, tzinfo=UTC)) == "2027-01"
