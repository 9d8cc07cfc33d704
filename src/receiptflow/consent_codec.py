"""Reading a ``consents`` record: the one decoder of a consent change that every reader uses.

The router (as it routes and as it restores a partition's state), the profile agent and the
warehouse sink read the topic with :func:`decode_consent`, so a record is a consent change, a
tombstone or a rejection alike for all of them, and rejected for the same reason. What a reader
does with a rejected record is its own (the router, the agent and the sink dead-letter it,
:mod:`receiptflow.dlq`; a restore skips it: it was dead-lettered when it was first read).

It is on the router's hot path, so it does no more than decoding needs: no copy of the bytes or
of the decoded fields, and the error wrapping costs nothing until a record is rejected.
"""

from __future__ import annotations

from .codec import Codec
from .errors import DecodeError
from .models import ConsentChange
from .validation import validate_consent


def decode_consent(codec: Codec, value: bytes | None) -> ConsentChange | None:
    """A ``consents`` record's change; None for a tombstone (an erased card's key).

    Raises :class:`~receiptflow.errors.ValidationError` (a :class:`DecodeError` when the bytes are
    not a framed ``consent_change`` record) for a record the caller must reject.
    """
    if value is None:
        return None
    decoded = codec.decode(value, expect="consent_change")
    try:
        change = ConsentChange.from_avro(decoded.value)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError("undecodable", f"not a consent change: {exc}") from exc
    validate_consent(change)  # e.g. a card id with invisible characters: a second card that looks the same
    return change
