"""The web page's languages (Finnish, English) and how it writes amounts, shares and times (pure).

The language comes from the ``lang`` cookie that the page's switch sets, else the browser's
``Accept-Language`` (the first of ``fi``/``en`` it prefers), else English. Euros are written as the
command line writes them in English (``1,044.95 €``) and as Finns write them in Finnish
(``1 044,95 €``, with no-break spaces so an amount never breaks across lines); times in Finnish
local time (Europe/Helsinki).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

LANGS = ("fi", "en")
HELSINKI = ZoneInfo("Europe/Helsinki")
NBSP = "\u00a0"


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The page's language: the switch's cookie, else the browser's preference, else English."""
    if cookie in LANGS:
        return cookie
    best: tuple[float, str] | None = None
    for order, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        base = tag.strip().lower().split("-")[0]
        if base not in LANGS:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and (best is None or q > best[0]):
            best = (q - order * 1e-6, base)  # equal weights: the one listed first
    return best[1] if best else "en"


def _grouped(whole: int, sep: str) -> str:
    return f"{whole:,}".replace(",", sep)


def euros(cents: int, lang: str) -> str:
    """``cents`` as euros: ``1,044.95 €`` in English, ``1 044,95 €`` in Finnish (no-break spaces)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    if lang == "fi":
        return f"{sign}{_grouped(whole, NBSP)},{frac:02d}{NBSP}€"
    return f"{sign}{_grouped(whole, ',')}.{frac:02d} €"


def number(value: float, lang: str, decimals: int = 0) -> str:
    """A number with the language's separators (``1,234.5`` / ``1 234,5``)."""
    text = f"{value:,.{decimals}f}"
    if lang == "fi":
        return text.replace(",", NBSP).replace(".", ",")
    return text


def percent(share: float, lang: str, decimals: int = 0) -> str:
    """A share (0..1) as a percentage: ``42 %`` in both languages (SI and Finnish usage)."""
    return f"{number(share * 100, lang, decimals)}{NBSP}%"


def local_time(iso: str | None, lang: str) -> str:
    """An ISO-8601 instant in Finnish local time: ``1.12.2026 klo 20.15`` / ``1 Dec 2026, 20:15``."""
    if not iso:
        return "\u2013"  # an en dash: no time
    at = datetime.fromisoformat(iso).astimezone(HELSINKI)
    if lang == "fi":
        return f"{at.day}.{at.month}.{at.year} klo {at.hour}.{at.minute:02d}"
    return f"{at.day} {at.strftime('%b')} {at.year}, {at.hour:02d}:{at.minute:02d}"


def month_label(year: int, month: int, lang: str) -> str:
    """A month on a chart's axis: ``12/2026`` / ``Dec 2026``."""
    if lang == "fi":
        return f"{month}/{year}"
    return f"{datetime(year, month, 1).strftime('%b')} {year}"
