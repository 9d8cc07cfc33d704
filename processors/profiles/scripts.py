"""The profile store's Lua scripts: loaded from the package's ``lua/`` files, with named positions.

``profile_apply.lua`` applies one purchase, ``profile_consent.lua`` records one consent change; both
check the card's erased marker first. Every key a script names is one card's (:func:`.profile_keys.card_keys`),
so a script touches one Redis Cluster slot. Each file names its KEYS and ARGV positions in its first lines, with
the same names as the enums here (a unit test holds the two to each other), and the argument lists
below are built in that order. The store (:mod:`.profile_store`) and the profile rebuild run these
very scripts through :meth:`~.profile_store.RedisProfileStore.apply_events`.
"""

from __future__ import annotations

from enum import IntEnum
from importlib import resources
from typing import Any

from receiptflow.consent_codec import WrittenConsent

from .keys import _NUTRIENT_FIELD, WEEK_DAYS, week_field
from .rules import Delta, Rules


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text(encoding="utf-8")


APPLY_LUA = _script("profile_apply.lua")
CONSENT_LUA = _script("profile_consent.lua")


class ApplyKey(IntEnum):
    """KEYS positions of ``profile_apply.lua`` (1-based, as Lua counts)."""

    PROFILE = 1
    SEEN = 2
    ERASED = 3  # the card's erased marker, rf:{subject}:x


class ApplyArg(IntEnum):
    """ARGV positions of ``profile_apply.lua`` (1-based); pairs run from ``PAIRS_FROM`` to the end."""

    RECEIPT_KEY = 1
    EVENT_MS = 2
    WEEK_FIELD = 3
    DAY = 4
    WEEK_SLOT = 5
    CENTS = 6
    POINTS = 7
    DEDUP_MS = 8
    KEEP_DAYS = 9
    CONSENTED = 10
    VISITS = 11
    ADD_PAIRS = 12
    PAIRS_FROM = 13


class ConsentKey(IntEnum):
    """KEYS positions of ``profile_consent.lua``."""

    PROFILE = 1
    ERASED = 2  # the card's erased marker


class ConsentArg(IntEnum):
    """ARGV positions of ``profile_consent.lua``."""

    EVENT_MS = 1
    PRODUCT_DATA = 2
    WRITTEN_MS = 3
    OFFSET = 4


def delta_args(d: Delta, rules: Rules) -> list[Any]:
    """The ARGV of ``profile_apply.lua`` for one delta, in :class:`ApplyArg` order."""
    adds: list[Any] = []
    for g, cents in d.groups.items():
        adds += ["Pg:" + g, cents]
    for n, value in d.nutrition.items():
        adds += [_NUTRIENT_FIELD[n], value]
    for g, mg in d.salt_by_group.items():
        adds += ["Ps:" + g, mg]
    for g, mg in d.sugar_by_group.items():
        adds += ["Pu:" + g, mg]
    args: list[Any] = [
        d.receipt_key,
        d.event_ms,
        week_field(d.day),
        d.day,
        d.day % WEEK_DAYS,
        d.cents,
        d.points,
        rules.dedup_ms,
        rules.keep_days,
        1 if d.consented else 0,
        d.visits,
        len(adds) // 2,
        *adds,
    ]
    for kind, ms in d.affinity.items():
        args += ["Pa:" + kind, ms]
    return args


def consent_args(written: WrittenConsent) -> list[Any]:
    """The ARGV of ``profile_consent.lua`` for one consent change, in :class:`ConsentArg` order."""
    change = written.change
    ms = int(change.event_time.timestamp() * 1000)
    return [ms, "1" if change.product_data_marketing else "0", written.written_ms, written.offset]
