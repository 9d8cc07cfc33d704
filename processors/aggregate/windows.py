"""The open windows of one input partition: which record goes where, when a window closes, what is committed.

A window is one chain's baskets of one local date (:class:`receiptflow.cells.Window`); the router keys
``purchases.baskets`` by chain, so all of a window is on one partition. :class:`PartitionWindows`
holds, for one partition, every open window's baskets in memory with the offset of its first record,
and reads records one at a time (:meth:`~PartitionWindows.read`):

* a record of a window it holds, or of a window it has no marker of, joins (or opens) that window;
* a record of a closed window (one with a :class:`~.marker.Marker`) below the marker's
  ``counted_through`` on this partition was counted before a restart: it is skipped;
* any other record of a closed window is **late**: it is dropped, and counted in the marker.

**Closing.** The partition's *stream time* is the newest basket hour read. A window closes once the
stream time is ``grace`` past the window's end (the end of the local day of its baskets, the latest of
them), or once the partition has been read to its end and got no record for ``idle`` while the wall
clock is ``grace`` past the window's end (:meth:`~PartitionWindows.due`). Closing
(:meth:`~PartitionWindows.close`) releases the window's cells with
:func:`receiptflow.suppression.release` and makes its marker.

**Committed offset.** The input offset the worker commits for the partition
(:meth:`~PartitionWindows.committed`) is the first offset of its oldest open window, or the offset
after the last record read when none is open: after a crash the open windows are read again from the
log, and nothing a committed transaction closed or counted is counted twice (the markers say what).
:class:`Progress` rides along in the offset's metadata: how far the partition was read, so a record
below it that was dead-lettered is not dead-lettered again.

Pure: no I/O; the wall clock (epoch milliseconds) is an argument.
"""

from __future__ import annotations

import enum
import json
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import datetime

from receiptflow.cells import Cell, Window, window_end_ms, window_of
from receiptflow.models import AnalyticsBasket
from receiptflow.suppression import release

from .marker import Marker


def epoch_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Timing:
    """When windows close: ``grace_ms`` past their end, and ``idle_ms`` without a record (see the module)."""

    grace_ms: int
    idle_ms: int


class Outcome(enum.Enum):
    OPENED = "opened"  # the first record of a window
    ADDED = "added"  # a record of an open window
    COUNTED = "counted"  # read again after a restart: its window closed with it (skipped)
    LATE = "late"  # its window closed without it: dropped, and counted in the marker


@dataclass(frozen=True, slots=True)
class Read:
    outcome: Outcome
    window: Window
    marker: Marker | None = None  # LATE: the window's marker with this record counted


@dataclass(slots=True)
class OpenWindow:
    window: Window
    first_offset: int
    end_ms: int  # the latest end of its baskets' local day
    last_offset: int
    baskets: list[AnalyticsBasket] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Closed:
    """A closed window: the cells to publish and its marker."""

    window: Window
    cells: tuple[Cell, ...]
    marker: Marker
    baskets: int


@dataclass(frozen=True, slots=True)
class Progress:
    """What rides in the committed offset's metadata: the offset after the last record read.

    (The stream time is not kept: read again from the committed offset, it is at most what it was, so a
    restart can only close a window later than the run before would have, never earlier.)
    """

    read_through: int

    def to_metadata(self) -> str:
        return json.dumps({"read": self.read_through}, separators=(",", ":"))

    @classmethod
    def from_metadata(cls, text: str | None) -> Progress | None:
        """The progress of an offset's metadata; None when it holds none (an offset committed otherwise)."""
        try:
            read = json.loads(text or "")["read"]
        except (ValueError, TypeError, KeyError):
            return None
        return cls(read) if isinstance(read, int) and not isinstance(read, bool) else None


