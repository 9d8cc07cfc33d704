"""Figures for people: euros, local time with the zone, durations, sizes, shares."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from receiptflow.humanize import duration, euros, local_time, percent, size

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("cents", "text"),
    [(104495, "1,044.95 €"), (0, "0.00 €"), (5, "0.05 €"), (-350, "-3.50 €"), (123456789, "1,234,567.89 €")],
)
def test_euros(cents: int, text: str) -> None:
    assert euros(cents) == text


def test_local_time_is_helsinki_with_the_zone_and_no_microseconds() -> None:
    # Winter: UTC+2 (EET); summer: UTC+3 (EEST).
    assert local_time("2026-12-01T18:31:05.123456+00:00") == "2026-12-01 20:31:05 EET"
    assert local_time(datetime(2026, 7, 1, 9, 0, tzinfo=UTC)) == "2026-07-01 12:00:00 EEST"
    # Milliseconds since the epoch, as the profile store keeps them.
    ms = int(datetime(2026, 12, 1, 22, 30, tzinfo=UTC).timestamp() * 1000)
    assert local_time(ms) == "2026-12-02 00:30:00 EET"
    # A time written with another offset is the same moment.
    assert local_time("2026-12-01T20:31:05+02:00") == local_time("2026-12-01T18:31:05Z")
    assert local_time("2026-12-01T18:31:05", "UTC", seconds=False) == "2026-12-01 18:31 UTC"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1_209_600, "14 days"),
        (86_400, "1 day"),
        (604_800 + 3_600, "7 days 1 h"),
        (5_400, "1 h 30 min"),
        (90, "1 min 30 s"),
        (60, "1 min"),
        (2.5, "2.5 s"),
        (3, "3 s"),
        (-1, "forever"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_size_and_percent() -> None:
    assert size(1_500_000) == "1.5 MB"
    assert size(512) == "512 bytes"
    assert percent(0.2346) == "23.5 %"
    assert percent(1) == "100.0 %"
