"""Consent as the processor sees it: a short history per card and the rule that picks the state.

Pure functions on frozen values; no Kafka, no clock. A ``ConsentChange`` carries a card's *full*
consent state as of its event time, so a card's history is the list of those states ordered by
event time. For a receipt the processor takes the **more restrictive** of

* the consent in force at the receipt's event time (the newest change at or before it), and
* the consent in force at processing time (the newest change known at all),

so withdrawing consent stops marketing use of older receipts processed later, and consent given
after a purchase never reaches back to it. Where either is unknown the configured default applies
(privacy-safe: nothing for marketing). The consents topic is compacted, so after compaction only a
card's newest state survives a restart; the rule then falls back to that state and the default,
which can only be stricter, never looser.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass
from datetime import datetime
from functools import reduce

from ..models import ConsentChange, ConsentState

# Changes kept per card: enough to answer "in force at event time" for receipts that arrive late,
# small enough that a card flipping its consent every day does not grow without bound.
MAX_CHANGES_PER_CARD = 32


@dataclass(frozen=True, slots=True, order=True)
class ConsentRecord:
    event_time: datetime
    product_data_marketing: bool
    electronic_marketing: bool

    def state(self) -> ConsentState:
        return ConsentState(self.product_data_marketing, self.electronic_marketing, known=True)


@dataclass(frozen=True, slots=True)
class ConsentHistory:
    """A card's consent changes, oldest first (at most ``MAX_CHANGES_PER_CARD``)."""

    changes: tuple[ConsentRecord, ...] = ()

    def with_change(self, change: ConsentChange, keep: int = MAX_CHANGES_PER_CARD) -> ConsentHistory:
        """The history with ``change`` added in event-time order; applying the same change twice is a no-op."""
        rec = ConsentRecord(change.event_time, change.product_data_marketing, change.electronic_marketing)
        if rec in self.changes:
            return self
        changes = list(self.changes)
        insort(changes, rec)
        return ConsentHistory(tuple(changes[-keep:]))

    def at(self, when: datetime) -> ConsentState | None:
        """The state in force at ``when``: the newest change at or before it; None if there is none.

        Two changes with the same event time (two channels at once) count as their more restrictive
        combination, so the answer does not depend on the order they arrived in.
        """
        eligible = [rec for rec in self.changes if rec.event_time <= when]
        if not eligible:
            return None
        newest = eligible[-1].event_time
        states = [rec.state() for rec in eligible if rec.event_time == newest]
        return reduce(most_restrictive, states)

    def latest(self) -> ConsentState | None:
        return self.at(self.changes[-1].event_time) if self.changes else None


def most_restrictive(a: ConsentState, b: ConsentState) -> ConsentState:
    return ConsentState(
        product_data_marketing=a.product_data_marketing and b.product_data_marketing,
        electronic_marketing=a.electronic_marketing and b.electronic_marketing,
        known=a.known and b.known,
    )


def effective_consent(history: ConsentHistory | None, event_time: datetime, default: ConsentState) -> ConsentState:
    """The consent a receipt made at ``event_time`` is processed under (see the module docstring)."""
    if history is None or not history.changes:
        return default
    at_event = history.at(event_time) or default
    at_processing = history.latest() or default
    return most_restrictive(at_event, at_processing)
