"""Household membership from its CSV, and the household's choice to share points card by card."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiptflow.errors import ConfigError
from receiptflow.processors.profiles.households import load_households, members, write_households

pytestmark = pytest.mark.unit


def test_members_of_a_household_and_of_none(tmp_path: Path) -> None:
    path = tmp_path / "households.csv"
    write_households(path, {"1": "h1", "2": "h1", "3": "h2"})
    membership = load_households(path)
    assert members(membership, "1") == ["1", "2"] and members(membership, "2") == ["1", "2"]
    assert members(membership, "3") == ["3"] and members(membership, "9") == ["9"]


def test_a_card_that_does_not_share_is_left_out_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "households.csv"
    path.write_text(
        "card_id,household_id,share_points\n1,h1,yes\n2,h1,no\n3,h1,\n4,h2,false\n5,h2,1\n", encoding="utf-8"
    )
    membership = load_households(path)
    assert members(membership, "1") == ["1", "3"]  # 2 keeps its points to itself
    assert members(membership, "2") == ["2"]  # and sees only its own
    assert members(membership, "4") == ["4"] and members(membership, "5") == ["5"]


def test_a_file_without_the_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "households.csv"
    path.write_text("card,household\n1,h1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="card_id,household_id"):
        load_households(path)
