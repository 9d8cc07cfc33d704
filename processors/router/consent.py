"""Consent as the processor sees it: a short history per card and the rule that picks the state.

Pure functions on frozen values; no Kafka, no clock. A ``ConsentChange`` carries a card's *full*
consent state as of its event time. A card's history is the list of those states in the order the
broker appended them (the ``consents`` topic is ``LogAppendTime``): the newest *written* change is
the card holder's last word, whatever time its writer put on it, so a grant dated ahead by a
mis-clocked or forged writer never outranks a withdrawal written after it. For a receipt the
processor takes the **more restrictive** of

* the consent in force at the receipt's event time: of the changes dated before it, the newest
  written (a change dated at exactly that instant counts only where it is stricter), and
* the consent in force at processing time (the newest change written at all),

so withdrawing consent stops marketing use of older receipts processed later, and consent given
after a purchase never reaches back to it: that is what a change's event time is still for. On a tie
-- a change dated at the very instant of the purchase, or a change appended in the same millisecond
as the checkout -- the stricter reading wins, whatever order they arrived in. Two changes of a card
appended in one millisecond (one producer batch: the broker stamps it with one time) are no tie: they
are on one partition, and the later offset is the later word. Where either is unknown the
configured default applies (privacy-safe: nothing for marketing). A change without an append time
(none on a ``LogAppendTime`` topic) is placed by its event time. The router applies a card's consent
changes and checkouts in the order they were written (see
:mod:`receiptflow.processors.router.merge`). The consents topic is compacted, so after compaction
only a card's newest state survives a restart; the rule then falls back to that state and the
default, which can only be stricter, never looser.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass
from datetime import datetime
from functools import reduce

from receiptflow.models import ConsentChange, ConsentState

# Changes kept per card: enough to answer "in force at event time" for receipts that arrive late,
# small enough that a card flipping its consent every day does not grow without bound.
MAX_CHANGES_PER_CARD = 32


@dataclass(frozen=True, slots=True, order=True)
class ConsentRecord:
    """One change as the history keeps it; ordered by when it was written (append time, then offset:
    the broker stamps a whole producer batch with one append time), then by its own time."""

    written_ms: int  # the broker's append time; the event time in ms when the record had none
    offset: int  # the record's offset on its partition (a card's changes share one); 0 when unknown
    event_time: datetime
    product_data_marketing: bool
    electronic_marketing: bool

    def state(self) -> ConsentState:
        return ConsentState(self.product_data_marketing, self.electronic_marketing, known=True)


@dataclass(frozen=True, slots=True)
class ConsentHistory:
    """A card's consent changes, oldest written first (at most ``MAX_CHANGES_PER_CARD``).

    ``written_ms`` is the broker's append time (ms) of the newest consents record applied, and
    ``before_written`` the changes as they were before the records appended in that millisecond
    (None when no append time is known): a checkout appended in the same millisecond is a tie of
    the write order, and takes the stricter of the two (:func:`effective_consent`).
    """

    changes: tuple[ConsentRecord, ...] = ()
    written_ms: int = -1
    before_written: tuple[ConsentRecord, ...] | None = None

    def with_change(
        self,
        change: ConsentChange,
        keep: int = MAX_CHANGES_PER_CARD,
        written_ms: int | None = None,
        offset: int = 0,
    ) -> ConsentHistory:
        """The history with ``change`` added in write order; applying the same record twice is a no-op.

        ``written_ms``: when the broker appended the record that holds ``change``, if known; ``offset``
        its offset (0: unknown).
        """
        order = written_ms if written_ms is not None else _ms(change.event_time)
        rec = ConsentRecord(
            order, offset, change.event_time, change.product_data_marketing, change.electronic_marketing
        )
        if rec in self.changes:
            return self
        changes = list(self.changes)
        insort(changes, rec)
        if written_ms is None:
            return ConsentHistory(tuple(changes[-keep:]))
        # Several records of one millisecond: "before" is the state before the first of them.
        before = self.before_written if written_ms == self.written_ms else self.changes
        return ConsentHistory(tuple(changes[-keep:]), written_ms, before)

    def at(self, when: datetime) -> ConsentState | None:
        """The state in force at ``when``: of the changes dated at or before it, the newest written; None
        if there is none.

        Changes at one write position (one millisecond, no offsets known) count as their more
        restrictive combination, so the answer does not depend on the order they arrived in.
        """
        return newest_written([rec for rec in self.changes if rec.event_time <= when])

    def for_purchase(self, when: datetime, default: ConsentState) -> ConsentState:
        """The state a purchase made at ``when`` was made under.

        Of the changes dated strictly before ``when``, the newest written (``default`` without one);
        a change dated at exactly ``when`` is a tie between "before" and "after" the purchase, so it
        counts only as far as it is stricter: a withdrawal at that instant applies, a grant does not yet.
        """
        state = newest_written([rec for rec in self.changes if rec.event_time < when]) or default
        at_instant = [rec.state() for rec in self.changes if rec.event_time == when]
        return reduce(most_restrictive, at_instant, state)

    def latest(self) -> ConsentState | None:
        """The state in force now: the newest change written (those at one write position combined)."""
        return newest_written(self.changes)


def newest_written(records: list[ConsentRecord] | tuple[ConsentRecord, ...]) -> ConsentState | None:
    """The state of the newest written of ``records`` (in write order), the records at its write position
    (the same millisecond and offset: no offsets known) combined to the stricter; None for no records."""
    if not records:
        return None
    last = records[-1]
    tied = [rec.state() for rec in records if (rec.written_ms, rec.offset) == (last.written_ms, last.offset)]
    return reduce(most_restrictive, tied)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def with_record(
    history: ConsentHistory | None, change: ConsentChange, appended_ms: int, offset: int = 0
) -> ConsentHistory:
    """A card's ``history`` (None: none yet) with the ``change`` a consents record holds applied.

    ``appended_ms``: the record's broker append time, 0 when it has none; ``offset`` its offset. How
    the router applies a consent change, both as it reads the topic and as it restores a partition's
    state from it.
    """
    return (history or ConsentHistory()).with_change(change, written_ms=appended_ms or None, offset=offset)


def most_restrictive(a: ConsentState, b: ConsentState) -> ConsentState:
    return ConsentState(
        product_data_marketing=a.product_data_marketing and b.product_data_marketing,
        electronic_marketing=a.electronic_marketing and b.electronic_marketing,
        known=a.known and b.known,
    )


def effective_consent(
    history: ConsentHistory | None, event_time: datetime, default: ConsentState, written_ms: int | None = None
) -> ConsentState:
    """The consent a receipt made at ``event_time`` is processed under (see the module docstring).

    ``written_ms``: when the broker appended the receipt's checkout, if known. The router applies
    consent changes appended in the same millisecond before the checkout; that is a tie of the write
    order, so the receipt takes the stricter of the states with and without them (a withdrawal of
    that instant applies, a grant does not yet).
    """
    if history is None or not history.changes:
        return default
    at_event = history.for_purchase(event_time, default)
    at_processing = history.latest() or default
    consent = most_restrictive(at_event, at_processing)
    if written_ms is not None and written_ms == history.written_ms and history.before_written is not None:
        before = effective_consent(ConsentHistory(history.before_written), event_time, default)
        consent = most_restrictive(consent, before)
    return consent
