"""Field values of the contract: event times, and the required fields of a JSON record.

In Avro an event time is a UTC instant (``timestamp-millis``); a checkout and the records made from
it also carry the register's UTC offset in minutes (``event_tz_offset_minutes``), so the local time
of the sale can be rebuilt exactly. In JSON it is an ISO-8601 string with its offset. A time
without a zone is refused everywhere. A JSON field that is missing, null or of the wrong type is a
:class:`~receiptflow.errors.ValidationError` naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from .errors import ValidationError


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


def required(d: dict[str, Any], name: str, typ: type | tuple[type, ...], prefix: str = "") -> Any:
    """``d[name]``, which must be present, not null and of type ``typ``; else :class:`ValidationError` naming it."""
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
