"""How a profile is kept in Redis: the keys, the hash's short field names and the week text.

Keys are named by the card's *subject*, its salted hash (:func:`receiptflow.card_hash.erased_hash`,
32 hex characters), never by the card id: the ``{subject}`` hash tag keeps one card's keys on one
Redis Cluster slot, so every profile script touches a single slot, and key names carry no card id.

``rf:{subject}:p``    hash, short field names (see ``_FIELD_DOC`` below)
``rf:{subject}:seen`` sorted set: 12-character receipt key scored by event time in ms
``rf:{subject}:x``    the card's erased marker: a string, the erasure time in ms; the scripts check it
``rf:erased``         set of the subjects of erased cards: the audit list, never read on the hot path

:func:`card_keys` names one card's keys; the profile store (:mod:`.profile_store`) computes the
subject with its cached hasher.

:func:`decode_profile` reads a hash back into the :class:`~.profiles.Profile` of the pure fold; the
Lua scripts (:mod:`.profile_scripts`) write it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .fold import ConsentMark, Profile
from .rules import NUTRIENTS

# Day buckets are stored seven to a hash field (one field per week since 1970-01-01, the day's slot
# inside it), so a year of daily visits stays far below the 128 fields of Redis's compact listpack
# encoding; a week's text (``week_text``, base 36) stays under the 64-byte limit of a listpack value
# (seven days of up to 35 visits and 600,000 euros each).
WEEK_DAYS = 7


# --- the Redis representation -----------------------------------------------------------------
_FIELD_DOC = """
v, s, f, l   lifetime visits, spend cents, first and last event ms
pt           points
w<base36 week> seven day buckets (week = epoch day // 7): slots joined by ",", trailing empty
             ones left out; a slot is <cents> for one visit or <visits>:<cents>, base 36
c, ct, ca, co  newest consent written: product data "1"/"0", its event ms, its record's append ms and offset
cw, cg       event ms of the newest withdrawal seen and of the first grant after it
sv, sd, sn, sm  segment model version, month, visits class, money class (``segments run``)
P...         product-derived (deleted on withdrawal): Pg:<group> cents, Pa:<kind> newest ms,
             Pn<code> nutrition counter, Ps:<group> salt mg, Pu:<group> sugar mg, Psg grocery segment
"""
_NUTRIENT_FIELD = {
    "item_cents": "Pnc",
    "co2e_g": "Pno",
    "domestic_cents": "Pnd",
    "food_g": "Pnw",
    "salt_mg": "Pns",
    "sugar_mg": "Pnu",
    "energy_kcal": "Pne",
    "vegfruit_g": "Pnv",
}
_FIELD_NUTRIENT = {v: k for k, v in _NUTRIENT_FIELD.items()}
assert set(_NUTRIENT_FIELD) == set(NUTRIENTS)

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    if n <= 0:
        return "0" if n == 0 else "-" + _base36(-n)
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out


def week_field(day: int) -> str:
    """The hash field holding ``day``'s bucket (with the other days of its week)."""
    return "w" + _base36(day // WEEK_DAYS)


def week_text(slots: Mapping[int, tuple[int, int]]) -> str:
    """A week field's value from slot (0-6) → (visits, cents): what the Lua script writes."""
    parts = [""] * WEEK_DAYS
    for i, (v, c) in slots.items():
        parts[i] = _base36(c) if v == 1 else f"{_base36(v)}:{_base36(c)}"
    return ",".join(parts).rstrip(",")


def week_days(field_name: str, text: str) -> dict[int, tuple[int, int]]:
    """Day → (visits, cents) of one week field (the inverse of ``week_text``)."""
    base = int(field_name[1:], 36) * WEEK_DAYS
    out = {}
    for i, part in enumerate(text.split(",")):
        if not part:
            continue
        v, _, c = part.rpartition(":")
        out[base + i] = (int(v, 36) if v else 1, int(c, 36))
    return out


# Segment fields written by ``segments run``; the grocery segment is product-derived ("P...").
SEGMENT_FIELDS = {"model": "sv", "month": "sd", "visits_class": "sn", "money_class": "sm", "grocery_segment": "Psg"}

# The subjects of every erased card: the audit list (``erase --record-existing`` reads it). The
# scripts check the per-card marker instead, which sits in the card's own slot.
ERASED_KEY = "rf:erased"

# SCAN patterns of every card's profile hash (for totals over all profiles, never on the hot path).
PROFILE_PATTERN = "rf:{*}:p"


def profile_key(subject: str) -> str:
    """The profile hash of the card whose salted hash is ``subject``."""
    return f"rf:{{{subject}}}:p"


def seen_key(subject: str) -> str:
    """The dedup set of the card whose salted hash is ``subject``."""
    return f"rf:{{{subject}}}:seen"


def erased_marker_key(subject: str) -> str:
    """The erased marker of the card whose salted hash is ``subject`` (in the card's slot)."""
    return f"rf:{{{subject}}}:x"


@dataclass(frozen=True, slots=True)
class CardKeys:
    """One card's keys, all in the slot of its hash tag (the card's salted hash)."""

    subject: str
    profile: str
    seen: str
    erased: str

    @property
    def data(self) -> tuple[str, str]:
        """The keys that hold the card's data (what an erasure or a rebuild deletes)."""
        return (self.profile, self.seen)


def card_keys(subject: str) -> CardKeys:
    """The keys of the card whose salted hash is ``subject``."""
    return CardKeys(subject, profile_key(subject), seen_key(subject), erased_marker_key(subject))


def decode_profile(card_id: str, h: Mapping[str, str], seen: Iterable[tuple[str, float]]) -> Profile:
    """A :class:`Profile` from its Redis hash and dedup set."""
    days: dict[int, tuple[int, int]] = {}
    groups: dict[str, int] = {}
    affinity: dict[str, int] = {}
    nutrition: dict[str, int] = {}
    salt: dict[str, int] = {}
    sugar: dict[str, int] = {}
    for k, v in h.items():
        if k.startswith("w"):
            days.update(week_days(k, v))
        elif k.startswith("Pg:"):
            groups[k[3:]] = int(v)
        elif k.startswith("Pa:"):
            affinity[k[3:]] = int(v)
        elif k.startswith("Ps:"):
            salt[k[3:]] = int(v)
        elif k.startswith("Pu:"):
            sugar[k[3:]] = int(v)
        elif k in _FIELD_NUTRIENT:
            nutrition[_FIELD_NUTRIENT[k]] = int(v)
    consent = None
    if "c" in h and "ct" in h:
        withdrawn, regranted = h.get("cw"), h.get("cg")
        consent = ConsentMark(
            h["c"] == "1",
            int(h["ct"]),
            None if withdrawn is None else int(withdrawn),
            None if regranted is None else int(regranted),
            int(h["ca"]) if "ca" in h else None,
            int(h.get("co", 0)),
        )
    return Profile(
        card_id=card_id,
        visits=int(h.get("v", 0)),
        spend_cents=int(h.get("s", 0)),
        first_ms=int(h["f"]) if "f" in h else None,
        last_ms=int(h["l"]) if "l" in h else None,
        days=MappingProxyType(days),
        points=int(h.get("pt", 0)),
        groups=MappingProxyType(groups),
        affinity=MappingProxyType(affinity),
        nutrition=MappingProxyType(nutrition),
        salt_by_group=MappingProxyType(salt),
        sugar_by_group=MappingProxyType(sugar),
        consent=consent,
        seen=MappingProxyType({m: int(score) for m, score in seen}),
    )
