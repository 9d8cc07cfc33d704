"""The open windows of one partition without a broker: what closes a window, what is late, what is committed,
and what a restart from the committed offset and the close markers makes of the records it reads again."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiptflow.cells import Cell, window_of
from receiptflow.models import AnalyticsBasket
from receiptflow.processors.aggregate.marker import Marker
from receiptflow.processors.aggregate.windows import (
    Closed,
    Outcome,
    PartitionWindows,
    Progress,
    Timing,
    epoch_ms,
)
from receiptflow.suppression import distinct_baskets, release

from .baskets import NOW, basket, baskets, end_ms

pytestmark = pytest.mark.unit

K = 3
HOUR = 3600 * 1000
TIMING = Timing(grace_ms=2 * HOUR, idle_ms=300_000)
NOW_MS = epoch_ms(NOW)


def _windows(start: int | None = None, closed: dict[str, Marker] | None = None) -> PartitionWindows:
    return PartitionWindows(0, start, NOW_MS, {} if closed is None else closed)


def _read_all(w: PartitionWindows, items: list[AnalyticsBasket], first: int = 0) -> list[Outcome]:
    return [w.read(first + i, b, NOW_MS).outcome for i, b in enumerate(items)]


# --- closing -------------------------------------------------------------------------------------------
def test_a_window_closes_once_the_stream_time_is_the_grace_past_its_end() -> None:
    w = _windows()
    day0 = [basket(day=0, hour=h) for h in (9, 12, 23)]
    _read_all(w, day0)
    # 01:00 the next day: an hour past the end, the grace is two.
    w.read(3, basket(day=1, hour=1), NOW_MS)
    assert w.stream_ms == end_ms(0) + HOUR
    assert w.due(TIMING) == []
    w.read(4, basket(day=1, hour=2), NOW_MS)  # exactly end + grace
    assert [x.id for x in w.due(TIMING)] == ["SOKOS/2026-11-02"]


def test_the_idle_rule_needs_quiet_a_partition_read_to_its_end_and_the_wall_clock_past_end_and_grace() -> None:
    deadline = end_ms(0) + TIMING.grace_ms
    w = PartitionWindows(0, None, 0, {})
    w.read(0, basket(day=0, hour=12), now_ms=deadline - 10)  # the last record, read on the wall clock
    quiet = deadline - 10 + TIMING.idle_ms
    assert [x.id for x in w.due(TIMING, quiet, caught_up=True)] == ["SOKOS/2026-11-02"]
    assert w.due(TIMING, quiet, caught_up=False) == [], "records not read yet: not idle"
    assert w.due(TIMING, quiet - 1, caught_up=True) == [], "not quiet for long enough"
    assert w.due(TIMING, None, caught_up=True) == [], "no wall clock: the stream time alone"
    assert w.stream_ms < deadline
    early = PartitionWindows(0, None, 0, {})
    early.read(0, basket(day=0, hour=12), now_ms=0)
    assert early.due(TIMING, deadline - 1, caught_up=True) == [], "quiet for long, but the day plus grace is not over"
    assert [x.id for x in early.due(TIMING, deadline, caught_up=True)] == ["SOKOS/2026-11-02"]


def test_close_releases_the_windows_cells_and_records_its_marker() -> None:
    closed: dict[str, Marker] = {}
    w = _windows(closed=closed)
    items = [basket(store="0001", skus=("6410100000000",)) for _ in range(4)] + [basket(refund=True, total_cents=70)]
    _read_all(w, items, first=10)
    result = w.close(window_of(items[0]), K, NOW)
    assert result.cells == release(items, K).cells and result.cells
    m = result.marker
    assert closed == {"SOKOS/2026-11-02": m}
    assert (m.partition, m.counted_through, m.late_baskets, m.cells, m.k) == (0, 15, 0, len(result.cells), K)
    assert (m.sale_baskets, m.sale_cents, m.refund_baskets, m.refund_cents) == (4, 2000, 1, -70)
    assert w.open == {} and w.committed() == 15


# --- late and already counted ------------------------------------------------------------------------
def test_a_record_of_a_closed_window_is_late_and_counted_in_its_marker_once() -> None:
    closed: dict[str, Marker] = {}
    w = _windows(closed=closed)
    _read_all(w, [basket(day=0), basket(day=0)])
    w.close(window_of(basket(day=0)), K, NOW)
    late = w.read(7, basket(day=0, hour=20), NOW_MS)
    assert late.outcome is Outcome.LATE and late.marker is not None
    assert (late.marker.late_baskets, late.marker.counted_through) == (1, 8)
    assert closed["SOKOS/2026-11-02"] == late.marker
    again = w.read(9, basket(day=0, hour=21), NOW_MS)
    assert again.marker is not None and (again.marker.late_baskets, again.marker.counted_through) == (2, 10)
    # Another chain's day is its own window: opened, not late.
    assert w.read(10, basket("PRISMA", day=0), NOW_MS).outcome is Outcome.OPENED


def test_after_a_restart_a_record_below_counted_through_was_counted_and_one_past_it_is_late() -> None:
    closed: dict[str, Marker] = {}
    first = _windows(closed=closed)
    _read_all(first, [basket(day=0) for _ in range(3)], first=100)
    first.close(window_of(basket(day=0)), K, NOW)  # counted through 103
    again = _windows(start=100, closed=dict(closed))
    assert [again.read(o, basket(day=0), NOW_MS).outcome for o in (100, 101, 102)] == [Outcome.COUNTED] * 3
    assert again.read(103, basket(day=0), NOW_MS).outcome is Outcome.LATE
    # A marker of another partition (the partitions were changed): every record of its window is late.
    other = PartitionWindows(1, 0, NOW_MS, dict(closed))
    assert other.read(50, basket(day=0), NOW_MS).outcome is Outcome.LATE


# --- the committed offset ----------------------------------------------------------------------------
def test_the_committed_offset_is_the_first_offset_of_the_oldest_open_window() -> None:
    w = _windows(start=40)
    assert w.committed() == 40, "nothing read: where it started"
    assert _windows().committed() is None, "nothing read from the beginning: nothing to commit"
    w.read(40, basket("SOKOS", day=0), NOW_MS)
    w.read(41, basket("PRISMA", day=0), NOW_MS)
    w.read(42, basket("SOKOS", day=0), NOW_MS)
    assert w.committed() == 40
    w.close(window_of(basket("SOKOS", day=0)), K, NOW)
    assert w.committed() == 41
    w.close(window_of(basket("PRISMA", day=0)), K, NOW)
    assert w.committed() == 43, "none open: the next offset"
    w.read(43, basket("SOKOS", day=0), NOW_MS)  # late: nothing opens
    assert w.committed() == 44


def test_the_oldest_open_windows_end_is_what_the_not_closing_alert_watches() -> None:
    w = _windows()
    assert w.oldest_end_ms is None, "nothing open"
    w.read(0, basket("SOKOS", day=1), NOW_MS)
    assert w.oldest_end_ms == end_ms(1)
    w.read(1, basket("PRISMA", day=0), NOW_MS)  # an older day opens after a newer one
    w.read(2, basket("SOKOS", day=2), NOW_MS)
    assert w.oldest_end_ms == end_ms(0)
    w.close(window_of(basket("PRISMA", day=0)), K, NOW)
    assert w.oldest_end_ms == end_ms(1)
    for day in (1, 2):
        w.close(window_of(basket("SOKOS", day=day)), K, NOW)
    assert w.oldest_end_ms is None


def test_progress_rides_in_the_offset_metadata_and_a_dead_letter_is_not_written_again() -> None:
    w = _windows(start=10)
    assert w.skip(10, NOW_MS) is True
    w.read(11, basket(), NOW_MS)
    assert w.committed() == 11 and w.progress() == Progress(12)
    assert Progress.from_metadata(w.progress().to_metadata()) == Progress(12)
    for text in (None, "", "not json", '{"read": "12"}', "[]", '{"read": true}'):
        assert Progress.from_metadata(text) is None
    again = PartitionWindows(0, 11, NOW_MS, {}, Progress.from_metadata(w.progress().to_metadata()))
    assert again.skip(11, NOW_MS) is False, "read before the restart: dead-lettered then"
    assert again.skip(12, NOW_MS) is True


# --- any order, any batches, any crashes ---------------------------------------------------------------
@dataclass
class Published:
    """What committed transactions wrote: each window's cells and marker at close, the newest markers."""

    offset: int | None = None
    cells: dict[str, tuple[Cell, ...]] = field(default_factory=dict)
    at_close: dict[str, Marker] = field(default_factory=dict)
    markers: dict[str, Marker] = field(default_factory=dict)

    def commit(self, closes: list[Closed], markers: dict[str, Marker], offset: int | None) -> None:
        for c in closes:
            assert c.window.id not in self.cells, f"{c.window.id} published twice"
            self.cells[c.window.id] = c.cells
            self.at_close[c.window.id] = c.marker
        self.markers.update(markers)
        self.offset = offset


