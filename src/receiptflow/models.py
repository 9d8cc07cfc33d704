"""Domain records: frozen dataclasses mirroring the Avro contract in ``schemas/``.

The ``.avsc`` files are the source of truth; these classes are the typed Python view of them that
the pure core (policy, consent, profile folds) works on. Each class converts to and from the plain
dict that fastavro reads and writes (``to_avro`` / ``from_avro``) and to and from the JSON Lines
shape documented in the README (``to_json`` / ``from_json``): the same field names, event times as
ISO-8601 strings with their UTC offset, money as integer cents.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

from .errors import ValidationError


class PaymentMethod(enum.StrEnum):
    CARD = "CARD"
    CASH = "CASH"
    MOBILE = "MOBILE"
    GIFT_CARD = "GIFT_CARD"
    INVOICE = "INVOICE"
    OTHER = "OTHER"


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


def to_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValidationError("naive_time", f"time {ts.isoformat()} has no zone", "event_time")
    return ts.astimezone(UTC)


_ZONES: dict[int, timezone] = {}


def local_time(ts_utc: datetime, offset_minutes: int) -> datetime:
    """The event time as the register saw it (aware, with its own offset)."""
    zone = _ZONES.get(offset_minutes)
    if zone is None:
        # Real offsets lie within ±18 h; anything else is a broken register, not a time zone.
        if not -18 * 60 <= offset_minutes <= 18 * 60:
            raise ValidationError(
                "out_of_range", f"UTC offset of {offset_minutes} minutes is not a time zone", "event_tz_offset_minutes"
            )
        # A handful of offsets ever occur; building the timezone object per record is measurable.
        zone = _ZONES[offset_minutes] = timezone(timedelta(minutes=offset_minutes))
    try:
        return ts_utc.astimezone(zone)
    except OverflowError as exc:  # an instant at the very edge of the calendar
        raise ValidationError("out_of_range", f"event time {ts_utc!r} is out of range", "event_time") from exc


def offset_minutes_of(ts: datetime) -> int:
    off = ts.utcoffset()
    if off is None:
        raise ValidationError("naive_time", f"time {ts.isoformat()} has no zone", "event_time")
    return int(off.total_seconds() // 60)


def parse_time(value: Any, field_name: str) -> datetime:
    """ISO-8601 with a zone (``2026-11-24T10:15:00+02:00`` or ``...Z``) → aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError("naive_time", "time has no zone", field_name)
        return value
    if not isinstance(value, str):
        raise ValidationError("schema", f"expected an ISO-8601 string, got {type(value).__name__}", field_name)
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError("schema", f"not an ISO-8601 time: {value!r}", field_name) from exc
    if ts.tzinfo is None:
        raise ValidationError("naive_time", f"time {value!r} has no zone offset", field_name)
    return ts


