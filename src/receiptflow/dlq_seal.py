"""Sealing dead letters, without I/O: whose card a rejected record is, the envelope, the replay identity.

A dead letter keeps the rejected record's key and value so that it can be replayed after a fix, but
never in clear when the record may name a card (docs/privacy.md, Dead letters):

* :func:`card_of` names the card a rejected record belongs to: the ``card_id`` of its value when the
  value decodes, else its key when the record comes from a topic keyed by card id (a register keys a
  checkout by its card, a truncated checkout still has that key). Records of the pseudonymous topics
  (:data:`PSEUDONYMOUS_TOPICS`: baskets, cells, window markers) never carry a card id;
* :func:`payload_for` decides how the letter keeps the record (:class:`Payload`): sealed under the
  card's data key, sealed under the install's dead-letter key when it comes from a card-bearing topic
  but names no card, in clear only from a pseudonymous topic, and not at all when the card is erased;
* :func:`seal` / :func:`open_sealed` are the envelope: AES-256-GCM (``cryptography``) of the key and
  value packed together, a random 96-bit nonce, and as associated data the letter's source position
  and card hash, so an envelope copied into another letter does not open;
* :func:`replay_identity` is what ``dlq replay`` de-duplicates on: the source topic, the consumer
  group that rejected it and a digest of the original bytes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import SealError, ValidationError
from .topics import ANALYTICS_BASKETS, ANALYTICS_WINDOWS, PURCHASES_ANALYTICS

ENVELOPE_VERSION = 1
DATA_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM nonce size NIST SP 800-38D recommends; random per envelope
_KEY_PRESENT, _VALUE_PRESENT = 1, 2
_LENGTH = struct.Struct(">I")

# Logical names of the topics whose records carry no card id by contract (pseudonyms and counts).
PSEUDONYMOUS_TOPICS = frozenset({ANALYTICS_BASKETS, PURCHASES_ANALYTICS, ANALYTICS_WINDOWS})


class Payload(StrEnum):
    """How a dead letter keeps its original record (the ``payload`` field of ``dead_letter`` v2)."""

    CLEAR = "clear"  # original_key/original_value: letters of version 1, records of pseudonymous topics
    CARD = "card"  # sealed under the card's data key: erasing the card deletes the key
    INSTALL = "install"  # sealed under the install's dead-letter key: a card-bearing topic, no card named
    WITHHELD = "withheld"  # the card was erased when the record was rejected: nothing kept


@dataclass(frozen=True, slots=True)
class Original:
    """A record's key and value as they were read."""

    key: bytes | None
    value: bytes | None


def card_of(decode: Callable[[bytes | None], dict[str, object]], key: bytes | None, value: bytes | None) -> str | None:
    """The card a rejected record belongs to: its value's ``card_id``, else (value unreadable) its key.

    ``decode`` reads a value (``Codec.decode(...).value``), raising ValidationError when it cannot.
    A value that decodes without a card (an anonymous checkout) belongs to no card.
    """
    try:
        record = decode(value)
    except ValidationError:
        if key is None:
            return None
        return key.decode("utf-8", errors="replace") or None
    card = record.get("card_id")
    return card if isinstance(card, str) and card else None


def payload_for(logical_topic: str, card: str | None, erased: bool) -> Payload:
    """How a letter of a record from ``logical_topic`` whose card is ``card`` keeps the record."""
    if card is not None:
        return Payload.WITHHELD if erased else Payload.CARD
    if logical_topic in PSEUDONYMOUS_TOPICS:
        return Payload.CLEAR
    return Payload.INSTALL


def associated_data(source_topic: str, partition: int, offset: int, card_hash: str | None) -> bytes:
    """What an envelope is bound to: the letter's source position and card hash."""
    parts = (f"receiptflow-dead-letter/{ENVELOPE_VERSION}", source_topic, str(partition), str(offset), card_hash or "")
    return "\x00".join(parts).encode()


def pack(original: Original) -> bytes:
    """Key and value in one byte string: flags, the key's length, the key, the value."""
    flags = (_KEY_PRESENT if original.key is not None else 0) | (_VALUE_PRESENT if original.value is not None else 0)
    key = original.key or b""
    return bytes([flags]) + _LENGTH.pack(len(key)) + key + (original.value or b"")


def unpack(data: bytes) -> Original:
    """The inverse of :func:`pack`."""
    if len(data) < 1 + _LENGTH.size or data[0] & ~(_KEY_PRESENT | _VALUE_PRESENT):
        raise SealError("the sealed record is malformed")
    flags = data[0]
    (length,) = _LENGTH.unpack_from(data, 1)
    start = 1 + _LENGTH.size
    if start + length > len(data):
        raise SealError("the sealed record is malformed")
    key = data[start : start + length]
    value = data[start + length :]
    return Original(key if flags & _KEY_PRESENT else None, value if flags & _VALUE_PRESENT else None)


def seal(data_key: bytes, original: Original, aad: bytes, nonce: bytes | None = None) -> bytes:
    """The envelope: version byte, nonce, AES-256-GCM ciphertext with its tag. ``nonce`` for tests only."""
    if len(data_key) != DATA_KEY_BYTES:
        raise SealError(f"a data key has {DATA_KEY_BYTES} bytes, not {len(data_key)}")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    return bytes([ENVELOPE_VERSION]) + nonce + AESGCM(data_key).encrypt(nonce, pack(original), aad)


def open_sealed(data_key: bytes, envelope: bytes, aad: bytes) -> Original:
    """The original record in ``envelope``; SealError when the key, the letter or the bytes do not match."""
    if len(data_key) != DATA_KEY_BYTES:
        raise SealError(f"a data key has {DATA_KEY_BYTES} bytes, not {len(data_key)}")
    if len(envelope) < 1 + NONCE_BYTES + 16 or envelope[0] != ENVELOPE_VERSION:
        raise SealError("not a dead-letter envelope of a known version")
    nonce = envelope[1 : 1 + NONCE_BYTES]
    try:
        plain = AESGCM(data_key).decrypt(nonce, envelope[1 + NONCE_BYTES :], aad)
    except InvalidTag as exc:
        raise SealError("the envelope does not open with this key for this letter") from exc
    return unpack(plain)


def record_digest(original: Original) -> bytes:
    """A digest of the original bytes (key and value, told apart from a key-less record)."""
    return hashlib.blake2b(pack(original), digest_size=16).digest()


def replay_identity(source_topic: str, consumer: str, original: Original) -> tuple[str, str, bytes]:
    """What replay de-duplicates on: the same bytes rejected again by the same consumer of the same topic."""
    return (source_topic, consumer, record_digest(original))


def new_data_key() -> bytes:
    """A random 256-bit data key."""
    return os.urandom(DATA_KEY_BYTES)


def hex_key(text: str | None) -> bytes | None:
    """A data key as Redis keeps it (hex), back to bytes; None stays None."""
    if text is None:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise SealError("a stored data key is not hex") from exc
    if len(key) != DATA_KEY_BYTES:
        raise SealError("a stored data key has the wrong length")
    return key