def _run(log: list[AnalyticsBasket], batch: int, crashes: set[int]) -> Published:
    """The worker's loop in miniature: batches, a commit after each, a crash instead of the commit of the
    batches numbered in ``crashes`` (the restart reads from the committed offset with the committed markers)."""
    out = Published()
    w = PartitionWindows(0, None, NOW_MS, {})
    pos, n = 0, 0
    while pos < len(log):
        closes: list[Closed] = []
        markers: dict[str, Marker] = {}
        for offset in range(pos, min(pos + batch, len(log))):
            r = w.read(offset, log[offset], NOW_MS)
            if r.outcome is Outcome.LATE and r.marker is not None:
                markers[r.window.id] = r.marker
            for x in w.due(TIMING):
                closes.append(w.close(x, K, NOW))
                markers[x.id] = closes[-1].marker
        if n in crashes:
            w = PartitionWindows(0, out.offset, NOW_MS, dict(out.markers))
            pos = out.offset or 0
        else:
            out.commit(closes, markers, w.committed())
            pos += batch
        n += 1
    # The partition goes quiet with the wall clock past every day: the rest closes.
    last = [w.close(x, K, NOW) for x in w.due(TIMING, NOW_MS + TIMING.idle_ms, caught_up=True)]
    out.commit(last, {c.window.id: c.marker for c in last}, w.committed())
    assert w.open == {}
    return out


