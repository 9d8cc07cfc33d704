"""A card's consent history as its holder reads it in an export: when, what changed, by whom and how.

Pure: the warehouse's ``consent_changes`` rows of one card (as ``sinks.card_rows.export_rows`` gives
them: column name to JSON value) in, one entry per change out, in the order the changes were written
(``appended_at``, the order every reader applies them in; see docs/design.md, Consent). Each entry
keeps the stored values (``product_data_marketing``, ``electronic_marketing``, ``changed_at``,
``appended_at``, ``principal``, ``channel``, ``text_version``, ``source``) and adds the same in
words and local time (``when``, ``what``, ``how``), so a person needs no table of codes to read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..humanize import DEFAULT_ZONE, local_time

# A channel as the card holder names it.
CHANNEL_WORDS = {
    "app": "the mobile app",
    "web": "the web page",
    "store": "a store",
    "customer_service": "customer service",
}
_PURPOSES = (("product_data_marketing", "product data for marketing"), ("electronic_marketing", "e-mail marketing"))
_LEFT_OUT = frozenset({"card_id", "source_topic", "source_partition", "source_offset"})  # the export's own
NOT_RECORDED = "not recorded (given before consent texts and writers were recorded)"


def consent_history(rows: Iterable[Mapping[str, Any]], zone: str = DEFAULT_ZONE) -> list[dict[str, Any]]:
    """The entries of a card's consent history, oldest written first (see the module docstring)."""
    # A card's changes are on one partition: of two written in one millisecond the later offset is later.
    ordered = sorted(
        rows, key=lambda r: (_instant(_written(r)), r.get("source_offset") or 0, _instant(r["changed_at"]))
    )
    out: list[dict[str, Any]] = []
    before: Mapping[str, Any] | None = None
    for row in ordered:
        entry = {k: v for k, v in row.items() if k not in _LEFT_OUT}
        written = _written(row)
        entry["when"] = local_time(written, zone)
        if _instant(row["changed_at"]) != _instant(written):
            entry["when"] += f" (dated {local_time(row['changed_at'], zone)})"
        entry["what"] = _what(row, before)
        entry["how"] = _how(row)
        out.append(entry)
        before = row
    return out


def _written(row: Mapping[str, Any]) -> Any:
    return row.get("appended_at") or row["changed_at"]


def _instant(value: datetime | str) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _what(row: Mapping[str, Any], before: Mapping[str, Any] | None) -> str:
    """The change in words: each purpose allowed or not, and whether that changed."""
    parts = []
    for key, words in _PURPOSES:
        now = "allowed" if row[key] else "not allowed"
        if before is None:
            parts.append(f"{words}: {now}")
        elif bool(before[key]) != bool(row[key]):
            parts.append(f"{words}: now {now} (was {'allowed' if before[key] else 'not allowed'})")
        else:
            parts.append(f"{words}: {now} (unchanged)")
    return "; ".join(parts)


def _how(row: Mapping[str, Any]) -> str:
    """Through which channel, written by which principal, agreeing to which consent text."""
    channel, principal, text = (str(row.get(k) or "") for k in ("channel", "principal", "text_version"))
    if not (channel or principal or text):
        return NOT_RECORDED
    where = CHANNEL_WORDS.get(channel, channel or "an unrecorded channel")
    return f"through {where}, written by {principal or 'an unrecorded writer'}, consent text version {text or '?'}"
