"""Day buckets seven to a Redis hash field: the text the Lua script writes and ``decode_profile`` reads."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from receiptflow.processors.profiles.keys import WEEK_DAYS, decode_profile, week_days, week_field, week_text

DAYS = st.integers(0, 40_000)  # epoch days up to the year 2079
BUCKETS = st.tuples(st.integers(1, 35), st.integers(0, 36**5 - 1))  # visits, cents (< 600,000 € a day)


@given(st.dictionaries(DAYS, BUCKETS, max_size=60))
def test_week_fields_hold_exactly_the_day_buckets(days: dict[int, tuple[int, int]]) -> None:
    fields: dict[str, dict[int, tuple[int, int]]] = {}
    for day, bucket in days.items():
        fields.setdefault(week_field(day), {})[day % WEEK_DAYS] = bucket
    h = {name: week_text(slots) for name, slots in fields.items()}
    assert all(text for text in h.values())  # a field with no bucket is never written
    decoded: dict[int, tuple[int, int]] = {}
    for name, text in h.items():
        decoded.update(week_days(name, text))
    assert decoded == days
    assert dict(decode_profile("c", {**h, "v": str(len(days))}, []).days) == days
    assert len(h) <= len(days)


def test_a_full_week_stays_a_short_listpack_value() -> None:
    assert week_text(dict.fromkeys(range(WEEK_DAYS), (35, 36**5 - 1))) == ",".join(["z:zzzzz"] * 7)
    assert len(week_text(dict.fromkeys(range(WEEK_DAYS), (35, 36**5 - 1)))) <= 64
    # One visit is written as its cents alone; empty slots at the end are left out.
    assert week_text({0: (1, 250), 3: (2, 999)}) == "6y,,,2:rr"
    assert week_days(week_field(7 * 100 + 3), "6y,,,2:rr") == {700: (1, 250), 703: (2, 999)}
