"""Household membership: which loyalty cards belong to one household (co-owner cards).

The loyalty programme's customer register knows households; here membership is a CSV file
``card_id,household_id`` (``RECEIPTFLOW_HOUSEHOLDS_FILE``). The simulator's customer model carries the
same thing (``Customer.household_id``); :func:`receiptflow.producers.simulator.households_of` gives the
membership of simulated traffic, which :func:`write_households` writes.
A household's points are its members' points added up at read time, so each card's profile stays
one Redis key and one purchase updates one card atomically, in the card's own Redis Cluster slot.
Reading a household is a pipeline of per-member reads (one round trip per master holding a member on
a cluster): each member's hash is read whole, the sum is not one atomic snapshot — enough for a
points display, not for spending household points (see docs/profiles.md, "Redis Cluster").

Sharing is the household's choice, card by card: an optional ``share_points`` column (``yes``/``no``,
``true``/``false``, ``1``/``0``; missing or empty means yes) marks a card whose holder does not let the
household see its points. Such a card is left out of the household, both ways: its points are not
added to the others' view, and its holder sees only its own card's points (the card holder's page and
``profile --view customer`` alike).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from receiptflow.errors import ConfigError

_NO = frozenset({"no", "false", "0", "n"})


def load_households(path: Path) -> Mapping[str, str]:
    """card id -> household id from a ``card_id,household_id[,share_points]`` CSV, leaving out the cards
    that do not share their points with the household."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"cannot read households file {path}: {exc}") from exc
    if rows and not {"card_id", "household_id"} <= set(rows[0]):
        raise ConfigError(f"households file {path}: the header must be card_id,household_id")
    return MappingProxyType(
        {r["card_id"]: r["household_id"] for r in rows if (r.get("share_points") or "yes").strip().lower() not in _NO}
    )


def write_households(path: Path, membership: Mapping[str, str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(("card_id", "household_id"))
        for card, household in sorted(membership.items()):
            w.writerow((card, household))


def members(membership: Mapping[str, str], card_id: str) -> list[str]:
    """The cards of ``card_id``'s household (itself included); just itself when it has none."""
    household = membership.get(card_id)
    if household is None:
        return [card_id]
    return sorted(c for c, h in membership.items() if h == household)
