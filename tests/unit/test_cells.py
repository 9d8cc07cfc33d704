"""Cells: the window of a basket (its chain and local date), when the window ends, the size buckets.

The window is read from the basket's UTC hour and its register's offset: local midnight, other
zones, and the two days a year Europe/Helsinki changes its offset are the edges.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.cells import (
    SIZE_BUCKETS,
    Cell,
    CellKey,
    Family,
    Window,
    local_start,
    size_bucket,
    window_end_ms,
    window_of,
)
from receiptflow.codec import Codec
from receiptflow.models import AnalyticsBasket, BasketLine, offset_minutes_of

HELSINKI = ZoneInfo("Europe/Helsinki")
CODEC = Codec()
LINE = (BasketLine("A", "dairy", 1.0, 100, 100),)


def basket_at(sale: datetime, chain: str = "PRISMA") -> AnalyticsBasket:
    """The basket of a sale at ``sale`` (aware, in the register's zone), as the router makes it."""
    hour = sale.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return AnalyticsBasket("0" * 32, "2026-01", chain, "S-1", hour, offset_minutes_of(sale), "CARD", "EUR", 100, LINE)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def test_a_sale_at_local_midnight_opens_the_new_day() -> None:
    midnight = datetime(2026, 6, 2, tzinfo=HELSINKI)
    assert window_of(basket_at(midnight)) == Window("PRISMA", date(2026, 6, 2))
    assert window_of(basket_at(midnight - timedelta(seconds=1))) == Window("PRISMA", date(2026, 6, 1))
    assert window_end_ms(basket_at(midnight - timedelta(seconds=1))) == ms(midnight)
    assert window_end_ms(basket_at(midnight)) == ms(midnight + timedelta(days=1))
    assert Window("PRISMA", date(2026, 6, 2)).id == "PRISMA/2026-06-02"


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_every_hour_of_a_year_falls_in_its_local_day_in_whole_hour_zones(zone: str) -> None:
    tz = ZoneInfo(zone)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for h in range(0, 365 * 24, 7):
        sale = (start + timedelta(hours=h, minutes=59)).astimezone(tz)
        b = basket_at(sale)
        assert window_of(b).local_date == sale.date()
        assert local_start(b).hour == sale.hour
        end = window_end_ms(b)
        # The sale is inside its window, which ends at the next local midnight in the sale's offset:
        # the real midnight unless the zone changes its offset in between (see the Helsinki days).
        assert ms(sale) < end
        midnight = datetime.combine(sale.date() + timedelta(days=1), datetime.min.time(), tzinfo=tz)
        own = timezone(sale.utcoffset() or timedelta())
        assert end == ms(midnight.replace(tzinfo=own))
        if midnight.utcoffset() == sale.utcoffset():
            assert end == ms(midnight)


def test_a_half_hour_zone_counts_a_sale_by_the_start_of_its_utc_hour() -> None:
    """A basket carries its UTC hour only: in Asia/Kolkata (+05:30) 00:15 belongs to the day before.

    The hour 18:00-19:00 UTC is 23:30-00:30 there; the basket is counted from its start, so the sale
    lies after the end of its own window. Stores with such offsets would need the window closed late.
    """
    sale = datetime(2026, 6, 2, 0, 15, tzinfo=ZoneInfo("Asia/Kolkata"))
    b = basket_at(sale)
    assert window_of(b).local_date == date(2026, 6, 1)
    assert local_start(b) == datetime(2026, 6, 1, 23, 30)
    assert window_end_ms(b) == ms(datetime(2026, 6, 2, tzinfo=ZoneInfo("Asia/Kolkata")))
    assert window_end_ms(b) < ms(sale)


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25), (date(2026, 6, 2), 24)],
    ids=["spring-forward", "fall-back", "plain-day"],
)
def test_helsinki_change_days_keep_every_hour_in_its_day(day: date, hours: int) -> None:
    """On the days Europe/Helsinki changes its offset, each hour's basket is still in that day's window.

    Each basket names the end of its day in its own offset. The baskets after the change (at 04:00
    local) name the real end; those before it name an end an hour late in spring (harmless: the
    window closes an hour later) and an hour EARLY in autumn: whoever closes windows must take the
    latest basket's end, or wait a grace of at least an hour.
    """
    start = datetime.combine(day, datetime.min.time(), tzinfo=HELSINKI).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=HELSINKI).astimezone(UTC)
    assert (end - start) == timedelta(hours=hours)
    baskets = [basket_at((start + timedelta(hours=h, minutes=30)).astimezone(HELSINKI)) for h in range(hours)]
    assert {window_of(b) for b in baskets} == {Window("PRISMA", day)}
    assert [local_start(b).hour for b in baskets] == _local_hours(start, hours)
    assert window_end_ms(baskets[-1]) == ms(end)
    early = {24: 0, 23: 3_600_000, 25: -3_600_000}[hours]
    assert window_end_ms(baskets[0]) == ms(end) + early
    assert {window_end_ms(b) for b in baskets} == {ms(end), ms(end) + early}


def _local_hours(start: datetime, hours: int) -> list[int]:
    return [(start + timedelta(hours=h)).astimezone(HELSINKI).hour for h in range(hours)]


def test_size_buckets_at_their_edges() -> None:
    edges = {0: "0", 1: "1", 2: "2", 3: "3-4", 4: "3-4", 5: "5-9", 9: "5-9", 10: "10-19", 19: "10-19", 20: "20+"}
    assert {n: size_bucket(n) for n in edges} == edges
    assert size_bucket(10_000) == "20+"
    assert size_bucket(-1) == "0"  # no basket has fewer than no goods; the lowest bucket all the same
    assert [size_bucket(lower) for lower, _ in SIZE_BUCKETS] == [name for _, name in SIZE_BUCKETS]


@given(st.integers(0, 200), st.integers(0, 200))
def test_size_buckets_are_in_order(a: int, b: int) -> None:
    labels = [name for _, name in SIZE_BUCKETS]
    if a <= b:
        assert labels.index(size_bucket(a)) <= labels.index(size_bucket(b))


keys = st.builds(
    CellKey,
    st.sampled_from(list(Family)),
    st.sampled_from(["PRISMA", "K_MARKET"]),
    st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    st.none() | st.text("S-0123456789", min_size=1, max_size=12),
    st.none() | st.integers(0, 23),
    st.none() | st.sampled_from(["dairy", "bread"]),
    st.none() | st.text("0123456789", min_size=1, max_size=13),
    st.none() | st.text("0123456789", min_size=1, max_size=13),
    st.none() | st.sampled_from([name for _, name in SIZE_BUCKETS]),
)


@given(keys, st.integers(1, 10**6), st.integers(0, 10**6), st.floats(-1e6, 1e6), st.integers(-(10**9), 10**9))
def test_a_cell_survives_its_avro_record(key: CellKey, baskets: int, lines: int, quantity: float, cents: int) -> None:
    cell = Cell(key, baskets, lines, quantity, cents)
    decoded = CODEC.decode(CODEC.encode("analytics_cell", cell.to_avro(10)), expect="analytics_cell").value
    assert Cell.from_avro(decoded) == cell
    assert decoded["window_id"] == f"{key.chain}/{key.local_date.isoformat()}"
