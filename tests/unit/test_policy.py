"""Granularity policy: version choice by local date, truncation, loading and its errors."""

from __future__ import annotations

import tomllib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.errors import ConfigError
from receiptflow.models import Granularity
from receiptflow.policy import UNKNOWN_CHAIN_VERSION, load_policy, parse_policy, truncate

from .strategies import checkouts

HELSINKI_SUMMER = timezone(timedelta(hours=3))
POLICY = load_policy()


@pytest.mark.parametrize(
    ("chain", "level"),
    [
        ("SOKOS", Granularity.ITEM),
        ("EMOTION", Granularity.ITEM),
        ("PRISMA", Granularity.PRODUCT_GROUP),
        ("S_MARKET", Granularity.PRODUCT_GROUP),
        ("KODIN_TERRA", Granularity.PRODUCT_GROUP),
        ("ABC", Granularity.PRODUCT_GROUP),
        ("K_CITYMARKET", Granularity.ITEM),
        ("K_MARKET", Granularity.ITEM),
        ("VALINTATALO", Granularity.RECEIPT),
        ("SIWA", Granularity.RECEIPT),
        ("EUROMARKET", Granularity.RECEIPT),
        ("TEBOIL", Granularity.RECEIPT),
        ("NESTE", Granularity.RECEIPT),
    ],
)
def test_default_policy_today(chain: str, level: Granularity) -> None:
    decision = POLICY.version_at(chain, datetime(2026, 11, 24, 12, tzinfo=HELSINKI_SUMMER))
    assert decision.level is level
    assert decision.known_chain


def test_change_applies_on_the_local_date_of_the_receipt() -> None:
    # 30 April 2010 23:30 in Helsinki is still before the 1 May 2010 switch, although UTC is too.
    before = datetime(2010, 4, 30, 23, 30, tzinfo=HELSINKI_SUMMER)
    after = datetime(2010, 5, 1, 0, 30, tzinfo=HELSINKI_SUMMER)
    assert POLICY.version_at("PRISMA", before).level is Granularity.RECEIPT
    assert POLICY.version_at("PRISMA", after).level is Granularity.PRODUCT_GROUP
    assert POLICY.version_at("PRISMA", after).version_id == "prisma-pg-2010"


def test_unknown_chain_gets_strictest_level() -> None:
    d = POLICY.version_at("NEW_CHAIN", datetime(2026, 1, 1, tzinfo=HELSINKI_SUMMER))
    assert d.level is Granularity.RECEIPT
    assert d.version_id == UNKNOWN_CHAIN_VERSION
    assert not d.known_chain


def test_before_first_version_keeps_receipt_only() -> None:
    d = POLICY.version_at("K_MARKET", datetime(1999, 12, 31, tzinfo=HELSINKI_SUMMER))
    assert d.level is Granularity.RECEIPT


def test_describe_at_lists_every_chain() -> None:
    rows = POLICY.describe_at(date(2009, 1, 1))
    assert {r[0] for r in rows} == set(POLICY.chains)
    assert ("SOKOS", "S Group", "receipt", "sokos-receipt-2000") in rows


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('[chains.X]\nversions = [{ id = "a", from = 2010-01-01, level = "lines" }]', "unknown level"),
        ('[chains.X]\nversions = [{ id = "a", level = "item" }]', "missing"),
        ('[chains.X]\nversions = [{ id = "a", from = "2010", level = "item" }]', "TOML date"),
        (
            '[chains.X]\nversions = [{ id = "a", from = 2010-01-01, level = "item" },'
            ' { id = "a", from = 2011-01-01, level = "item" }]',
            "used twice",
        ),
        ("[chains.X]\nversions = []", "no versions"),
    ],
)
def test_bad_policy_files_are_config_errors(doc: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(tomllib.loads(doc))


def test_load_policy_from_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'default_level = "product_group"\n[chains.A]\nversions = [{ id = "a1", from = 2020-01-01, level = "item" }]\n'
    )
    policy = load_policy(path)
    assert policy.default_level is Granularity.PRODUCT_GROUP
    assert policy.version_at("A", datetime(2021, 1, 1, tzinfo=HELSINKI_SUMMER)).version_id == "a1"
    with pytest.raises(ConfigError):
        load_policy(tmp_path / "missing.toml")


@given(checkouts(), st.sampled_from(list(Granularity)))
def test_truncation_preserves_totals_and_never_exceeds_level(c, level) -> None:  # type: ignore[no-untyped-def]
    granularity, items, groups = truncate(c, level)
    assert granularity is level
    if level is Granularity.ITEM:
        assert items == c.lines
    else:
        assert items == ()
    if level is Granularity.RECEIPT:
        assert groups == ()
    else:
        assert sum(g.amount_cents for g in groups) == sum(line.amount_cents for line in c.lines)
        assert sum(g.lines for g in groups) == len(c.lines)
        assert len({g.product_group for g in groups}) == len(groups)
