"""Role views of a profile (pure): what the customer, marketing and operations each get to see.

* ``customer`` — the card holder's own view: visits and spend (lifetime and 30/90/365 days), points
  (and the household's, members' points added up), product-group mix, nutrition against the national
  recommendations, kg CO2e per euro, domestic share and where the salt and sugar came from.
* ``marketing`` — only what consent allows: activity windows and classes always; product-derived
  facts (mix, affinities, the grocery segment) only while product-data consent stands.
* ``full`` — everything stored, for support and subject access.

Recommendations (Finnish nutrition recommendations 2024, for adults; expressed per 1000 kcal of
purchased food so that a household's basket compares with one person's day of 2000 kcal): salt at
most 5 g a day, sugar at most 10 % of energy, vegetables, fruit and berries at least 500 g a day.
These describe the basket, not what anyone ate.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .fold import Profile, windows
from .rules import day_date

VIEWS = ("customer", "marketing", "full")
SALT_G_PER_1000_KCAL = 2.5
SUGAR_ENERGY_SHARE = 0.10
VEGFRUIT_G_PER_1000_KCAL = 250.0
AFFINITY_MONTHS = 12


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _shares(amounts: Mapping[str, int]) -> dict[str, float]:
    total = sum(amounts.values())
    return {k: round(v / total, 4) for k, v in sorted(amounts.items(), key=lambda kv: -kv[1])} if total else {}


def _windows(profile: Profile, today: date) -> dict[str, dict[str, int]]:
    return {f"{n}d": {"visits": v, "spend_cents": c} for n, (v, c) in windows(profile, today).items()}


def nutrition(profile: Profile) -> dict[str, Any]:
    """The basket against the recommendations; empty without item-level data."""
    n = profile.nutrition
    out: dict[str, Any] = {}
    kcal = n.get("energy_kcal", 0)
    if kcal:
        per_1000 = 1000 / kcal
        out["salt_g_per_1000_kcal"] = round(n.get("salt_mg", 0) / 1000 * per_1000, 2)
        out["salt_recommended_max_g_per_1000_kcal"] = SALT_G_PER_1000_KCAL
        out["sugar_energy_share"] = round(n.get("sugar_mg", 0) / 1000 * 4 / kcal, 4)
        out["sugar_recommended_max_energy_share"] = SUGAR_ENERGY_SHARE
        out["vegfruit_g_per_1000_kcal"] = round(n.get("vegfruit_g", 0) * per_1000, 1)
        out["vegfruit_recommended_min_g_per_1000_kcal"] = VEGFRUIT_G_PER_1000_KCAL
    if n.get("food_g"):
        out["vegfruit_share_of_food_weight"] = round(n.get("vegfruit_g", 0) / n["food_g"], 4)
    if n.get("item_cents"):
        euros = n["item_cents"] / 100
        out["kg_co2e_per_euro"] = round(n.get("co2e_g", 0) / 1000 / euros, 3)
        out["domestic_share"] = round(n.get("domestic_cents", 0) / n["item_cents"], 4)
    if profile.salt_by_group:
        out["salt_sources"] = _shares(profile.salt_by_group)
    if profile.sugar_by_group:
        out["sugar_sources"] = _shares(profile.sugar_by_group)
    return out


def affinities(profile: Profile, now: datetime, months: int = AFFINITY_MONTHS) -> dict[str, bool]:
    """Bought pet food / baby products / alcohol within ``months`` months (30-day months) of ``now``."""
    since = (now - timedelta(days=30 * months)).timestamp() * 1000
    return {kind: ms >= since for kind, ms in sorted(profile.affinity.items())}


def render(
    profile: Profile,
    kind: str,
    now: datetime,
    *,
    household: Mapping[str, int] | None = None,
    segments: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``kind`` view of ``profile`` at ``now``; ``household`` maps member cards to their points."""
    if kind not in VIEWS:
        raise ValueError(f"unknown view {kind!r}; one of {', '.join(VIEWS)}")
    today = now.date()
    doc: dict[str, Any] = {"card_id": profile.card_id, "view": kind}
    activity = {
        "visits": profile.visits,
        "spend_cents": profile.spend_cents,
        "first_purchase": _iso(profile.first_ms),
        "last_purchase": _iso(profile.last_ms),
        "windows": _windows(profile, today),
    }
    segs = dict(segments or {})
    if kind == "marketing":
        doc.update(activity)
        allowed = profile.product_allowed() and profile.has_product_data()
        doc["product_data_consent"] = allowed
        doc["classes"] = {k: v for k, v in segs.items() if k in ("visits_class", "money_class", "model")}
        if allowed:
            doc["product_group_mix"] = _shares(profile.groups)
            doc["affinities"] = affinities(profile, now)
            if "grocery_segment" in segs:
                doc["classes"]["grocery_segment"] = segs["grocery_segment"]
        return doc
    doc.update(activity)
    doc["points"] = profile.points
    if household is not None:
        doc["household"] = {"members_points": dict(sorted(household.items())), "points": sum(household.values())}
    doc["product_group_mix"] = _shares(profile.groups)
    doc["nutrition_and_climate"] = nutrition(profile)
    if segs:
        doc["segments"] = segs
    if kind == "full":
        doc["affinities_newest"] = {k: _iso(ms) for k, ms in sorted(profile.affinity.items())}
        doc["product_groups_cents"] = dict(sorted(profile.groups.items()))
        doc["nutrition_counters"] = dict(sorted(profile.nutrition.items()))
        doc["salt_mg_by_group"] = dict(sorted(profile.salt_by_group.items()))
        doc["sugar_mg_by_group"] = dict(sorted(profile.sugar_by_group.items()))
        doc["day_buckets"] = {
            day_date(d).isoformat(): {"visits": v, "spend_cents": c} for d, (v, c) in sorted(profile.days.items())
        }
        doc["consent"] = (
            None
            if profile.consent is None
            else {"product_data_marketing": profile.consent.product_data, "as_of": _iso(profile.consent.event_ms)}
        )
        doc["receipt_ids_remembered"] = len(profile.seen)
    return doc
