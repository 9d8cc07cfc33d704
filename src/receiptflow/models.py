"""Domain records: frozen dataclasses mirroring the Avro contract in ``schemas/``.

The ``.avsc`` files are the source of truth; these classes are the typed Python view of them that
the pure core (policy, consent, profile folds) works on. Each class converts to and from the plain
dict that fastavro reads and writes (``to_avro`` / ``from_avro``); the JSON Lines shape documented in
the README is read and written by :mod:`receiptflow.checkout_json`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, ClassVar, Protocol, Self, cast

from .field_values import local_time, offset_minutes_of, parse_time, to_utc
from .receipt_parts import (
    RECEIPT_KINDS,
    Adjustment,
    CheckoutLine,
    LineKind,
    Payment,
    PaymentMethod,
    ReceiptKind,
    Unit,
    line_values,
)


class Granularity(enum.StrEnum):
    """How much of a receipt may be kept against a customer, finest first."""

    ITEM = "ITEM"
    PRODUCT_GROUP = "PRODUCT_GROUP"
    RECEIPT = "RECEIPT"

    @property
    def rank(self) -> int:
        """0 for the finest level; a larger rank is coarser (more private)."""
        return _GRANULARITY_RANK[self]

    def coarsest(self, other: Granularity) -> Granularity:
        return self if self.rank >= other.rank else other


_GRANULARITY_RANK = {Granularity.ITEM: 0, Granularity.PRODUCT_GROUP: 1, Granularity.RECEIPT: 2}


class _Fields:
    """Avro conversion of a record whose Avro form is its fields as they are, in declaration order.

    A subclass is a ``slots`` dataclass, so ``__slots__`` lists its fields in that order. Records with
    nested records or times convert those fields themselves.
    """

    __slots__: ClassVar[tuple[str, ...]] = ()

    def to_avro(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        make: Any = cls  # a dataclass: positional arguments in field order
        return cast(Self, make(*_field_values(cls)(d)))


_FIELD_VALUES: dict[type[_Fields], Callable[[Mapping[str, Any]], tuple[Any, ...]]] = {}


def _field_values(cls: type[_Fields]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    # One C-level getter per class: faster than a literal constructor call with keywords.
    getter = _FIELD_VALUES.get(cls)
    if getter is None:
        getter = _FIELD_VALUES[cls] = cast(Callable[[Mapping[str, Any]], tuple[Any, ...]], itemgetter(*cls.__slots__))
    return getter


@dataclass(frozen=True, slots=True)
class Checkout:
    """A completed checkout as a register emits it. ``event_time`` is aware (any zone)."""

    receipt_id: str
    chain: str
    store_id: str
    register_id: str
    card_id: str | None
    event_time: datetime
    payment_method: PaymentMethod
    total_cents: int
    lines: tuple[CheckoutLine, ...] = ()
    currency: str = "EUR"
    # v2 (defaults: what a v1 record means)
    receipt_kind: ReceiptKind = ReceiptKind.SALE
    original_receipt_id: str | None = None
    adjustments: tuple[Adjustment, ...] = ()
    payments: tuple[Payment, ...] = ()

    def to_avro(self) -> dict[str, Any]:
        d = _sale_avro(self)
        d["receipt_kind"] = self.receipt_kind.value
        d["original_receipt_id"] = self.original_receipt_id
        d["adjustments"] = [a.to_avro() for a in self.adjustments]
        d["payments"] = [p.to_avro() for p in self.payments]
        d["lines"] = [line.to_avro() for line in self.lines]
        return d

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> Checkout:
        kind = d.get("receipt_kind")
        adjustments = d.get("adjustments")
        payments = d.get("payments")
        return cls(
            **_sale_from_avro(d),
            register_id=d["register_id"],
            payment_method=PaymentMethod(d["payment_method"]),
            currency=d.get("currency", "EUR"),
            lines=tuple([CheckoutLine.from_avro(x) for x in d.get("lines", ())]),
            receipt_kind=RECEIPT_KINDS[kind] if kind else ReceiptKind.SALE,
            original_receipt_id=d.get("original_receipt_id"),
            adjustments=tuple([Adjustment.from_avro(a) for a in adjustments]) if adjustments else (),
            payments=tuple([Payment.from_avro(p) for p in payments]) if payments else (),
        )


@dataclass(frozen=True, slots=True)
class ConsentChange(_Fields):
    """A customer's full consent state as of ``event_time``; v2 adds the proof (the writer's Kafka
    principal, the channel, the consent text's version), empty in a record written as v1."""

    card_id: str
    event_time: datetime
    product_data_marketing: bool
    electronic_marketing: bool
    source: str = "app"
    principal: str = ""
    channel: str = ""
    text_version: str = ""

    def to_avro(self) -> dict[str, Any]:
        return {**_Fields.to_avro(self), "event_time": to_utc(self.event_time)}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        # The v2 fields are absent from a v1 dict that was not read through the v2 schema.
        proof = (d.get("principal", ""), d.get("channel", ""), d.get("text_version", ""))
        pdm, em = d["product_data_marketing"], d["electronic_marketing"]
        return cls(d["card_id"], d["event_time"], pdm, em, d["source"], *proof)


