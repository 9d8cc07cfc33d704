"""Reading a ``consents`` record: the one decoder of a consent change that every reader uses.

The router (as it routes and as it restores a partition's state), the profile agent and the
warehouse sink read the topic with :func:`decode_consent`, so a record is a consent change, a
tombstone or a rejection alike for all of them, and rejected for the same reason. What a reader
does with a rejected record is its own (the router, the agent and the sink dead-letter it,
:mod:`receiptflow.dlq`; a restore skips it: it was dead-lettered when it was first read).

A change is judged at the time its record was written: the broker's append time (the topic is
``LogAppendTime``), which every reader has (:func:`written_at`). So the bounds of its event time
(:func:`~receiptflow.validation.check_consent_time`: the registers' clock drift ahead, a horizon back)
give the same answer when the router restores its state from the topic, when a sink replays it
months later or when a profile rebuild reads what the sink stored: an old record is never
dead-lettered because it is read late. Only a record without an append time is judged at the
reader's clock.

It is on the router's hot path, so it does no more than decoding needs: no copy of the bytes or
of the decoded fields, and the error wrapping costs nothing until a record is rejected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from .codec import Codec
from .errors import DecodeError
from .models import ConsentChange
from .validation import CONSENT_MAX_AGE, validate_consent

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decode_consent(
    codec: Codec, value: bytes | None, written: datetime, max_age: timedelta = CONSENT_MAX_AGE
) -> ConsentChange | None:
    """A ``consents`` record's change; None for a tombstone (an erased card's key).

    ``written``: when the record was written (:func:`written_at`), the time its event time is judged
    against. Raises :class:`~receiptflow.errors.ValidationError` (a :class:`DecodeError` when the
    bytes are not a framed ``consent_change`` record) for a record the caller must reject.
    """
    if value is None:
        return None
    decoded = codec.decode(value, expect="consent_change")
    try:
        change = ConsentChange.from_avro(decoded.value)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError("undecodable", f"not a consent change: {exc}") from exc
    # e.g. a card id with invisible characters (a second card that looks the same), a grant dated
    # tomorrow, a channel not in the fixed set. The proof fields are not required here: a v1 record
    # has none, and the writers that know them require them (validate_consent(proof=True)).
    validate_consent(change, written, max_age, proof=False)
    return change


def written_at(appended_ms: int | None, now: datetime) -> datetime:
    """When a record was written: its broker append time (ms), or ``now`` when it has none (0 or None)."""
    return _EPOCH + timedelta(milliseconds=appended_ms) if appended_ms else now


def millis(at: datetime) -> int:
    """``at`` in ms since the epoch, exactly (no float rounding): the inverse of :func:`written_at`."""
    return (at - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class WrittenConsent:
    """A consent change with where its record was written, what every reader orders changes by.

    ``written_ms`` is the broker's append time (ms); for a change read where there is none (an older
    warehouse row, a record without a timestamp), its event time in ms. ``offset`` is the record's
    offset: a card's changes are on one partition, and the broker stamps a whole producer batch with
    one append time, so of changes written in one millisecond the later offset is the later word
    (0: unknown; changes of one millisecond without offsets count as their stricter combination).
    """

    change: ConsentChange
    written_ms: int
    offset: int = 0

    @property
    def card_id(self) -> str:
        return self.change.card_id

    @property
    def position(self) -> tuple[int, int]:
        """Where the change stands in its card's write order."""
        return self.written_ms, self.offset

    @classmethod
    def of(cls, change: ConsentChange, appended_ms: int | None, offset: int = 0) -> WrittenConsent:
        """``change`` as written at ``appended_ms`` (0 or None: unknown, so at its event time)."""
        return cls(change, appended_ms or int(change.event_time.timestamp() * 1000), offset)


def as_written(e: ConsentChange | WrittenConsent) -> WrittenConsent:
    """``e`` with the time it was written (a bare change: at its event time)."""
    return e if isinstance(e, WrittenConsent) else WrittenConsent.of(e, None)


def in_write_order(changes: Iterable[WrittenConsent]) -> list[WrittenConsent]:
    """A card's changes in the order they were written (then by their own time: a stable order for ties)."""
    return sorted(changes, key=lambda w: (w.position, w.change.event_time))


def newest_written(changes: Iterable[WrittenConsent]) -> ConsentChange | None:
    """The change in force now: the newest written, whatever its event time; of changes at one position
    (one millisecond, no offsets known) the stricter combination, whatever order they came in (as the
    router and the profile store decide). None without changes."""
    ordered = in_write_order(changes)
    if not ordered:
        return None
    last = ordered[-1]
    tied = [w.change for w in ordered if w.position == last.position]
    return replace(
        last.change,
        product_data_marketing=all(c.product_data_marketing for c in tied),
        electronic_marketing=all(c.electronic_marketing for c in tied),
    )
