"""The dedup changelog's batch records: what is packed is what is read back, and damage is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.processors.router.state import pack_seen, unpack_seen

entries = st.lists(
    st.tuples(st.text(min_size=1, max_size=60), st.integers(-(2**63), 2**63 - 1)),
    max_size=200,
)


@given(entries)
def test_packed_entries_read_back_in_order(items: list[tuple[str, int]]) -> None:
    assert unpack_seen(pack_seen(items)) == items


@given(entries.filter(bool), st.data())
def test_a_truncated_value_is_refused_not_misread(items: list[tuple[str, int]], data: st.DataObject) -> None:
    value = pack_seen(items)
    cut = data.draw(st.integers(1, len(value) - 1))
    # A cut on an entry boundary is a shorter valid value; anywhere else it must raise.
    boundaries = {len(pack_seen(items[:i])) for i in range(len(items) + 1)}
    if cut in boundaries:
        assert unpack_seen(value[:cut]) == items[: sorted(boundaries).index(cut)]
    else:
        with pytest.raises((ValueError, UnicodeDecodeError)):
            unpack_seen(value[:cut])
