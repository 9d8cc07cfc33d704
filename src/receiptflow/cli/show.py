"""A stored document (a profile view) as a person reads it: one row per fact, euros, local times, per cents.

The views (:mod:`receiptflow.processors.profiles.views`) keep stored units -- cents, UTC ISO times,
shares between 0 and 1 -- which is what ``--json`` prints for machines. Here a key says how its
value reads: ``*_cents`` is money, ``*_purchase``, ``as_of`` and ``*_at`` are moments, ``*share*``
and the mixes are shares; nested figures fold into one row (``30d  4 visits, 120.50 €``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich.table import Table

from ..humanize import euros, local_time, percent

# Mappings whose values are shares of a whole (0..1).
SHARE_MAPS = frozenset({"product_group_mix", "salt_sources", "sugar_sources"})
MOMENT_KEYS = frozenset({"first_purchase", "last_purchase", "as_of", "erased_at", "exported_at"})


def label(key: str) -> str:
    """``spend_cents`` → ``spend``; ``kg_co2e_per_euro`` → ``kg co2e per euro``."""
    return key.removesuffix("_cents").replace("_cents_", "_").replace("_", " ")


def value_text(key: str, value: Any, *, unit: str = "") -> str:
    """One value; ``unit`` is what the enclosing key said its values are (``cents``, ``share``, ``moment``)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and (unit == "cents" or key.endswith("_cents")):
        return euros(value)
    if isinstance(value, int | float) and (unit == "share" or "share" in key):
        return percent(float(value))
    if isinstance(value, str) and (unit == "moment" or key in MOMENT_KEYS or key.endswith("_at")):
        try:
            return local_time(datetime.fromisoformat(value))
        except ValueError:
            return value
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(value_text(key, v, unit=unit) for v in value) or "-"
    return str(value)


def _unit_of(key: str, parent: str) -> str:
    if key in SHARE_MAPS:
        return "share"
    if key.endswith("_cents"):
        return "cents"
    if key.endswith("_newest"):
        return "moment"
    return parent


def _folded(mapping: Mapping[str, Any], unit: str) -> str:
    """A mapping of plain values on one line: ``4 visits, 120.50 €`` or ``dairy: 23.5 %, bread: 9.0 %``."""
    parts = []
    for k, v in mapping.items():
        text = value_text(k, v, unit=unit)
        parts.append(text if k.endswith("_cents") else f"{label(k)}: {text}")
    return ", ".join(parts) or "-"


def readable_rows(doc: Mapping[str, Any], prefix: str = "", unit: str = "") -> list[tuple[str, str]]:
    """``(what, value)`` rows for every fact of ``doc``; nested mappings of plain values fold into one row."""
    rows: list[tuple[str, str]] = []
    for key, value in doc.items():
        name = f"{prefix}{label(key)}"
        child_unit = _unit_of(key, unit)
        if isinstance(value, Mapping):
            if any(isinstance(v, Mapping) for v in value.values()):
                rows.extend(readable_rows(value, f"{name} ", child_unit))
            else:
                rows.append((name, _folded(value, child_unit)))
        else:
            rows.append((name, value_text(key, value, unit=child_unit)))
    return rows


def document_table(doc: Mapping[str, Any]) -> Table:
    table = Table("", "", show_header=False, box=None, pad_edge=False)
    for name, text in readable_rows(doc):
        table.add_row(name, text)
    return table
