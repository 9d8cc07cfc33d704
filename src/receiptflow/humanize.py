"""Figures for people: euros, local times with their zone, durations, sizes and shares.

The stores keep money in cents and times in UTC (milliseconds or ISO 8601); a person reads
``1,044.95 €`` and ``2026-12-01 20:31:05 EET``. Every command that prints for a person formats
through here, so the whole command line speaks one way; ``--json`` output keeps the stored values.

Times are shown in the store's zone, which is Europe/Helsinki unless a caller passes another
(every chain in the shipped policy is Finnish). Pure: no clock, no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from rich.filesize import decimal

DEFAULT_ZONE = "Europe/Helsinki"

__all__ = ["DEFAULT_ZONE", "duration", "euros", "local_time", "percent", "size"]


def euros(cents: int) -> str:
    """``104495`` → ``1,044.95 €`` (comma thousands, point decimals, the sign before the figure)."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(int(cents)), 100)
    return f"{sign}{whole:,}.{rest:02d} €"


def local_time(value: datetime | str | int | float, zone: str = DEFAULT_ZONE, *, seconds: bool = True) -> str:
    """A moment in ``zone`` with the zone's abbreviation: ``2026-12-01 20:31:05 EET``.

    ``value`` is an aware datetime, an ISO-8601 text with an offset (naive ones are taken as UTC)
    or milliseconds since the epoch. Microseconds are left out: nobody reads them.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value)
    else:
        moment = datetime.fromtimestamp(value / 1000, UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    shown = moment.astimezone(ZoneInfo(zone))
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


_UNITS = (("day", 86_400), ("h", 3_600), ("min", 60))


def duration(seconds: float) -> str:
    """``1209600`` → ``14 days``; ``5400`` → ``1 h 30 min``; ``2.5`` → ``2.5 s``; negative → ``forever``.

    Two units at most: the rest is noise for a person (Kafka's ``retention.ms=-1`` is forever).
    """
    if seconds < 0:
        return "forever"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds % 1 else f"{int(seconds)} s"
    parts: list[str] = []
    rest = round(seconds)
    for name, length in _UNITS:
        count, rest = divmod(rest, length)
        if count:
            plural = "s" if name == "day" and count != 1 else ""
            parts.append(f"{count} {name}{plural}")
        if len(parts) == 2:
            break
    if not parts or (len(parts) < 2 and rest and seconds < 3_600):
        parts.append(f"{rest} s")
    return " ".join(parts)


def size(n_bytes: int) -> str:
    """``1500000`` → ``1.5 MB`` (decimal units, as disks are sold)."""
    return decimal(int(n_bytes))


def percent(share: float, digits: int = 1) -> str:
    """``0.2346`` → ``23.5 %``."""
    return f"{share * 100:.{digits}f} %"
