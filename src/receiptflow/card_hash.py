"""Salted hashes of card ids: what the erased-cards records keep instead of the card id, and the
names of the marketing projections.

Redis (the profile store's erased set), every warehouse (``erased_cards``) and the erasure topic
must hash with the same key (:func:`receiptflow.secrets.erasure_salt`), or an erased card is not
recognised; so the hash sits below the processors and the sinks, which both use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def marketing_hash(card_id: str, key: bytes) -> str:
    """The name of a card's marketing projection: a keyed hash with the install's marketing key
    (:func:`receiptflow.secrets.marketing_key`), never the erasure salt, so the marketing reader finds
    the projection without being able to compute :func:`erased_hash` (which names every other key of
    the card). The domain prefix keeps the two hashes apart even if an install gave both the same key."""
    if not key:
        raise ValueError("marketing_hash needs the install's marketing key")
    return hashlib.blake2b(b"marketing\x00" + card_id.encode(), key=key[:64], digest_size=16).hexdigest()


def erased_hash(card_id: str, salt: bytes) -> str:
    """What the erased-cards record keeps: a keyed hash, from which the card id cannot be read back."""
    return hashlib.blake2b(card_id.encode(), key=salt[:64], digest_size=16).hexdigest()


class CardHasher:
    """Salted hashes of card ids as the erased-cards record keeps them, cached (a batch repeats cards).

    The salt is the install's (:func:`receiptflow.secrets.erasure_salt`): there is no built-in one,
    since a hash keyed with a salt written in the source links straight back to the card.
    """

    def __init__(self, salt: bytes) -> None:
        if not salt:
            raise ValueError("CardHasher needs the install's erasure salt")
        self.salt = salt
        self._cache: dict[str, str] = {}

    def __call__(self, card_id: str) -> str:
        found = self._cache.get(card_id)
        if found is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            found = self._cache[card_id] = erased_hash(card_id, self.salt)
        return found

    def column(self, cards: Sequence[str | None]) -> list[str | None]:
        """The hash column of a table's rows (None for anonymous rows)."""
        return [None if c is None else self(c) for c in cards]
