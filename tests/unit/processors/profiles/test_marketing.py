"""The marketing projection (pure): it holds what the marketing view shows and nothing else, and the view
read back from it is the marketing view of the full profile."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from receiptflow.card_hash import erased_hash, marketing_hash
from receiptflow.models import ConsentChange, Purchase
from receiptflow.processors.profiles.fold import Profile, fold
from receiptflow.processors.profiles.keys import PROFILE_PATTERN, card_keys
from receiptflow.processors.profiles.marketing import (
    PROJECTION_FIELDS,
    guard_key,
    marketing_doc,
    project,
    projected_fields_allowed,
    projection_key,
)
from receiptflow.processors.profiles.views import render

from ...profile_strategies import CARDS, purchase_lists
from ...strategies import NOW

pytestmark = pytest.mark.unit

segments = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["2026.1", "2026.2"]),
        "month": st.just("2026-10"),
        "visits_class": st.sampled_from(["rare", "regular", "frequent"]),
        "money_class": st.sampled_from(["low", "mid", "high"]),
        "grocery_segment": st.sampled_from(["fresh", "convenience"]),
    },
)


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    """A profile folded from purchases of mixed consent, and perhaps a consent change after them."""
    purchases: list[Purchase] = draw(purchase_lists(max_size=15, span_days=800))
    events: list[Purchase | ConsentChange] = list(purchases)
    card = draw(st.sampled_from(CARDS))
    for _ in range(draw(st.integers(0, 2))):
        at = NOW - timedelta(seconds=draw(st.integers(0, 800 * 86_400)))
        events.append(ConsentChange(card, at, draw(st.booleans()), draw(st.booleans()), "app"))
    folded = fold(events)
    return folded.get(card) or Profile(card_id=card)


def _json(doc: dict[str, Any]) -> Any:
    return json.loads(json.dumps(doc))


@given(profiles(), segments, st.integers(0, 400))
def test_the_projection_holds_only_what_the_marketing_view_shows(
    profile: Profile, segs: dict[str, str], days_later: int
) -> None:
    now = NOW + timedelta(days=days_later)
    fields = project(profile, segs, now)
    assert projected_fields_allowed(fields)
    assert all(isinstance(v, str) for v in fields.values())
    # Never a nutrition counter, a salt or sugar source, a day bucket, a points balance or a consent time.
    assert not [k for k in fields if k.startswith(("Pn", "Ps:", "Pu:", "w", "pt", "ct", "cw", "cg", "sd"))]
    # No exact time of an affinity purchase (pet food, baby products, alcohol): only whether it was recent.
    # (The first and last purchase are shown, and an affinity purchase may be one of them.)
    exact = {str(ms) for ms in profile.affinity.values()} - {str(profile.last_ms), str(profile.first_ms)}
    assert not set(fields.values()) & exact
    assert all(fields[k] in ("0", "1") for k in fields if k.startswith("Pa:"))
    # Product data only with product-data consent.
    view = render(profile, "marketing", now, segments=segs)
    if not view["product_data_consent"]:
        assert not [k for k in fields if k.startswith("P")], fields
    # The view read back from the projection is the marketing view of the full profile.
    assert _json(marketing_doc(profile.card_id, fields)) == _json(view)


@given(profiles(), segments)
def test_a_withdrawal_leaves_no_product_field(profile: Profile, segs: dict[str, str]) -> None:
    withdrawn = fold([ConsentChange(profile.card_id, NOW + timedelta(seconds=1), False, True, "app")])[profile.card_id]
    profile = replace(profile, consent=withdrawn.consent)
    fields = project(profile, segs, NOW)
    assert fields["c"] == "0" and not [k for k in fields if k.startswith("P")]
    assert "product_group_mix" not in marketing_doc(profile.card_id, fields)


def test_the_projection_of_a_profile_with_product_data() -> None:
    day = 86_400_000
    now_ms = int(NOW.timestamp() * 1000)
    profile = Profile(
        card_id=CARDS[0],
        visits=3,
        spend_cents=4500,
        first_ms=now_ms - 400 * day,
        last_ms=now_ms - 2 * day,
        groups={"dairy": 3000, "alcohol": 1500},
        affinity={"alcohol": now_ms - 2 * day, "baby": now_ms - 500 * day},
        nutrition={"salt_mg": 1200, "energy_kcal": 2000},
        salt_by_group={"dairy": 1200},
    )
    fields = project(profile, {"visits_class": "regular", "grocery_segment": "fresh", "month": "2026-10"}, NOW)
    assert fields["Pg:dairy"] == "0.6667" and fields["Pg:alcohol"] == "0.3333"
    assert fields["Pa:alcohol"] == "1" and fields["Pa:baby"] == "0"
    assert fields["c"] == "1" and fields["sn"] == "regular" and fields["Psg"] == "fresh" and "sd" not in fields
    assert fields["at"] == NOW.date().isoformat()
    assert set(fields) == {*PROJECTION_FIELDS - {"sv", "sm"}, "Pg:dairy", "Pg:alcohol", "Pa:alcohol", "Pa:baby"}


def test_the_projection_keys() -> None:
    h = marketing_hash(CARDS[0], b"k" * 32)
    # The guard sits in the projection's slot, outside the marketing reader's pattern; neither is a
    # profile key (rf:{*}:p, the customer reader's pattern).
    assert key_slot(projection_key(h).encode()) == key_slot(guard_key(h).encode())
    assert fnmatchcase(projection_key(h), "rf:m:*") and not fnmatchcase(guard_key(h), "rf:m:*")
    for key in (projection_key(h), guard_key(h)):
        assert not fnmatchcase(key, PROFILE_PATTERN) and not fnmatchcase(key, "rf:{*}:*")
    assert fnmatchcase(card_keys(erased_hash(CARDS[0], b"k" * 32)).profile, PROFILE_PATTERN)


@given(st.text(min_size=1, max_size=20), st.binary(min_size=16, max_size=64))
def test_the_marketing_hash_is_not_the_erasure_hash(card: str, key: bytes) -> None:
    # Even with one key for both, knowing one hash gives nothing of the other.
    assert marketing_hash(card, key) != erased_hash(card, key)
    assert marketing_hash(card, key) == marketing_hash(card, key) and len(marketing_hash(card, key)) == 32


def test_a_key_is_required() -> None:
    with pytest.raises(ValueError, match="marketing key"):
        marketing_hash(CARDS[0], b"")


def test_the_doc_of_a_projection_in_time() -> None:
    # A projection is the view of its day: it equals the marketing view rendered then.
    profile = Profile(card_id=CARDS[1], visits=1, spend_cents=100, first_ms=0, last_ms=0)
    then = datetime(2026, 1, 1, tzinfo=NOW.tzinfo)
    assert marketing_doc(CARDS[1], project(profile, {}, then)) == render(profile, "marketing", then)
