"""Basket pseudonyms: the keyed, period-rotated ids that stand in for receipt ids on analytics data.

The analytics record of a receipt must not be linkable to the receipt, yet the lines of one basket
must stay together. The basket id is therefore an HMAC-SHA-256 of the receipt id under a key only
the processor holds (``RECEIPTFLOW_ANALYTICS_KEY``), never the receipt id or anything derived from
it without the key. The key is rotated by period: the id of a receipt sold in month ``YYYY-MM`` is
keyed with ``HMAC(key, "YYYY-MM")``, so even a leaked period key links one month only, and baskets
of different months cannot be related through their ids. The period is written on the record
(``key_period``), so a rotation is visible to the analyst.

Pure: no I/O, no clock; the caller reads the key (:func:`receiptflow.secrets.analytics_key`) and
builds one :class:`BasketPseudonymiser` per process.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime

# 128 bits as 32 hex characters: collisions among even 10^12 baskets of one period stay below 10^-14.
BASKET_ID_HEX = 32
MIN_KEY_BYTES = 16


def key_period(event_time: datetime) -> str:
    """The rotation period of a sale: its month in UTC, ``YYYY-MM``."""
    utc = event_time.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"  # strftime costs several times more, per receipt


@dataclass(frozen=True)
class BasketPseudonymiser:
    """Keyed basket ids: ``basket_id(receipt_id, period)`` = HMAC(HMAC(key, period), receipt_id), truncated."""

    key: bytes = field(repr=False)
    # Period keys already derived (one per month seen); not part of the value, never printed.
    _periods: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"the analytics key must have at least {MIN_KEY_BYTES} bytes")

    def period_key(self, period: str) -> bytes:
        found = self._periods.get(period)
        if found is None:
            if len(self._periods) > 1024:  # a month per entry: only a replay of decades fills it
                self._periods.clear()
            found = self._periods[period] = hmac.new(self.key, period.encode(), hashlib.sha256).digest()
        return found

    def basket_id(self, receipt_id: str, period: str) -> str:
        digest = hmac.new(self.period_key(period), receipt_id.encode(), hashlib.sha256).hexdigest()
        return digest[:BASKET_ID_HEX]
