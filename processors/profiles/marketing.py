"""The marketing projection (pure): what marketing may read of a profile, as the fields of a key of its own.

The marketing reader never reads a profile hash (``deploy/redis/users.acl``). The profile writer keeps,
next to each card's profile, a projection ``rf:m:{<marketing hash>}`` (:func:`projection_key`, the hash
of :func:`receiptflow.card_hash.marketing_hash`, keyed with the install's marketing key, never the
erasure salt) that holds what :func:`~.views.render` shows in the ``marketing`` view, and nothing else:

``at``                the day (UTC, ISO) the windows and affinities below were computed for
``v``, ``s``          lifetime visits and spend cents
``f``, ``l``          first and last purchase, event ms (both shown by the view)
``r30 r90 r365``      ``<visits>:<cents>`` in the last 30, 90 and 365 days up to ``at`` (no day bucket)
``c``                 "1" when product data may be shown (consent stands and there is product data)
``sv sn sm``          segment model, visits class, money class (``segments run``)
only with ``c`` = "1" (every product-derived field starts with "P", as in the profile hash):
``Pg:<group>``        the group's share of the product-group mix, as the view rounds it
``Pa:<kind>``         "1"/"0": bought pet food, baby products or alcohol within the view's 12 months
``Psg``               grocery segment

No nutrition counter, no salt or sugar source, no day bucket, no exact time of an affinity purchase,
no receipt id, no points, no consent time. :func:`project` makes the fields from a profile;
:func:`marketing_doc` turns them back into the view, equal to ``render(profile, "marketing", now)`` on
the day ``at`` (a unit test holds the two to each other). The Redis side is :mod:`.projections`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .fold import WINDOWS, Profile, windows
from .keys import SEGMENT_FIELDS
from .views import affinities

# Every field name a projection may hold besides the per-group and per-kind ones.
PROJECTION_FIELDS = frozenset({"at", "v", "s", "f", "l", "c", "sv", "sn", "sm", "Psg", *(f"r{n}" for n in WINDOWS)})
GROUP_PREFIX = "Pg:"
AFFINITY_PREFIX = "Pa:"
PRODUCT_PREFIX = "P"  # what a withdrawal strips (the Lua guard script deletes fields starting with it)
# The segment classes the marketing view shows (SEGMENT_FIELDS names -> projection fields); the
# grocery segment is product-derived and shown only with product data.
_CLASSES = {"model": "sv", "visits_class": "sn", "money_class": "sm"}
_GROCERY = ("grocery_segment", "Psg")


def projection_key(marketing_hash: str) -> str:
    """The marketing projection of the card whose marketing hash is ``marketing_hash``."""
    return f"rf:m:{{{marketing_hash}}}"


def guard_key(marketing_hash: str) -> str:
    """The projection's guard (the writer's token, :mod:`.projections`), in the projection's slot.

    Outside the marketing reader's key pattern ``rf:m:*`` (the next character is ``g``, not ``:``)."""
    return f"rf:mg:{{{marketing_hash}}}"


def segments_of(h: Mapping[str, str]) -> dict[str, str]:
    """The segments stored in a profile hash (``segments run``), as ``RedisProfileStore.segments`` gives them."""
    return {name: str(h[f]) for name, f in SEGMENT_FIELDS.items() if f in h}


def _shares(amounts: Mapping[str, int]) -> dict[str, float]:
    total = sum(amounts.values())
    return {k: round(v / total, 4) for k, v in amounts.items()} if total else {}


def project(profile: Profile, segments: Mapping[str, str], now: datetime) -> dict[str, str]:
    """The projection of ``profile`` at ``now``: the fields of the module docstring, as strings."""
    allowed = profile.product_allowed() and profile.has_product_data()
    out = {"at": now.astimezone(UTC).date().isoformat(), "v": str(profile.visits), "s": str(profile.spend_cents)}
    if profile.first_ms is not None:
        out["f"] = str(profile.first_ms)
    if profile.last_ms is not None:
        out["l"] = str(profile.last_ms)
    for n, (v, c) in windows(profile, now.astimezone(UTC).date()).items():
        out[f"r{n}"] = f"{v}:{c}"
    out["c"] = "1" if allowed else "0"
    for name, f in _CLASSES.items():
        if name in segments:
            out[f] = segments[name]
    if allowed:
        for group, share in _shares(profile.groups).items():
            out[GROUP_PREFIX + group] = repr(share)
        for kind, recent in affinities(profile, now).items():
            out[AFFINITY_PREFIX + kind] = "1" if recent else "0"
        if _GROCERY[0] in segments:
            out[_GROCERY[1]] = segments[_GROCERY[0]]
    return out


def _iso(ms: str | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat()


def marketing_doc(card_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The marketing view from a projection's fields (the inverse of :func:`project`)."""
    wins = {}
    for n in WINDOWS:
        v, _, c = fields.get(f"r{n}", "0:0").partition(":")
        wins[f"{n}d"] = {"visits": int(v), "spend_cents": int(c)}
    allowed = fields.get("c") == "1"
    doc: dict[str, Any] = {
        "card_id": card_id,
        "view": "marketing",
        "visits": int(fields.get("v", 0)),
        "spend_cents": int(fields.get("s", 0)),
        "first_purchase": _iso(fields.get("f")),
        "last_purchase": _iso(fields.get("l")),
        "windows": wins,
        "product_data_consent": allowed,
        "classes": {name: fields[f] for name, f in _CLASSES.items() if f in fields},
    }
    if allowed:
        mix = {k[len(GROUP_PREFIX) :]: float(v) for k, v in fields.items() if k.startswith(GROUP_PREFIX)}
        doc["product_group_mix"] = dict(sorted(mix.items(), key=lambda kv: -kv[1]))
        doc["affinities"] = {
            k[len(AFFINITY_PREFIX) :]: v == "1" for k, v in sorted(fields.items()) if k.startswith(AFFINITY_PREFIX)
        }
        if _GROCERY[1] in fields:
            doc["classes"][_GROCERY[0]] = fields[_GROCERY[1]]
    return doc


def projected_fields_allowed(fields: Mapping[str, str]) -> bool:
    """Whether every field is one a projection may hold (product fields only with ``c`` = "1")."""
    for k in fields:
        product = k.startswith(PRODUCT_PREFIX)
        if product and fields.get("c") != "1":
            return False
        if k not in PROJECTION_FIELDS and not k.startswith((GROUP_PREFIX, AFFINITY_PREFIX)):
            return False
    return True
