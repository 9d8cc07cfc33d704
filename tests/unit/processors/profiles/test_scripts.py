"""The profile store's Lua scripts: shipped as package files, with the same named positions as Python."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import IntEnum
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from receiptflow.card_hash import CardHasher
from receiptflow.consent_codec import WrittenConsent
from receiptflow.models import ConsentChange
from receiptflow.processors.profiles.keys import ERASED_KEY, WEEK_DAYS, card_keys, week_field
from receiptflow.processors.profiles.projections import (
    GUARD_LUA,
    READ_LUA,
    WRITE_LUA,
    GuardArg,
    GuardKey,
    ReadKey,
    WriteArg,
)
from receiptflow.processors.profiles.rules import Delta, default_rules
from receiptflow.processors.profiles.scripts import (
    APPLY_LUA,
    CONSENT_LUA,
    ApplyArg,
    ApplyKey,
    ConsentArg,
    ConsentKey,
    consent_args,
    delta_args,
)

pytestmark = pytest.mark.unit


def _lua_positions(text: str) -> list[dict[str, int]]:
    """Each ``local A, B = 1, 2`` line of a script, as name -> position."""
    out = []
    for names, values in re.findall(r"^local ([A-Z_, ]+) = ([0-9, ]+)$", text, re.M):
        keys = [n.strip() for n in names.split(",")]
        numbers = [int(v) for v in values.split(",")]
        out.append(dict(zip(keys, numbers, strict=True)))
    return out


def _members(e: type[IntEnum]) -> dict[str, int]:
    return {m.name: int(m) for m in e}


@pytest.mark.parametrize(
    ("name", "text", "keys", "args"),
    [
        ("profile_apply.lua", APPLY_LUA, ApplyKey, ApplyArg),
        ("profile_consent.lua", CONSENT_LUA, ConsentKey, ConsentArg),
        ("projection_guard.lua", GUARD_LUA, GuardKey, GuardArg),
        ("projection_write.lua", WRITE_LUA, GuardKey, WriteArg),
        ("projection_read.lua", READ_LUA, ReadKey, None),
    ],
)
def test_the_scripts_name_the_positions_python_names(
    name: str, text: str, keys: type[IntEnum], args: type[IntEnum] | None
) -> None:
    assert text == resources.files("receiptflow.processors.profiles").joinpath("lua", name).read_text(encoding="utf-8")
    assert _lua_positions(text) == [_members(keys), *([] if args is None else [_members(args)])]
    # No bare position is left: every KEYS and ARGV index is a name (or the pair cursor).
    assert not re.search(r"(KEYS|ARGV)\[\d+\]", text)


def test_delta_args_follow_the_named_positions() -> None:
    rules = default_rules()
    d = Delta(
        receipt_key="abcdefghijkl",
        event_ms=1_700_000_000_000,
        day=19_675,
        cents=1234,
        points=12,
        consented=True,
        groups={"dairy": 1000},
        affinity={"pet": 1_700_000_000_000},
    )
    args = delta_args(d, rules)
    at = {a: args[a - 1] for a in ApplyArg if a < ApplyArg.PAIRS_FROM}
    assert at == {
        ApplyArg.RECEIPT_KEY: "abcdefghijkl",
        ApplyArg.EVENT_MS: 1_700_000_000_000,
        ApplyArg.WEEK_FIELD: week_field(19_675),
        ApplyArg.DAY: 19_675,
        ApplyArg.WEEK_SLOT: 19_675 % WEEK_DAYS,
        ApplyArg.CENTS: 1234,
        ApplyArg.POINTS: 12,
        ApplyArg.DEDUP_MS: rules.dedup_ms,
        ApplyArg.KEEP_DAYS: rules.keep_days,
        ApplyArg.CONSENTED: 1,
        ApplyArg.VISITS: 1,
        ApplyArg.ADD_PAIRS: 1,
    }
    assert args[ApplyArg.PAIRS_FROM - 1 :] == ["Pg:dairy", 1000, "Pa:pet", 1_700_000_000_000]


def test_consent_args_follow_the_named_positions() -> None:
    change = ConsentChange("2710000000001", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), False, True)
    args = consent_args(WrittenConsent(change, 1_767_323_045_678))
    assert args[ConsentArg.EVENT_MS - 1] == int(change.event_time.timestamp() * 1000)
    assert args[ConsentArg.PRODUCT_DATA - 1] == "0"
    assert args[ConsentArg.WRITTEN_MS - 1] == 1_767_323_045_678
    assert len(args) == len(ConsentArg)


@given(st.text(alphabet="0123456789", min_size=8, max_size=19))
def test_a_cards_keys_share_one_cluster_slot_and_carry_no_card_id(card: str) -> None:
    # What a script names must be one slot (a Redis Cluster refuses CROSSSLOT calls): the card's
    # keys, tagged by its salted hash, never the global erased-cards list.
    subject = CardHasher(b"unit-test-salt-0123456789")(card)
    keys = card_keys(subject)
    assert len(subject) == 32
    assert {key_slot(k.encode()) for k in (keys.profile, keys.seen, keys.erased)} == {key_slot(subject.encode())}
    assert [card in k for k in (keys.profile, keys.seen, keys.erased)] == [False, False, False]
    assert ERASED_KEY not in (keys.profile, keys.seen, keys.erased) and keys.data == (keys.profile, keys.seen)
