"""What each customer page shows, built from the card's view (pure): rows of text and the charts.

The figures are those of ``receiptflow profile CARD --view customer``, only written for people
(euros, percentages, Finnish local time, in the page's language). Where product-level facts are
absent the page says why (:func:`product_gap`) instead of showing zeros.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from ..processors.profiles.fold import Profile
from ..processors.profiles.rules import day_date
from .charts import Bar, bar_chart
from .i18n import euros, local_time, month_label, number, percent
from .texts import group_name, t

# The card holder's pages, in the order the page's menu lists them (``/card/{card}/{page}``).
CUSTOMER_PAGES = ("purchases", "mix", "nutrition", "climate", "consents", "data", "erase")


def product_gap(profile: Profile, default_product_data: bool) -> str | None:
    """Why the card has no product-level facts (a text key), or None when it has them."""
    if profile.has_product_data():
        return None
    allowed = profile.consent.product_data if profile.consent is not None else default_product_data
    return "why_no_product_consent" if not allowed else "why_no_items"


def purchases(view: Mapping[str, Any], profile: Profile, chains: Mapping[str, Any] | None, lang: str) -> dict[str, Any]:
    """My purchases: the 30/90/365-day windows, lifetime, points, chains and spend by month."""
    windows = [
        {
            "label": t("days", lang, n=n),
            "visits": view["windows"][f"{n}d"]["visits"],
            "spend": euros(view["windows"][f"{n}d"]["spend_cents"], lang),
            "key": f"{n}d",
        }
        for n in (30, 90, 365)
    ]
    windows.append(
        {
            "label": t("lifetime", lang),
            "visits": view["visits"],
            "spend": euros(view["spend_cents"], lang),
            "key": "all",
        }
    )
    months: dict[tuple[int, int], int] = defaultdict(int)
    for day, (_, cents) in profile.days.items():
        d = day_date(day)
        months[(d.year, d.month)] += cents
    bars = [Bar(month_label(y, m, lang), cents, euros(cents, lang)) for (y, m), cents in sorted(months.items())]
    chain_rows = None
    if chains is not None:
        chain_rows = [
            {
                "chain": chain,
                "cells": [
                    euros(per.get(f"{n}d", {}).get("spend_cents", 0), lang)
                    + f" ({per.get(f'{n}d', {}).get('visits', 0)})"
                    for n in (30, 90, 365)
                ],
            }
            for chain, per in sorted(chains.items())
        ]
    household = view.get("household")
    return {
        "windows": windows,
        "first": local_time(view["first_purchase"], lang),
        "last": local_time(view["last_purchase"], lang),
        "points": number(view["points"], lang),
        "household_points": None if household is None else number(household["points"], lang),
        "household_cards": None if household is None else len(household["members_points"]),
        "chains": chain_rows,
        "chart": bar_chart(t("chart_of", lang, what=t("spend_by_month", lang)), bars) if bars else None,
    }


def mix(view: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """What I buy: the product-group mix as shares of spend."""
    shares: Mapping[str, float] = view["product_group_mix"]
    rows = [{"group": group_name(g, lang), "share": percent(s, lang, 1)} for g, s in shares.items()]
    bars = [Bar(group_name(g, lang), s, percent(s, lang, 1)) for g, s in shares.items()]
    chart = bar_chart(t("chart_of", lang, what=t("mix", lang)), bars) if bars else None
    return {"rows": rows, "chart": chart}


def _sources(shares: Mapping[str, float] | None, lang: str) -> list[dict[str, str]]:
    return [{"group": group_name(g, lang), "share": percent(s, lang, 1)} for g, s in (shares or {}).items()]


def nutrition(view: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """Nutrition: salt, sugar and vegetables against the recommendations, and where salt and sugar came from."""
    n: Mapping[str, Any] = view["nutrition_and_climate"]
    rows: list[dict[str, str]] = []
    bars: list[Bar] = []
    if "salt_g_per_1000_kcal" in n:
        salt, salt_max = n["salt_g_per_1000_kcal"], n["salt_recommended_max_g_per_1000_kcal"]
        sugar, sugar_max = n["sugar_energy_share"], n["sugar_recommended_max_energy_share"]
        veg, veg_min = n["vegfruit_g_per_1000_kcal"], n["vegfruit_recommended_min_g_per_1000_kcal"]
        rows = [
            {
                "measure": t("salt", lang),
                "key": "salt",
                "basket": number(salt, lang, 2),
                "rec": t("at_most", lang, v=number(salt_max, lang, 1)),
            },
            {
                "measure": t("sugar", lang),
                "key": "sugar",
                "basket": percent(sugar, lang, 1),
                "rec": t("at_most", lang, v=percent(sugar_max, lang)),
            },
            {
                "measure": t("vegfruit", lang),
                "key": "vegfruit",
                "basket": number(veg, lang, 1),
                "rec": t("at_least", lang, v=number(veg_min, lang)),
            },
        ]
        # One scale for three units: each bar is the basket as a share of its recommendation (the mark at 100 %).
        bars = [
            Bar(t("salt_short", lang), salt / salt_max, number(salt, lang, 2), 1.0),
            Bar(t("sugar_short", lang), sugar / sugar_max, percent(sugar, lang, 1), 1.0),
            Bar(t("vegfruit_short", lang), veg / veg_min, number(veg, lang, 1), 1.0),
        ]
    return {
        "rows": rows,
        "chart": bar_chart(t("chart_of", lang, what=t("nutrition", lang)), bars) if bars else None,
        "salt_sources": _sources(n.get("salt_sources"), lang),
        "sugar_sources": _sources(n.get("sugar_sources"), lang),
    }


def climate(view: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """Climate and origin: kg CO2e per euro and the domestic share."""
    n: Mapping[str, Any] = view["nutrition_and_climate"]
    if "kg_co2e_per_euro" not in n:
        return {"co2e": None, "domestic": None, "chart": None}
    domestic = n["domestic_share"]
    chart: Markup = bar_chart(
        t("chart_of", lang, what=t("domestic_share", lang)),
        [
            Bar(t("domestic", lang), domestic, percent(domestic, lang, 1)),
            Bar(t("other_origin", lang), 1 - domestic, percent(1 - domestic, lang, 1)),
        ],
    )
    return {"co2e": number(n["kg_co2e_per_euro"], lang, 3), "domestic": percent(domestic, lang, 1), "chart": chart}