class PartitionWindows:
    """The open windows of one partition, read from ``start`` (the committed offset; None: the log's beginning).

    ``closed`` maps window ids to the markers of closed windows; it is shared by the partitions of
    a worker and updated in place when a window closes or counts a late basket.
    """

    def __init__(
        self,
        partition: int,
        start: int | None,
        now_ms: int,
        closed: MutableMapping[str, Marker],
        progress: Progress | None = None,
    ) -> None:
        self.partition = partition
        self.closed = closed
        self.open: dict[Window, OpenWindow] = {}
        self.start = start
        self.next_offset: int | None = None  # the offset after the last record read
        self.stream_ms = 0  # the newest basket hour read (epoch ms)
        # Records below this were read (and dead-lettered where they had to be) before a restart.
        self.read_before = progress.read_through if progress is not None else (start or 0)
        self.last_record_ms = now_ms

    # --- reading ---------------------------------------------------------------------------------
    def read(self, offset: int, basket: AnalyticsBasket, now_ms: int) -> Read:
        """Take the record at ``offset``: into its window, or skipped, or late (see the module docstring)."""
        self._seen(offset, now_ms)
        self.stream_ms = max(self.stream_ms, epoch_ms(basket.event_hour))
        w = window_of(basket)
        marker = self.closed.get(w.id)
        if marker is not None:
            if marker.counted(self.partition, offset):
                return Read(Outcome.COUNTED, w)
            late = marker.with_late(offset)
            self.closed[w.id] = late
            return Read(Outcome.LATE, w, late)
        end = window_end_ms(basket)
        held = self.open.get(w)
        if held is None:
            self.open[w] = OpenWindow(w, offset, end, offset, [basket])
            return Read(Outcome.OPENED, w)
        held.baskets.append(basket)
        held.last_offset = offset
        held.end_ms = max(held.end_ms, end)
        return Read(Outcome.ADDED, w)

    def skip(self, offset: int, now_ms: int) -> bool:
        """Pass over a record that is no basket (it is dead-lettered); False when it was read before a restart
        (and dead-lettered then)."""
        self._seen(offset, now_ms)
        return offset >= self.read_before

    def _seen(self, offset: int, now_ms: int) -> None:
        self.next_offset = offset + 1
        self.last_record_ms = now_ms

    # --- closing ---------------------------------------------------------------------------------
    def due(self, timing: Timing, now_ms: int | None = None, caught_up: bool = False) -> list[Window]:
        """The open windows that close now, oldest end first: by stream time; with ``now_ms``, also by the
        idle rule when the partition is read to its end (``caught_up``)."""
        idle = now_ms is not None and caught_up and now_ms - self.last_record_ms >= timing.idle_ms
        # Idle, the wall clock stands in for the stream time (never behind it).
        clock = max(self.stream_ms, now_ms) if idle and now_ms is not None else self.stream_ms
        due = [ow for ow in self.open.values() if clock >= ow.end_ms + timing.grace_ms]
        return [ow.window for ow in sorted(due, key=lambda ow: (ow.end_ms, ow.window))]

    def close(self, window: Window, k: int, at: datetime) -> Closed:
        """Close an open window: its cells (``release`` of its baskets) and its marker, recorded as closed."""
        held = self.open.pop(window)
        released = release(held.baskets, k)
        (totals,) = released.totals  # the baskets of one window
        marker = Marker.closed(totals, self.partition, held.last_offset + 1, len(released.cells), k, at)
        self.closed[window.id] = marker
        return Closed(window, released.cells, marker, len(held.baskets))

    # --- what is committed -----------------------------------------------------------------------
    def committed(self) -> int | None:
        """The offset to commit: the first of the oldest open window, else the next to read (None: nothing read)."""
        if self.open:
            return min(ow.first_offset for ow in self.open.values())
        return self.next_offset if self.next_offset is not None else self.start

    def progress(self) -> Progress:
        read = max(self.read_before, self.next_offset or 0)
        return Progress(read)

    @property
    def open_baskets(self) -> int:
        return sum(len(ow.baskets) for ow in self.open.values())

    @property
    def oldest_end_ms(self) -> int | None:
        """The end of the oldest open window's day (epoch ms); None when none is open."""
        return min((ow.end_ms for ow in self.open.values()), default=None)
