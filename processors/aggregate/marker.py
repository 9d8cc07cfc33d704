"""The close marker of a window: what the aggregator published for it and counted in it, on ``analytics.windows``.

One marker per closed window, keyed by its window id (``chain/local date``) on the compacted
``analytics.windows``, written in the transaction that publishes the window's cells; a late basket of
the window rewrites it (``late_baskets`` + 1) in the transaction that reads past the basket. The
marker is what a restarted aggregator knows of the windows it closed before:

* ``counted_through`` is the input offset after the last record counted for the window (its baskets,
  then each late basket): a record of the window below it on the window's partition was counted
  already and is skipped when it is read again; any other record of the window is late;
* the totals (``sale_baskets``, ``sale_cents``, ``refund_baskets``, ``refund_cents``) are those of
  :func:`receiptflow.suppression.release` over the window's baskets, published or not (never
  published anywhere else: they are the aggregator's own account); ``cells`` is how many cells were
  published, ``k`` the threshold they were published under.

The value is JSON (:meth:`Marker.to_json`). Pure: no I/O and no clock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from receiptflow.cells import Window
from receiptflow.suppression import WindowTotals

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Marker:
    """A closed window as its marker records it (see the module docstring)."""

    window_id: str
    chain: str
    local_date: date
    partition: int
    counted_through: int
    sale_baskets: int
    sale_cents: int
    refund_baskets: int
    refund_cents: int
    late_baskets: int
    cells: int
    k: int
    closed_at: datetime

    @classmethod
    def closed(
        cls, totals: WindowTotals, partition: int, counted_through: int, cells: int, k: int, at: datetime
    ) -> Marker:
        """The marker of a window closing now with these totals."""
        w = totals.window
        return cls(
            w.id,
            w.chain,
            w.local_date,
            partition,
            counted_through,
            totals.sale_baskets,
            totals.sale_cents,
            totals.refund_baskets,
            totals.refund_cents,
            late_baskets=0,
            cells=cells,
            k=k,
            closed_at=at.astimezone(UTC),
        )

    @property
    def window(self) -> Window:
        return Window(self.chain, self.local_date)

    def with_late(self, offset: int) -> Marker:
        """The marker once the late basket at ``offset`` is counted."""
        return replace(self, late_baskets=self.late_baskets + 1, counted_through=max(self.counted_through, offset + 1))

    def counted(self, partition: int, offset: int) -> bool:
        """Whether the record of this window at ``partition``/``offset`` was counted already."""
        return partition == self.partition and offset < self.counted_through

    def to_json(self) -> bytes:
        doc: dict[str, Any] = asdict(self)
        doc["local_date"] = self.local_date.isoformat()
        doc["closed_at"] = self.closed_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Marker:
        """The marker of a record's value; ValueError (or a subclass) when it is not one."""
        try:
            doc = json.loads(raw)
            at = datetime.fromisoformat(str(doc["closed_at"]).replace("Z", "+00:00"))
            ints = {
                name: _int(doc, name)
                for name in (
                    "partition",
                    "counted_through",
                    "sale_baskets",
                    "sale_cents",
                    "refund_baskets",
                    "refund_cents",
                    "late_baskets",
                    "cells",
                    "k",
                )
            }
            return cls(
                window_id=str(doc["window_id"]),
                chain=str(doc["chain"]),
                local_date=date.fromisoformat(str(doc["local_date"])),
                closed_at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
                **ints,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a close marker: {exc}") from exc


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is not an integer: {value!r}")
    return value


def unreadable(window_id: str) -> Marker | None:
    """What a marker that cannot be read still says: its window is closed (None: the key names no window).

    Every record of such a window counts as late (offset 0, no partition), so it is never published twice.
    """
    chain, _, day = window_id.rpartition("/")
    try:
        local_date = date.fromisoformat(day)
    except ValueError:
        return None
    if not chain:
        return None
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return Marker(window_id, chain, local_date, -1, 0, 0, 0, 0, 0, 0, 0, 0, epoch)


def read_markers(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, Marker]:
    """The closed windows in ``analytics.windows`` records (key, value) in log order: the newest marker
    of each window; a tombstone forgets the window."""
    markers: dict[str, Marker] = {}
    for key, value in records:
        if key is None:
            continue
        window_id = key.decode(errors="replace")
        if value is None:
            markers.pop(window_id, None)
            continue
        try:
            markers[window_id] = Marker.from_json(value)
        except ValueError as exc:
            log.error("close marker of %s cannot be read (%s): its window counts as closed", window_id, exc)
            fallback = unreadable(window_id)
            if fallback is not None:
                markers[window_id] = fallback
    return markers