@dataclass(frozen=True, slots=True)
class ConsentState(_Fields):
    product_data_marketing: bool
    electronic_marketing: bool
    known: bool


@dataclass(frozen=True, slots=True)
class GroupTotal(_Fields):
    product_group: str
    quantity: float
    amount_cents: int
    lines: int


@dataclass(frozen=True, slots=True)
class Purchase:
    """A validated checkout after policy truncation and consent: what downstream topics carry."""

    receipt_id: str
    chain: str
    store_id: str
    register_id: str | None
    card_id: str | None
    event_time: datetime
    payment_method: str
    currency: str
    total_cents: int
    granularity: Granularity
    items: tuple[CheckoutLine, ...]
    groups: tuple[GroupTotal, ...]
    policy_version: str
    consent: ConsentState
    processed_at: datetime
    # v2 (defaults: what a v1 record means)
    receipt_kind: ReceiptKind = ReceiptKind.SALE
    original_receipt_id: str | None = None
    deposit_cents: int = 0  # net bottle deposits within total_cents
    adjustment_cents: int = 0  # receipt-level discounts and benefits within total_cents

    def to_avro(self, shared: dict[int, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """The Avro dict; ``shared`` memoises the item and group lists of records built from one receipt.

        The records a receipt is routed to share the same ``items`` and ``groups`` tuples; pass one
        dict to their ``to_avro`` calls (and drop it with them) to convert those lists once.
        """
        if shared is None:
            items = [i.to_avro() for i in self.items]
            groups = [g.to_avro() for g in self.groups]
        else:
            items = _avro_list(shared, self.items)
            groups = _avro_list(shared, self.groups)
        return {**self.head_avro(), "items": items, "groups": groups, **self.tail_avro()}

    def head_avro(self) -> dict[str, Any]:
        """The fields before ``items`` (the router writes head, items, groups and tail separately)."""
        d = _sale_avro(self)
        d["receipt_kind"] = self.receipt_kind.value
        d["original_receipt_id"] = self.original_receipt_id
        d["deposit_cents"] = self.deposit_cents
        d["adjustment_cents"] = self.adjustment_cents
        d["granularity"] = str(self.granularity)
        return d

    def tail_avro(self) -> dict[str, Any]:
        """The fields after ``groups``: the lineage."""
        return {
            "policy_version": self.policy_version,
            "consent": self.consent.to_avro(),
            "processed_at": to_utc(self.processed_at),
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> Purchase:
        kind = d.get("receipt_kind")
        return cls(
            **_sale_from_avro(d),
            register_id=d.get("register_id"),
            payment_method=d["payment_method"],
            currency=d["currency"],
            granularity=Granularity(d["granularity"]),
            items=tuple(CheckoutLine.from_avro(x) for x in d.get("items", ())),
            groups=tuple(GroupTotal.from_avro(g) for g in d.get("groups", ())),
            policy_version=d["policy_version"],
            consent=ConsentState.from_avro(d["consent"]),
            processed_at=d["processed_at"],
            receipt_kind=RECEIPT_KINDS[kind] if kind else ReceiptKind.SALE,
            original_receipt_id=d.get("original_receipt_id"),
            deposit_cents=d.get("deposit_cents", 0),
            adjustment_cents=d.get("adjustment_cents", 0),
        )


@dataclass(frozen=True, slots=True)
class BasketLine(_Fields):
    """A line of an analytics basket: what was sold, without the register's line number."""

    sku: str
    product_group: str
    quantity: float
    unit_price_cents: int
    amount_cents: int
    kind: LineKind = LineKind.SALE  # v2
    unit: Unit = Unit.PIECE  # v2
    adjustment_cents: int = 0  # v2: the line's share of the receipt-level adjustments

    def to_avro(self) -> dict[str, Any]:
        return {**_Fields.to_avro(self), "kind": self.kind.value, "unit": self.unit.value}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> BasketLine:  # v1 lines lack the v2 fields
        return cls(*line_values(d), d.get("adjustment_cents", 0))


@dataclass(frozen=True, slots=True)
class AnalyticsBasket:
    """The anonymous analytics record of one checkout (``purchases.baskets``, read by the aggregator only).

    No receipt, register or card id: ``basket_id`` is a keyed pseudonym of the receipt id
    (:mod:`receiptflow.processors.router.pseudonym`), made under the key of ``key_period``; ``event_hour`` is
    the start of the hour of the sale in UTC. A refund basket (``receipt_kind`` REFUND) does not name
    the sale it pays back: that link would join two visits of one shopper.
    """

    basket_id: str
    key_period: str
    chain: str
    store_id: str
    event_hour: datetime
    event_tz_offset_minutes: int
    payment_method: str
    currency: str
    total_cents: int
    lines: tuple[BasketLine, ...]
    # v2 (defaults: what a v1 record means); no original receipt: a refund basket links to no sale
    receipt_kind: ReceiptKind = ReceiptKind.SALE
    deposit_cents: int = 0
    adjustment_cents: int = 0

    def to_avro(self) -> dict[str, Any]:
        return {**self.head_avro(), "lines": [line.to_avro() for line in self.lines]}

    def head_avro(self) -> dict[str, Any]:
        """The fields before ``lines`` (the router writes the head and each line separately)."""
        return {
            "basket_id": self.basket_id,
            "key_period": self.key_period,
            "chain": self.chain,
            "store_id": self.store_id,
            "event_hour": to_utc(self.event_hour),
            "event_tz_offset_minutes": self.event_tz_offset_minutes,
            "payment_method": self.payment_method,
            "currency": self.currency,
            "total_cents": self.total_cents,
            "receipt_kind": self.receipt_kind.value,
            "deposit_cents": self.deposit_cents,
            "adjustment_cents": self.adjustment_cents,
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> AnalyticsBasket:
        kind = d.get("receipt_kind")
        return cls(
            basket_id=d["basket_id"],
            key_period=d["key_period"],
            chain=d["chain"],
            store_id=d["store_id"],
            event_hour=d["event_hour"],
            event_tz_offset_minutes=d.get("event_tz_offset_minutes", 0),
            payment_method=d["payment_method"],
            currency=d["currency"],
            total_cents=d["total_cents"],
            lines=tuple(BasketLine.from_avro(x) for x in d.get("lines", ())),
            receipt_kind=RECEIPT_KINDS[kind] if kind else ReceiptKind.SALE,
            deposit_cents=d.get("deposit_cents", 0),
            adjustment_cents=d.get("adjustment_cents", 0),
        )


def _sale_avro(sale: Checkout | Purchase) -> dict[str, Any]:
    """The Avro fields a checkout and the purchases made from it share, in their schema order."""
    return {
        "receipt_id": sale.receipt_id,
        "chain": sale.chain,
        "store_id": sale.store_id,
        "register_id": sale.register_id,
        "card_id": sale.card_id,
        "event_time": to_utc(sale.event_time),
        "event_tz_offset_minutes": offset_minutes_of(sale.event_time),
        "payment_method": str(sale.payment_method),
        "currency": sale.currency,
        "total_cents": sale.total_cents,
    }


def _sale_from_avro(d: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments a checkout and a purchase read alike from their Avro dicts."""
    return {
        "receipt_id": d["receipt_id"],
        "chain": d["chain"],
        "store_id": d["store_id"],
        "card_id": d.get("card_id"),
        "event_time": local_time(d["event_time"], d.get("event_tz_offset_minutes", 0)),
        "total_cents": d["total_cents"],
    }


class _ToAvro(Protocol):
    def to_avro(self) -> dict[str, Any]: ...


def _avro_list(shared: dict[int, list[dict[str, Any]]], values: tuple[_ToAvro, ...]) -> list[dict[str, Any]]:
    # Keyed by identity: valid while the tuples are alive, i.e. for the records of one receipt.
    out = shared.get(id(values))
    if out is None:
        out = shared[id(values)] = [v.to_avro() for v in values]
    return out


__all__ = [
    "Adjustment",
    "AnalyticsBasket",
    "BasketLine",
    "Checkout",
    "CheckoutLine",
    "ConsentChange",
    "ConsentState",
    "Granularity",
    "GroupTotal",
    "LineKind",
    "Payment",
    "PaymentMethod",
    "Purchase",
    "ReceiptKind",
    "Unit",
    "local_time",
    "offset_minutes_of",
    "parse_time",
    "to_utc",
]
