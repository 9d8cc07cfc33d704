"""The sink interface shared by every warehouse: ``setup`` / ``write(batch)`` / ``flush``.

A sink is used in a loop of ``write(batch)`` then ``flush()`` (the shape of quixstreams' ``BaseSink``):
``write`` stages the rows *and* the Kafka positions of the batch inside an open transaction, ``flush``
commits both at once. Because the consumed offsets live in the warehouse, in the same transaction as
the rows they produced, a crash at any point keeps either a whole batch (rows and offsets) or none
of it; on partition assignment the runner resumes from the warehouse's offsets
(:meth:`Sink.committed_offsets`). Rows are additionally inserted with ``ON CONFLICT DO NOTHING`` on
their natural keys (receipt id; receipt id + line number; receipt id + product group), so a replay
from older offsets — another consumer group, a zombie consumer after a rebalance, an operator
rewinding — cannot duplicate anything.

The tables are in ``sinks.tables``, the rows a record becomes in ``sinks.rows``, the migrations
``setup`` applies in ``sinks.migrate``. Reads and other statements go through the sink's
:attr:`Sink.warehouse` (``sinks.queries``), which knows the dialect; the interface itself is only
the write path.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

from ..card_hash import CardHasher
from .queries import ANALYTICS_OFFSETS_SELECT, OFFSETS_SELECT, Warehouse
from .rows import AnyRecord
from .tables import RowCounts


class Sink(abc.ABC):
    """``setup`` / ``write(batch)`` / ``flush``, and the stored offsets.

    ``group_id`` names whose positions :meth:`committed_offsets` returns and ``write`` stores: the
    Kafka consumer group of the runner. ``warehouse`` is the sink's connection for reads and
    statements of its own (valid between ``setup`` and ``close``). A sink instance is used from one
    thread at a time.
    """

    group_id: str
    card_hash: CardHasher  # card id → the salted hash ``erased_cards`` keeps
    warehouse: Warehouse

    @abc.abstractmethod
    def setup(self) -> None:
        """Connect and apply pending migrations (idempotent)."""

    @abc.abstractmethod
    def write(self, batch: Sequence[AnyRecord]) -> None:
        """Stage a batch's rows and next offsets in the open transaction (opened if needed)."""

    @abc.abstractmethod
    def flush(self) -> RowCounts:
        """Commit what was written since the last flush, rows and offsets together; the rows inserted."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Drop what was written since the last flush."""

    def committed_offsets(self, topic: str) -> dict[int, int]:
        """partition → next offset to read, as committed together with the rows.

        A topic's positions are in the store its rows are in: the analytics topic's in the analytics store.
        """
        db = self.warehouse
        rows = db.query(db.sql(OFFSETS_SELECT), (self.group_id, topic))
        rows += db.query(db.sql(ANALYTICS_OFFSETS_SELECT), (self.group_id, topic))
        return {int(p): int(o) for p, o in rows}

    def close(self) -> None:
        """Drop anything not flushed and disconnect (idempotent)."""
        if self.warehouse.is_open:
            self.rollback()
            self.warehouse.close()

    def __enter__(self) -> Sink:
        self.setup()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
