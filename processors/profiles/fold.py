"""Customer profiles: the pure fold ``update(profile, purchase) -> profile``.

The fold is the definition of what a profile is; the Redis store (:mod:`.profile_store`, with the
key layout in :mod:`.profile_keys` and the Lua scripts in :mod:`.profile_scripts`) applies exactly
the same increments (``profile_rules.delta``) in Redis, once per receipt id, whatever the delivery.

What a profile holds per card:

* lifetime visits, spend, first and last purchase; day buckets (the receipt's local date) of visits
  and spend for the last 365 days behind the card's newest day, so the 30/90/365-day windows are
  exact for any reading day and out-of-order receipts land in their own day;
* loyalty points (per chain rate, partners included);
* product-derived fields, built only from purchases processed under product-data consent and
  deleted when that consent is withdrawn: product-group amounts (the mix), affinities (newest
  purchase of pet food / baby products / alcohol), nutrition and climate counters from item lines;
* the newest consent state seen on the ``consents`` topic, and the bounded dedup set.

A refund is a receipt of its own: it nets the card's spend, points and product data when it arrives,
once, like any receipt (its own id is deduplicated), whether before or after the sale it refunds.

Order: receipts are folded in any order with the same result, except a receipt whose event time
is more than ``Rules.dedup_ms`` behind the card's newest receipt: its id can no longer be checked,
so it is refused (counted as late) rather than risk counting it twice.

"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from enum import IntEnum
from types import MappingProxyType

from receiptflow.consent_codec import WrittenConsent, as_written
from receiptflow.models import ConsentChange, Purchase

from .rules import Delta, Rules, default_rules, delta, epoch_day

_EMPTY: Mapping[str, int] = MappingProxyType({})
_NO_DAYS: Mapping[int, tuple[int, int]] = MappingProxyType({})
WINDOWS = (30, 90, 365)


@dataclass(frozen=True, slots=True)
class ConsentMark:
    """The newest consent change recorded for a card, with what purchases made before it are held to.

    Newest is newest *written* (``written_ms``, the broker's append time of its record): a change
    dated ahead never outranks one written after it. ``event_ms`` is the change's own time.
    ``withdrawn_ms`` is the event time of the newest withdrawal of product-data consent recorded,
    ``regranted_ms`` that of the first grant recorded after it (None when none). A purchase at ``t``
    may add product data only when no withdrawal at or after ``t`` is known and, after the newest
    one, a grant strictly before ``t`` is: a change counts at its own instant only when it is
    stricter, so a grant at exactly the purchase time does not grant for that purchase, and a
    withdrawal at that time does apply (see :meth:`Profile.product_allowed_at`).
    """

    product_data: bool
    event_ms: int
    withdrawn_ms: int | None = None
    regranted_ms: int | None = None
    written_ms: int | None = None  # None: recorded before the append time was (its event time then counts)
    written_offset: int = 0  # the record's offset (0: unknown)

    @property
    def position(self) -> tuple[int, int]:
        """What a newer change must not be behind: when this one was written (else its event time), and
        its offset (the broker stamps a producer batch with one append time)."""
        return (self.event_ms if self.written_ms is None else self.written_ms), self.written_offset


@dataclass(frozen=True, slots=True)
class Profile:
    card_id: str
    visits: int = 0
    spend_cents: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    days: Mapping[int, tuple[int, int]] = field(default_factory=lambda: _NO_DAYS)  # day -> (visits, cents)
    points: int = 0
    groups: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    affinity: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # pet/baby/alcohol -> newest ms
    nutrition: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # profile_rules.NUTRIENTS
    salt_by_group: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # mg
    sugar_by_group: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # mg
    consent: ConsentMark | None = None
    seen: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # receipt key -> event ms

    def has_product_data(self) -> bool:
        return bool(self.groups or self.affinity or self.nutrition or self.salt_by_group or self.sugar_by_group)

    def product_allowed(self) -> bool:
        """False once the newest consent seen withdrew product data."""
        return self.consent is None or self.consent.product_data

    def product_allowed_at(self, event_ms: int) -> bool:
        """Whether a purchase made at ``event_ms`` (routed under product-data consent) may add product data.

        Not when the newest consent seen withdrew it, nor when a withdrawal at or after the purchase
        instant is known (it deletes that data in any case), nor when the grant that followed the
        newest withdrawal is not strictly before the purchase: ties go to the stricter side, so the
        result is the same whichever of the purchase and the changes is processed first.
        """
        c = self.consent
        if c is None:
            return True
        if not c.product_data:
            return False
        if c.withdrawn_ms is None:
            return True
        return c.withdrawn_ms < event_ms and c.regranted_ms is not None and c.regranted_ms < event_ms


class Outcome(IntEnum):
    """What applying one purchase did (the Redis script returns the same codes)."""

    DUPLICATE = 0
    APPLIED = 1
    LATE = 2  # older than the dedup horizon behind the card's newest receipt: refused
    ERASED = 3  # the card was erased: nothing is stored about it again


def _added(a: Mapping[str, int], b: Mapping[str, int]) -> Mapping[str, int]:
    if not b:
        return a
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return MappingProxyType(out)


def apply_delta(profile: Profile, d: Delta, rules: Rules) -> tuple[Profile, Outcome]:
    """Fold one purchase's increments into a profile (pure); the outcome says whether it counted."""
    if profile.last_ms is not None and d.event_ms < profile.last_ms - rules.dedup_ms:
        return profile, Outcome.LATE
    if d.receipt_key in profile.seen:
        return profile, Outcome.DUPLICATE
    last = d.event_ms if profile.last_ms is None else max(profile.last_ms, d.event_ms)
    days = profile.days
    if d.day in days:
        v, c = days[d.day]
        days = MappingProxyType({**days, d.day: (v + d.visits, c + d.cents)})
    else:
        newest = max([d.day, *days])
        if d.day > newest - rules.keep_days:
            kept = {k: x for k, x in days.items() if k > newest - rules.keep_days}
            kept[d.day] = (d.visits, d.cents)
            days = MappingProxyType(kept)
    seen = {k: ms for k, ms in profile.seen.items() if ms >= last - rules.dedup_ms}
    seen[d.receipt_key] = d.event_ms
    out = replace(
        profile,
        visits=profile.visits + d.visits,
        spend_cents=profile.spend_cents + d.cents,
        first_ms=d.event_ms if profile.first_ms is None else min(profile.first_ms, d.event_ms),
        last_ms=last,
        days=days,
        points=profile.points + d.points,
        seen=MappingProxyType(seen),
    )
    if d.consented and profile.product_allowed_at(d.event_ms):
        affinity = dict(out.affinity)
        for kind, ms in d.affinity.items():
            affinity[kind] = max(ms, affinity.get(kind, ms))
        out = replace(
            out,
            groups=_added(out.groups, d.groups),
            affinity=MappingProxyType(affinity),
            nutrition=_added(out.nutrition, d.nutrition),
            salt_by_group=_added(out.salt_by_group, d.salt_by_group),
            sugar_by_group=_added(out.sugar_by_group, d.sugar_by_group),
        )
    return out, Outcome.APPLIED


def update(profile: Profile, purchase: Purchase, rules: Rules | None = None) -> Profile:
    """Fold one purchase into a profile; a receipt already folded in changes nothing."""
    if purchase.card_id != profile.card_id:
        raise ValueError(f"purchase of card {purchase.card_id!r} folded into profile {profile.card_id!r}")
    rules = rules or default_rules()
    return apply_delta(profile, delta(purchase, rules), rules)[0]


def without_product_data(profile: Profile) -> Profile:
    return replace(
        profile, groups=_EMPTY, affinity=_EMPTY, nutrition=_EMPTY, salt_by_group=_EMPTY, sugar_by_group=_EMPTY
    )


def apply_consent(profile: Profile, written: ConsentChange | WrittenConsent) -> Profile:
    """Record the newest consent; withdrawing product-data consent deletes every product-derived field.

    A change written before the one recorded changes nothing (the compacted topic is replayed on
    restarts), whatever its event time; of two written in one millisecond the later offset counts,
    and two at one position (no offsets known) count as the stricter one. The newest withdrawal and
    the first grant after it are kept with the mark (by their event times), for purchases made
    before the change. A bare :class:`ConsentChange` counts as written at its event time.
    """
    w = as_written(written)
    change, at = w.change, w.written_ms
    ms = int(change.event_time.timestamp() * 1000)
    old = profile.consent
    if old is not None and (old.position > w.position or (old.position == w.position and not old.product_data)):
        return profile
    if not change.product_data_marketing:
        mark = ConsentMark(False, ms, withdrawn_ms=ms, written_ms=at, written_offset=w.offset)
    else:
        withdrawn = None if old is None else old.withdrawn_ms
        regranted = None if old is None else old.regranted_ms
        if withdrawn is not None and regranted is None:
            regranted = ms  # the first grant after the newest withdrawal
        mark = ConsentMark(True, ms, withdrawn, regranted, at, w.offset)
    out = replace(profile, consent=mark)
    return out if change.product_data_marketing else without_product_data(out)


def fold(events: Iterable[Purchase | ConsentChange | WrittenConsent], rules: Rules | None = None) -> dict[str, Profile]:
    """All profiles from purchases (and consent changes), applied in the order given.

    Anonymous purchases are skipped.
    """
    rules = rules or default_rules()
    out: dict[str, Profile] = {}
    for e in events:
        if e.card_id is None:
            continue
        prof = out.get(e.card_id) or Profile(e.card_id)
        if isinstance(e, ConsentChange | WrittenConsent):
            out[e.card_id] = apply_consent(prof, e)
        else:
            out[e.card_id] = apply_delta(prof, delta(e, rules), rules)[0]
    return out


def windows(profile: Profile, today: date) -> dict[int, tuple[int, int]]:
    """(visits, cents) in the last 30, 90 and 365 days up to and including ``today``."""
    t = epoch_day(today)
    out = {}
    for n in WINDOWS:
        inside = [vc for d, vc in profile.days.items() if t - n < d <= t]
        out[n] = (sum(v for v, _ in inside), sum(c for _, c in inside))
    return out
