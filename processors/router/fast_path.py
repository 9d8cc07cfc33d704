"""The router's compiled fast path: whether it is used, and building it from the codec's schemas.

``receiptflow_fast`` (``rust/receiptflow_fast``, built by ``make setup``) reads a checkout's bytes
once per checkout (``Router.handle``): when the Python core would surely accept it, it hands the
facts dedup, policy and consent need (receipt id, chain, store, card, event time) to a callable of
the route step, which answers with the decision, and writes the routed records' bytes from the same
reading: the customer and marketing purchases and the analytics basket. The Python core stays the
reference: the fast path answers only where it is sure to write the same bytes (docs/performance.md
says where, and the property tests in ``tests/unit/processors/router/test_fast_path.py`` check it),
and otherwise says why it left the checkout (:data:`DECLINED`) for the Python core to read and decide.
Dedup, consent and the transaction stay in Python.

:func:`build` is the one place that chooses: ``None`` (the Python core only) when ``RECEIPTFLOW_FAST_PATH``
is off, when the extension is not built, or when it cannot read or write the schemas in hand (a
schema field it has no mapping for); the reason is logged once.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from receiptflow.codec import Codec
from receiptflow.models import Granularity

from .pseudonym import BasketPseudonymiser

try:
    from receiptflow_fast import Router as FastRouter
except ImportError:  # not built: the Python core routes everything
    FastRouter = None  # type: ignore[assignment,misc]

__all__ = ["DECLINED", "EPOCH", "RANK", "FastRouter", "available", "build", "millis", "utc_time"]

log = logging.getLogger(__name__)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# The extension's granularity ranks (the order of the purchase schema's symbols).
RANK: Final = {Granularity.ITEM: 0, Granularity.PRODUCT_GROUP: 1, Granularity.RECEIPT: 2}
# Why ``Router.handle`` leaves a checkout to the Python core before any decision: not framed (or no
# value), a schema id that is not a checkout it reads, a body it does not read exactly as fastavro
# does, or a checkout the Python validation may refuse (or accept on grounds it does not check).
DECLINED: Final = frozenset({"unframed", "unknown_schema", "unreadable", "unsure"})


def available() -> bool:
    """Whether the extension is built and importable."""
    return FastRouter is not None


def build(codec: Codec, baskets: BasketPseudonymiser | None, enabled: bool = True) -> FastRouter | None:
    """The fast path for ``codec``'s schemas and the basket key, or None when the Python core routes alone."""
    if not enabled:
        log.info("fast path off (RECEIPTFLOW_FAST_PATH): the Python core routes every checkout")
        return None
    if FastRouter is None:
        log.info("fast path not built (make setup builds it): the Python core routes every checkout")
        return None
    checkouts = [
        (v.schema_id, json.dumps(v.raw), codec.splices_lines(v.schema_id)) for v in codec.catalog.versions("checkout")
    ]
    purchase_header, purchase = codec.writer("purchase")
    basket = None
    if "analytics_basket" in codec.catalog.subjects():
        basket_header, basket_raw = codec.writer("analytics_basket")
        basket = (basket_header, json.dumps(basket_raw))
    try:
        return FastRouter(
            checkouts, (purchase_header, json.dumps(purchase)), basket, baskets.key if baskets is not None else None
        )
    except ValueError as exc:
        log.warning("fast path off: %s; the Python core routes every checkout", exc)
        return None


def millis(ts: datetime) -> int:
    """Milliseconds since the epoch, rounded down, as fastavro writes a ``timestamp-millis``."""
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def utc_time(ms: int) -> datetime:
    """The UTC instant of ``ms``, as fastavro reads a ``timestamp-millis``."""
    return EPOCH + timedelta(milliseconds=ms)
