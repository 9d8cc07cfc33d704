"""profile's default output reads as euros, local time and per cents; --json keeps the stored values."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from receiptflow.cli.show import document_table, readable_rows
from receiptflow.processors.profiles.fold import Profile
from receiptflow.processors.profiles.rules import epoch_day
from receiptflow.processors.profiles.views import render

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)


def _profile() -> Profile:
    last = datetime(2026, 11, 30, 16, 31, 5, 123456, tzinfo=UTC)
    return Profile(
        card_id="C-1",
        visits=3,
        spend_cents=104495,
        first_ms=int(datetime(2026, 11, 2, 8, 0, tzinfo=UTC).timestamp() * 1000),
        last_ms=int(last.timestamp() * 1000),
        days={epoch_day(last.date()): (3, 104495)},
        points=1044,
        groups={"dairy": 75000, "bread": 25000},
    )


def test_the_customer_view_reads_in_euros_local_time_and_per_cents() -> None:
    doc = render(_profile(), "customer", NOW)
    rows = dict(readable_rows({k: v for k, v in doc.items() if k not in ("card_id", "view")}))
    assert rows["spend"] == "1,044.95 €"
    assert rows["visits"] == "3"
    assert rows["last purchase"] == "2026-11-30 18:31:05 EET"  # UTC+2 in winter, no microseconds
    assert rows["windows 30d"] == "visits: 3, 1,044.95 €"
    assert rows["product group mix"] == "dairy: 75.0 %, bread: 25.0 %"
    out = io.StringIO()
    Console(file=out, width=100).print(document_table(doc))
    text = out.getvalue()
    assert "cents" not in text and "104495" not in text and "{" not in text and "+00:00" not in text


def test_the_full_view_reads_the_same_way() -> None:
    rows = dict(readable_rows(render(_profile(), "full", NOW)))
    assert rows["product groups"] == "bread: 250.00 €, dairy: 750.00 €"
    assert rows["day buckets 2026-11-30"] == "visits: 3, 1,044.95 €"