@dataclass(frozen=True, slots=True)
class CheckoutLine:
    line_no: int
    sku: str
    product_group: str
    quantity: float
    unit_price_cents: int
    amount_cents: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "line_no": self.line_no,
            "sku": self.sku,
            "product_group": self.product_group,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
            "amount_cents": self.amount_cents,
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> CheckoutLine:
        return cls(
            line_no=d["line_no"],
            sku=d["sku"],
            product_group=d["product_group"],
            quantity=d["quantity"],
            unit_price_cents=d["unit_price_cents"],
            amount_cents=d["amount_cents"],
        )


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

    def to_avro(self) -> dict[str, Any]:
        return {
            "receipt_id": self.receipt_id,
            "chain": self.chain,
            "store_id": self.store_id,
            "register_id": self.register_id,
            "card_id": self.card_id,
            "event_time": to_utc(self.event_time),
            "event_tz_offset_minutes": offset_minutes_of(self.event_time),
            "payment_method": str(self.payment_method),
            "currency": self.currency,
            "total_cents": self.total_cents,
            "lines": [line.to_avro() for line in self.lines],
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> Checkout:
        return cls(
            receipt_id=d["receipt_id"],
            chain=d["chain"],
            store_id=d["store_id"],
            register_id=d["register_id"],
            card_id=d.get("card_id"),
            event_time=local_time(d["event_time"], d.get("event_tz_offset_minutes", 0)),
            payment_method=PaymentMethod(d["payment_method"]),
            currency=d.get("currency", "EUR"),
            total_cents=d["total_cents"],
            lines=tuple([CheckoutLine.from_avro(x) for x in d.get("lines", ())]),
        )

    def to_json(self) -> dict[str, Any]:
        d = self.to_avro()
        d.pop("event_tz_offset_minutes")
        d["event_time"] = self.event_time.isoformat()
        return d

    @classmethod
    def from_json(cls, d: Any) -> Checkout:
        """Build from the documented JSON shape; raises :class:`ValidationError` naming the field."""
        if not isinstance(d, dict):
            raise ValidationError("schema", "a checkout must be a JSON object")
        try:
            lines_raw = d.get("lines", [])
            if not isinstance(lines_raw, list):
                raise ValidationError("schema", "lines must be a list", "lines")
            lines = []
            for i, line in enumerate(lines_raw):
                if not isinstance(line, dict):
                    raise ValidationError("schema", "a line must be an object", f"lines[{i}]")
                lines.append(
                    CheckoutLine(
                        line_no=_req(line, "line_no", int, f"lines[{i}]."),
                        sku=_req(line, "sku", str, f"lines[{i}]."),
                        product_group=_req(line, "product_group", str, f"lines[{i}]."),
                        quantity=float(_req(line, "quantity", (int, float), f"lines[{i}].")),
                        unit_price_cents=_req(line, "unit_price_cents", int, f"lines[{i}]."),
                        amount_cents=_req(line, "amount_cents", int, f"lines[{i}]."),
                    )
                )
            card = d.get("card_id")
            if card is not None and not isinstance(card, str):
                raise ValidationError("schema", "card_id must be a string or null", "card_id")
            method = _req(d, "payment_method", str)
            try:
                payment = PaymentMethod(method)
            except ValueError as exc:
                raise ValidationError("schema", f"unknown payment method {method!r}", "payment_method") from exc
            return cls(
                receipt_id=_req(d, "receipt_id", str),
                chain=_req(d, "chain", str),
                store_id=_req(d, "store_id", str),
                register_id=_req(d, "register_id", str),
                card_id=card,
                event_time=parse_time(_req(d, "event_time", str), "event_time"),
                payment_method=payment,
                currency=_req(d, "currency", str) if d.get("currency") is not None else "EUR",
                total_cents=_req(d, "total_cents", int),
                lines=tuple(lines),
            )
        except KeyError as exc:  # pragma: no cover - _req raises ValidationError first
            raise ValidationError("missing_field", "required field missing", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """A customer's full consent state as of ``event_time``."""

    card_id: str
    event_time: datetime
    product_data_marketing: bool
    electronic_marketing: bool
    source: str = "app"

    def to_avro(self) -> dict[str, Any]:
        return {
            "card_id": self.card_id,
            "event_time": to_utc(self.event_time),
            "product_data_marketing": self.product_data_marketing,
            "electronic_marketing": self.electronic_marketing,
            "source": self.source,
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> ConsentChange:
        return cls(
            card_id=d["card_id"],
            event_time=d["event_time"],
            product_data_marketing=d["product_data_marketing"],
            electronic_marketing=d["electronic_marketing"],
            source=d["source"],
        )

    @classmethod
    def from_json(cls, d: Any) -> ConsentChange:
        if not isinstance(d, dict):
            raise ValidationError("schema", "a consent change must be a JSON object")
        return cls(
            card_id=_req(d, "card_id", str),
            event_time=parse_time(_req(d, "event_time", str), "event_time"),
            product_data_marketing=_req(d, "product_data_marketing", bool),
            electronic_marketing=_req(d, "electronic_marketing", bool),
            source=_req(d, "source", str),
        )


@dataclass(frozen=True, slots=True)
class ConsentState:
    product_data_marketing: bool
    electronic_marketing: bool
    known: bool

    def to_avro(self) -> dict[str, Any]:
        return {
            "product_data_marketing": self.product_data_marketing,
            "electronic_marketing": self.electronic_marketing,
            "known": self.known,
        }


@dataclass(frozen=True, slots=True)
class GroupTotal:
    product_group: str
    quantity: float
    amount_cents: int
    lines: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "product_group": self.product_group,
            "quantity": self.quantity,
            "amount_cents": self.amount_cents,
            "lines": self.lines,
        }


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
        return {
            "receipt_id": self.receipt_id,
            "chain": self.chain,
            "store_id": self.store_id,
            "register_id": self.register_id,
            "card_id": self.card_id,
            "event_time": to_utc(self.event_time),
            "event_tz_offset_minutes": offset_minutes_of(self.event_time),
            "payment_method": self.payment_method,
            "currency": self.currency,
            "total_cents": self.total_cents,
            "granularity": str(self.granularity),
        }

    def tail_avro(self) -> dict[str, Any]:
        """The fields after ``groups``: the lineage."""
        return {
            "policy_version": self.policy_version,
            "consent": self.consent.to_avro(),
            "processed_at": to_utc(self.processed_at),
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> Purchase:
        c = d["consent"]
        return cls(
            receipt_id=d["receipt_id"],
            chain=d["chain"],
            store_id=d["store_id"],
            register_id=d.get("register_id"),
            card_id=d.get("card_id"),
            event_time=local_time(d["event_time"], d.get("event_tz_offset_minutes", 0)),
            payment_method=d["payment_method"],
            currency=d["currency"],
            total_cents=d["total_cents"],
            granularity=Granularity(d["granularity"]),
            items=tuple(CheckoutLine.from_avro(x) for x in d.get("items", ())),
            groups=tuple(
                GroupTotal(g["product_group"], g["quantity"], g["amount_cents"], g["lines"])
                for g in d.get("groups", ())
            ),
            policy_version=d["policy_version"],
            consent=ConsentState(c["product_data_marketing"], c["electronic_marketing"], c["known"]),
            processed_at=d["processed_at"],
        )


@dataclass(frozen=True, slots=True)
class BasketLine:
    """A line of an analytics basket: what was sold, without the register's line number."""

    sku: str
    product_group: str
    quantity: float
    unit_price_cents: int
    amount_cents: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "product_group": self.product_group,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
            "amount_cents": self.amount_cents,
        }


@dataclass(frozen=True, slots=True)
class AnalyticsBasket:
    """The anonymous analytics record of one checkout (``purchases.analytics``).

    No receipt, register or card id: ``basket_id`` is a keyed pseudonym of the receipt id
    (:mod:`receiptflow.processors.pseudonym`), made under the key of ``key_period``; ``event_hour`` is
    the start of the hour of the sale in UTC.
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
        }

    @classmethod
    def from_avro(cls, d: dict[str, Any]) -> AnalyticsBasket:
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
            lines=tuple(
                BasketLine(x["sku"], x["product_group"], x["quantity"], x["unit_price_cents"], x["amount_cents"])
                for x in d.get("lines", ())
            ),
        )


class _ToAvro(Protocol):
    def to_avro(self) -> dict[str, Any]: ...


def _avro_list(shared: dict[int, list[dict[str, Any]]], values: tuple[_ToAvro, ...]) -> list[dict[str, Any]]:
    # Keyed by identity: valid while the tuples are alive, i.e. for the records of one receipt.
    out = shared.get(id(values))
    if out is None:
        out = shared[id(values)] = [v.to_avro() for v in values]
    return out


def _req(d: dict[str, Any], name: str, typ: type | tuple[type, ...], prefix: str = "") -> Any:
    if name not in d or d[name] is None:
        raise ValidationError("missing_field", "required field is missing", prefix + name)
    value = d[name]
    # bool is an int in Python; an integer field must not accept true/false.
    if isinstance(value, bool) and typ is not bool:
        raise ValidationError("schema", f"expected {_tname(typ)}, got a boolean", prefix + name)
    if not isinstance(value, typ):
        raise ValidationError("schema", f"expected {_tname(typ)}, got {type(value).__name__}", prefix + name)
    return value


def _tname(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


__all__ = [
    "AnalyticsBasket",
    "BasketLine",
    "Checkout",
    "CheckoutLine",
    "ConsentChange",
    "ConsentState",
    "Granularity",
    "GroupTotal",
    "PaymentMethod",
    "Purchase",
    "parse_time",
]