def _unique(log: list[AnalyticsBasket]) -> list[AnalyticsBasket]:
    """One basket id per record (the router makes one per receipt; release() takes an id once)."""
    return [replace(b, basket_id=f"basket-{i}") for i, b in enumerate(log)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(baskets(), min_size=1, max_size=60).map(_unique),
    st.integers(1, 12),
    st.sets(st.integers(0, 20), max_size=4),
)
def test_any_order_batches_and_crashes_publish_each_window_once_with_the_cells_of_what_it_counted(
    log: list[AnalyticsBasket], batch: int, crashes: set[int]
) -> None:
    out = _run(log, batch, crashes)
    windows = {window_of(b) for b in log}
    assert set(out.cells) == {x.id for x in windows}, "every window once"
    for x in windows:
        records = [(o, b) for o, b in enumerate(log) if window_of(b) == x]
        through = out.at_close[x.id].counted_through
        counted = [b for o, b in records if o < through]
        late = [b for o, b in records if o >= through]
        assert counted, "the first record of a window opens it"
        assert out.cells[x.id] == release(counted, K).cells
        final = out.markers[x.id]
        assert final.late_baskets == len(late), "each late basket counted once, across crashes too"
        assert final.sale_baskets + final.refund_baskets == len(distinct_baskets(counted))
        assert final.counted_through == (records[-1][0] + 1 if late else through)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(baskets(days=4), min_size=1, max_size=60).map(_unique),
    st.integers(1, 12),
    st.sets(st.integers(0, 20), max_size=3),
)
def test_in_event_time_order_nothing_is_late_and_every_window_has_all_its_baskets(
    log: list[AnalyticsBasket], batch: int, crashes: set[int]
) -> None:
    log = sorted(log, key=lambda b: b.event_hour)
    out = _run(log, batch, crashes)
    by_window: dict[str, list[AnalyticsBasket]] = {}
    for b in log:
        by_window.setdefault(window_of(b).id, []).append(b)
    assert {m.late_baskets for m in out.markers.values()} == {0}
    assert {i: out.cells[i] for i in by_window} == {i: release(bs, K).cells for i, bs in by_window.items()}
    assert Counter(m.partition for m in out.markers.values()) == Counter({0: len(by_window)})
