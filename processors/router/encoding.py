"""Encoding the purchases routed from one checkout, without encoding the same lines twice.

A receipt routed at item level carries the checkout's lines unchanged on ``purchases.customer``
(and often ``purchases.marketing``). Those lines are already
Avro-encoded in the checkout, in the same layout, so :class:`PurchaseEncoder` writes a purchase as
head + the checkout's own line bytes + groups (encoded once per receipt) + tail (the lineage, the
same for most records of a batch, so remembered). The result is byte for byte what the ordinary
``Codec.encode`` writes; when the schemas do not allow splicing, or a record's items are not the
checkout's lines, it falls back to that ordinary path.

The analytics basket of a receipt has lines of another layout (no line number, another order), so
:class:`BasketEncoder` writes its head and then each line, remembering the bytes of lines it has
seen: the same product at the same price and quantity recurs across receipts all the time.
"""

from __future__ import annotations

from typing import Any

from receiptflow.avro_splice import BasketLayout, PurchaseLayout
from receiptflow.codec import Codec
from receiptflow.models import AnalyticsBasket, CheckoutLine, Purchase

# Lineage tails seen recently; bounded because processed_at changes with every batch.
_TAILS_MAX = 256
# Encoded basket lines remembered (a few MB at most); the memo starts over when full.
_LINES_MAX = 50_000


class PurchaseEncoder:
    """Encodes the records one checkout is routed to; ``encode`` once per record of that checkout."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.layout: PurchaseLayout | None = codec.purchase_layout
        self._tails: dict[tuple[Any, ...], bytes] = {}

    def receipt(self, lines: tuple[CheckoutLine, ...], lines_raw: bytes | None) -> _Receipt:
        """Start encoding the records routed from one checkout whose lines encode as ``lines_raw``."""
        return _Receipt(self, lines, lines_raw)

    def tail(self, p: Purchase) -> bytes:
        assert self.layout is not None
        c = p.consent
        key = (p.policy_version, c.product_data_marketing, c.electronic_marketing, c.known, p.processed_at)
        out = self._tails.get(key)
        if out is None:
            if len(self._tails) >= _TAILS_MAX:
                self._tails.clear()
            out = self._tails[key] = self.layout.tail(p.tail_avro())
        return out


class _Receipt:
    def __init__(self, encoder: PurchaseEncoder, lines: tuple[CheckoutLine, ...], lines_raw: bytes | None) -> None:
        self._enc = encoder
        self._lines = lines
        self._lines_raw = lines_raw
        self._groups: dict[int, bytes] = {}  # id(groups tuple) -> bytes; the tuples live as long as this
        self._shared: dict[int, list[dict[str, Any]]] = {}

    def encode(self, p: Purchase) -> bytes:
        layout = self._enc.layout
        if layout is None or (p.items and (p.items is not self._lines or self._lines_raw is None)):
            return self._enc.codec.encode("purchase", p.to_avro(self._shared))
        items = self._lines_raw if p.items else layout.EMPTY_ARRAY
        assert items is not None
        groups = self._groups.get(id(p.groups))
        if groups is None:
            groups = self._groups[id(p.groups)] = layout.groups([g.to_avro() for g in p.groups])
        return layout.join(layout.head(p.head_avro()), items, groups, self._enc.tail(p))


class BasketEncoder:
    """Encodes analytics baskets: the head with fastavro, each distinct line once while remembered."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.layout: BasketLayout | None = codec.basket_layout
        self._lines: dict[tuple[Any, ...], bytes] = {}

    def encode(self, b: AnalyticsBasket) -> bytes:
        layout = self.layout
        if layout is None:
            return self.codec.encode("analytics_basket", b.to_avro())
        memo = self._lines
        parts = []
        for line in b.lines:
            # Every field of the line: two lines alike in all but kind or share are encoded apart.
            key = (
                line.sku,
                line.product_group,
                line.quantity,
                line.unit_price_cents,
                line.amount_cents,
                line.kind,
                line.unit,
                line.adjustment_cents,
            )
            raw = memo.get(key)
            if raw is None:
                if len(memo) >= _LINES_MAX:
                    memo.clear()
                raw = memo[key] = layout.line(line.to_avro())
            parts.append(raw)
        return layout.join(layout.head(b.head_avro()), parts)
