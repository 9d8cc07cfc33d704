"""The erased cards a router worker keeps out: read before it routes, kept current as it routes.

A worker reads the erased-cards topic (``consents.erased``, salted hashes: :mod:`receiptflow.erasures`)
to its end before its first transaction (:meth:`ErasureFollower.start`), takes what has arrived at the
start of each transaction (:meth:`refresh`), and before it commits asks the broker for the topic's end
and reads up to it (:meth:`confirm`). When an erasure learned there is of a card the open transaction
routed or changed consent for -- the erasure was recorded while the transaction was in flight -- the
worker aborts the transaction and routes its records again, now without that card: the stricter
reading wins. So no transaction that commits after an erasure was acknowledged writes anything of
the card. The set itself (:class:`~receiptflow.erasures.ErasedCards`) is the data the pure route step
is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from receiptflow.erasures import ErasedCards

from .clients import ErasureFeed

log = logging.getLogger(__name__)

# How long reading the erased-cards topic up to its end may take before a commit.
CONFIRM_TIMEOUT_SECONDS = 10.0


class ErasureFollower:
    """One worker's erased cards and the reader that keeps them current."""

    def __init__(self, open_feed: Callable[[], ErasureFeed], card_hash: Callable[[str], str]) -> None:
        self.cards = ErasedCards(card_hash)
        self._open_feed = open_feed
        self._feed: ErasureFeed | None = None

    def start(self) -> int:
        """Read the topic to its end (before the first transaction); returns how many cards are erased."""
        if self._feed is None:
            self._feed = self._open_feed()
        self.cards.learn(self._feed.read_to_end())
        log.info("erased-cards record read: %d card(s) are kept out", len(self.cards))
        return len(self.cards)

    def refresh(self) -> None:
        """Take what the reader has fetched meanwhile (no round trip)."""
        if self._feed is not None:
            self.cards.learn(self._feed.poll())

    def confirm(self, cards: Iterable[str]) -> int:
        """Read up to the topic's end as it is now; how many of ``cards`` turned out erased meanwhile.

        Raises BrokerError when the broker does not say where the end is (the caller aborts).
        """
        if self._feed is None:
            raise RuntimeError("ErasureFollower.confirm() before start()")
        new = self.cards.learn(self._feed.catch_up(CONFIRM_TIMEOUT_SECONDS))
        return len(self.cards.among(cards, new)) if new else 0

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None
