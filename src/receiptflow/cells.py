"""Anonymous analytics cells: the published unit of the analytics, its families and its window.

Analysts never see a basket. They see *cells*: figures that aggregate at least ``k`` baskets of one
chain and one local day (the *window*, :class:`Window`), in nine families (:class:`Family`):

====================  ===========================================  ==============================
family                dimensions (besides chain and local date)    parents
====================  ===========================================  ==============================
``chain_day``         --                                           --
``store_day``         store                                        ``chain_day``
``store_hour``        store, local hour                            ``store_day``
``basket_size``       size bucket (distinct goods lines)           ``chain_day``
``chain_group``       product group                                ``chain_day``
``chain_sku``         product group, SKU                           ``chain_group``
``store_group``       store, product group                         ``store_day``, ``chain_group``
``store_sku``         store, product group, SKU                    ``store_group``, ``chain_sku``
``sku_pair``          SKU, second SKU (``sku < sku_b``)            ``chain_sku`` of both
``refunds``           --                                           --
====================  ===========================================  ==============================

The first nine count *sale* baskets; refund baskets (which name no sale) are one figure per chain and
day (``refunds``). ``amount_cents`` is the baskets' totals for the place/time families, and goods
lines net of their share of receipt-level adjustments for the goods families (deposits belong to no
product group). Which cells are published is decided by :func:`receiptflow.suppression.release`;
this module only names things and maps them to and from the Avro record ``analytics_cell``.

Pure: no I/O and no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from receiptflow.models import AnalyticsBasket, LineKind, ReceiptKind

DEFAULT_K = 10


class Family(enum.StrEnum):
    CHAIN_DAY = "chain_day"
    STORE_DAY = "store_day"
    STORE_HOUR = "store_hour"
    BASKET_SIZE = "basket_size"
    CHAIN_GROUP = "chain_group"
    CHAIN_SKU = "chain_sku"
    STORE_GROUP = "store_group"
    STORE_SKU = "store_sku"
    SKU_PAIR = "sku_pair"
    REFUNDS = "refunds"


# Distinct goods lines of a basket → its size bucket (the label analysts see).
SIZE_BUCKETS: tuple[tuple[int, str], ...] = (
    (0, "0"),
    (1, "1"),
    (2, "2"),
    (3, "3-4"),
    (5, "5-9"),
    (10, "10-19"),
    (20, "20+"),
)

# Lines that are goods (in a product group); deposits and their refunds are money held, not goods.
NOT_GOODS = frozenset({LineKind.DEPOSIT, LineKind.DEPOSIT_REFUND})


def size_bucket(distinct_goods: int) -> str:
    label = SIZE_BUCKETS[0][1]
    for lower, name in SIZE_BUCKETS:
        if distinct_goods >= lower:
            label = name
    return label


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """One chain's sales of one local date: the unit the aggregator closes and publishes at once."""

    chain: str
    local_date: date

    @property
    def id(self) -> str:
        return f"{self.chain}/{self.local_date.isoformat()}"


def local_start(b: AnalyticsBasket) -> datetime:
    """The start of the basket's local hour, as a naive local time."""
    return b.event_hour.astimezone(UTC).replace(tzinfo=None) + timedelta(minutes=b.event_tz_offset_minutes)


def window_of(b: AnalyticsBasket) -> Window:
    return Window(b.chain, local_start(b).date())


def window_end_ms(b: AnalyticsBasket) -> int:
    """The end of the basket's local day in epoch milliseconds (local midnight after it, in its zone)."""
    local_midnight = datetime.combine(local_start(b).date() + timedelta(days=1), datetime.min.time())
    utc = local_midnight - timedelta(minutes=b.event_tz_offset_minutes)
    return int(utc.replace(tzinfo=UTC).timestamp() * 1000)


def is_refund(b: AnalyticsBasket) -> bool:
    return b.receipt_kind is ReceiptKind.REFUND


@dataclass(frozen=True, slots=True, order=True)
class CellKey:
    """Where a cell sits: its family and dimensions (None where the family has none)."""

    family: Family
    chain: str
    local_date: date
    store_id: str | None = None
    hour: int | None = None
    product_group: str | None = None
    sku: str | None = None
    sku_b: str | None = None
    size_bucket: str | None = None


@dataclass(frozen=True, slots=True)
class Cell:
    """A published figure: at least ``k`` baskets behind each one."""

    key: CellKey
    baskets: int
    lines: int
    quantity: float
    amount_cents: int

    def to_avro(self, k: int) -> dict[str, Any]:
        key = self.key
        return {
            "window_id": Window(key.chain, key.local_date).id,
            "family": key.family.value,
            "chain": key.chain,
            "local_date": key.local_date,
            "store_id": key.store_id,
            "hour": key.hour,
            "product_group": key.product_group,
            "sku": key.sku,
            "sku_b": key.sku_b,
            "size_bucket": key.size_bucket,
            "baskets": self.baskets,
            "lines": self.lines,
            "quantity": self.quantity,
            "amount_cents": self.amount_cents,
            "k": k,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Cell:
        key = CellKey(
            Family(d["family"]),
            d["chain"],
            d["local_date"],
            d.get("store_id"),
            d.get("hour"),
            d.get("product_group"),
            d.get("sku"),
            d.get("sku_b"),
            d.get("size_bucket"),
        )
        return cls(key, int(d["baskets"]), int(d["lines"]), float(d["quantity"]), int(d["amount_cents"]))
