"""Monthly customer segments (``receiptflow segments run --month YYYY-MM``).

Every card active in the month (at least one sale) gets a *visits class* (sales in the month) and a
*money class* (cents in the month, net of refunds and returns, without bottle deposits) from fixed,
versioned bounds, and — only when its product data may be used for marketing — one of ten *grocery
segments*: the named archetype whose prototype mix is nearest to the card's grocery mix in the
month. The model (groups, class bounds, archetype prototypes, version) is the shipped
``data/segments.toml`` or ``RECEIPTFLOW_SEGMENTS_FILE``.

Why named archetypes and not k-means on the mix: an archetype means the same thing every month and
in every run (``meat_and_grill`` is defined by its prototype, not by where a clustering happened to
put a centroid this time), marketing can read the definition, the assignment of one card does not
depend on the other cards (so a run is reproducible and a card's segment changes only when its own
basket does), and it needs no numerical library. k-means would have to be seeded, relabelled and
re-validated every month, and on baskets without a strong cluster structure it splits the cloud
differently from run to run (see the README for the measurement).

:func:`assign` is the pure core (month aggregates → assignments); :func:`run_segments` is the shell:
it reads the month's aggregates from the warehouse (the reproducible source: the same rows give the
same segments, whatever Redis holds) and stores the result in the profiles in pipelined batches.

Product data follows the live profile's rule: the grocery mix counts only receipts routed under
product-data consent and made after the card's newest withdrawal, and only cards whose newest
consent change allows product data (or, without any, when the configured default does) get a
grocery segment. The Redis script also refuses to store one while the profile's recorded consent
says no, and a withdrawal deletes it with the other product-derived fields.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError
from ..metrics import Metrics
from ..processors.profiles.keys import SEGMENT_FIELDS
from ..processors.profiles.store import RedisProfileStore
from ..sinks.queries import Warehouse


@dataclass(frozen=True, slots=True)
class Archetype:
    name: str
    about: str
    prototype: tuple[float, ...]  # shares over SegmentModel.groups, adding up to 1


@dataclass(frozen=True, slots=True)
class SegmentModel:
    version: str
    groups: tuple[str, ...]
    visits_classes: tuple[tuple[int, str], ...]  # (lower bound, name), ascending
    money_classes: tuple[tuple[int, str], ...]  # (lower bound in cents, name), ascending
    archetypes: tuple[Archetype, ...]


@dataclass(frozen=True, slots=True)
class CardMonth:
    """One card's month: receipts, cents and, when its product data may be used, its grocery mix."""

    card_id: str
    visits: int
    spend_cents: int
    groups: Mapping[str, int] | None = None  # product group -> cents; None: no product-data consent


@dataclass(frozen=True, slots=True)
class Assignment:
    card_id: str
    visits_class: str
    money_class: str
    grocery_segment: str | None  # None: no product-data consent, or no grocery spend in the month

    def fields(self, model: SegmentModel, month: str) -> dict[str, str]:
        """The values the profile stores (names of ``profiles.SEGMENT_FIELDS``)."""
        out = {"model": model.version, "month": month, "visits_class": self.visits_class}
        out["money_class"] = self.money_class
        if self.grocery_segment is not None:
            out["grocery_segment"] = self.grocery_segment
        return out


# --- the pure core ---------------------------------------------------------------------------------
def class_of(value: int, bounds: Sequence[tuple[int, str]]) -> str:
    """The last class whose lower bound ``value`` reaches (the first class below every bound)."""
    name = bounds[0][1]
    for lower, n in bounds:
        if value >= lower:
            name = n
    return name


def nearest_archetype(groups: Mapping[str, int], model: SegmentModel) -> str | None:
    """The archetype nearest to the grocery mix ``groups`` (None without grocery spend)."""
    amounts = [max(0, groups.get(g, 0)) for g in model.groups]
    total = sum(amounts)
    if total <= 0:
        return None
    shares = [a / total for a in amounts]
    best: tuple[float, int] | None = None
    for i, a in enumerate(model.archetypes):
        d = sum((s - p) ** 2 for s, p in zip(shares, a.prototype, strict=True))
        if best is None or d < best[0]:
            best = (d, i)
    assert best is not None
    return model.archetypes[best[1]].name


def assign_one(card: CardMonth, model: SegmentModel) -> Assignment:
    return Assignment(
        card.card_id,
        class_of(card.visits, model.visits_classes),
        class_of(card.spend_cents, model.money_classes),
        None if card.groups is None else nearest_archetype(card.groups, model),
    )


def assign(months: Iterable[CardMonth], model: SegmentModel) -> dict[str, Assignment]:
    """Assignments of every active card (pure; a card's assignment depends only on its own month)."""
    out: dict[str, Assignment] = {}
    for m in months:
        if m.visits < 1:
            continue
        if m.card_id in out:
            raise ValueError(f"card {m.card_id} appears twice in one month's aggregates")
        out[m.card_id] = assign_one(m, model)
    return dict(sorted(out.items()))


# --- the model file --------------------------------------------------------------------------------
def _bounds(doc: dict[str, Any], key: str, bound: str) -> tuple[tuple[int, str], ...]:
    rows = doc.get(key)
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"segments file: {key} must be a non-empty list of {{{bound}, name}}")
    out = []
    for r in rows:
        if not isinstance(r, dict) or not isinstance(r.get(bound), int) or not isinstance(r.get("name"), str):
            raise ConfigError(f"segments file: every {key} entry needs an integer {bound} and a name")
        out.append((int(r[bound]), str(r["name"])))
    if [b for b, _ in out] != sorted({b for b, _ in out}):
        raise ConfigError(f"segments file: {key} bounds must be strictly ascending")
    return tuple(out)


def parse_model(text: str) -> SegmentModel:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"segments file: {exc}") from exc
    version, groups = doc.get("version"), doc.get("groups")
    if not isinstance(version, str) or not version:
        raise ConfigError("segments file: version must be a non-empty string")
    if not isinstance(groups, list) or not groups or len(set(groups)) != len(groups):
        raise ConfigError("segments file: groups must be a list of distinct product groups")
    archetypes = []
    for a in doc.get("archetype", []):
        name, shares = a.get("name"), a.get("shares")
        if not isinstance(name, str) or not isinstance(shares, dict) or not shares:
            raise ConfigError("segments file: every [[archetype]] needs a name and shares")
        unknown = set(shares) - set(groups)
        if unknown:
            raise ConfigError(f"segments file: archetype {name} has shares of unknown groups {sorted(unknown)}")
        if any(not isinstance(v, int | float) or isinstance(v, bool) or v < 0 for v in shares.values()):
            raise ConfigError(f"segments file: archetype {name} has a share that is not a non-negative number")
        total = float(sum(shares.values()))
        if total <= 0:
            raise ConfigError(f"segments file: archetype {name} has no positive share")
        prototype = tuple(float(shares.get(g, 0)) / total for g in groups)
        archetypes.append(Archetype(name, str(a.get("about", "")), prototype))
    names = [a.name for a in archetypes]
    if len(names) != 10 or len(set(names)) != 10:
        raise ConfigError(f"segments file: ten archetypes with distinct names are needed, found {names}")
    if len({a.prototype for a in archetypes}) != len(archetypes):
        raise ConfigError("segments file: two archetypes have the same prototype")
    return SegmentModel(
        version,
        tuple(str(g) for g in groups),
        _bounds(doc, "visits_classes", "from"),
        _bounds(doc, "money_classes", "from_cents"),
        tuple(archetypes),
    )


def load_model(path: Path | None = None) -> SegmentModel:
    """The segment model from ``path`` or the shipped ``data/segments.toml``."""
    try:
        if path is None:
            text = resources.files("receiptflow").joinpath("data/segments.toml").read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read segments file {path or 'data/segments.toml'}: {exc}") from exc
    return parse_model(text)


# --- the shell: warehouse in, Redis out -------------------------------------------------------------
def month_bounds(month: str) -> tuple[date, date]:
    """``YYYY-MM`` → (its first day, the next month's first day)."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        first = date(year, mon, 1)
    except ValueError as exc:
        raise ConfigError(f"month must be YYYY-MM, got {month!r}") from exc
    if len(month) != 7:
        raise ConfigError(f"month must be YYYY-MM, got {month!r}")
    return first, date(year + mon // 12, mon % 12 + 1, 1)


def read_month(db: Warehouse, month: str, default_product_data: bool = False) -> list[CardMonth]:
    """Each active card's month from the warehouse (local dates of the receipts), sorted by card."""
    p = db.p
    first, nxt = month_bounds(month)
    totals = db.query(
        # Net figures (receipts v2): visits are sales (a refund is none), money is net of refunds and
        # returns and leaves deposits out, as a profile's spend does.
        "SELECT card_id, count(*) FILTER (WHERE receipt_kind = 'SALE'), sum(total_cents - deposit_cents) "
        "FROM receipts WHERE card_id IS NOT NULL "
        f"AND event_local_date >= {p} AND event_local_date < {p} GROUP BY card_id",
        (first, nxt),
    )
    consent = "SELECT card_id, max(CASE WHEN product_data_marketing THEN changed_at END) AS last_grant, "
    consent += "max(CASE WHEN NOT product_data_marketing THEN changed_at END) AS last_withdrawal "
    consent += "FROM consent_changes GROUP BY card_id"
    allowed: dict[str, bool] = {}
    for card, last_grant, last_withdrawal in db.query(consent):
        # The newest change decides; at the same time the stricter one (as the profile records it).
        allowed[str(card)] = last_withdrawal is None or (last_grant is not None and last_grant > last_withdrawal)
    mix: dict[str, dict[str, int]] = {}
    for card, group, cents in db.query(
        f"WITH c AS ({consent}) SELECT r.card_id, g.product_group, sum(g.amount_cents) FROM receipts AS r "
        "JOIN receipt_groups AS g ON g.receipt_id = r.receipt_id LEFT JOIN c ON c.card_id = r.card_id "
        f"WHERE r.card_id IS NOT NULL AND r.event_local_date >= {p} AND r.event_local_date < {p} "
        "AND r.consent_product_data_marketing AND (c.last_withdrawal IS NULL OR r.event_time > c.last_withdrawal) "
        "GROUP BY r.card_id, g.product_group",
        (first, nxt),
    ):
        # Net of returns; a group returned on balance this month weighs 0 in nearest_archetype.
        mix.setdefault(str(card), {})[str(group)] = int(cents)
    out = []
    for card, visits, spend in totals:
        c = str(card)
        product = allowed.get(c, default_product_data)
        groups = MappingProxyType(mix.get(c, {})) if product else None
        out.append(CardMonth(c, int(visits), int(spend), groups))
    return sorted(out, key=lambda m: m.card_id)


# KEYS: profile hash, the card's erased marker (one card's keys: one cluster slot). ARGV: 1 the
# product-derived field, 2 its value ('' for none), then (field, value) pairs. A card without a
# profile is left alone (0), an erased one too (3); the product-derived field is written only while
# the recorded consent (field ``c``) allows it (1) and deleted otherwise (2), so a segment never
# outlives a withdrawal.
_SEGMENTS_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'c') ~= '0' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 2
"""
_OUTCOMES = ("no_profile", "stored", "stored_without_segment", "erased")


def store_segments(store: RedisProfileStore, rows: Sequence[tuple[str, Mapping[str, str]]]) -> dict[str, int]:
    """Store (card, {name: value}) rows (names of ``profiles.SEGMENT_FIELDS``) in one pipelined round trip;
    a row without ``grocery_segment`` deletes a stored one. Returns how many cards were ``stored`` (with
    a grocery segment), ``stored_without_segment``, and skipped for ``no_profile`` or as ``erased``."""
    counts = dict.fromkeys(_OUTCOMES, 0)
    if not rows:
        return counts
    product = SEGMENT_FIELDS["grocery_segment"]
    calls: list[tuple[tuple[str, str], list[Any]]] = []
    for card, values in rows:
        args: list[Any] = [product, values.get("grocery_segment", "")]
        for name, value in sorted(values.items()):
            if name != "grocery_segment":
                args += [SEGMENT_FIELDS[name], value]
        keys = store.keys_for(card)
        calls.append(((keys.profile, keys.erased), args))
    results = [int(x) for x in store.run_script(_SEGMENTS_LUA, calls, "segment batch")]
    if store.projections is not None:  # the classes are part of the marketing view
        store.projections.refresh([card for card, _ in rows], "segment batch")
    for code, name in enumerate(_OUTCOMES):
        counts[name] = results.count(code)
    return counts


@dataclass
class SegmentRun:
    month: str
    model: str
    cards: int = 0
    stored: int = 0  # with a grocery segment
    stored_without_segment: int = 0
    no_profile: int = 0
    erased: int = 0
    per_segment: dict[str, int] = field(default_factory=dict)  # assigned (before the Redis checks)
    per_visits_class: dict[str, int] = field(default_factory=dict)  # assigned, for the report
    per_money_class: dict[str, int] = field(default_factory=dict)


def run_segments(
    db: Warehouse,
    store: RedisProfileStore,
    month: str,
    model: SegmentModel,
    *,
    default_product_data: bool = False,
    batch: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    metrics: Metrics | None = None,
) -> SegmentRun:
    """Assign ``month``'s active cards and store the result in their profiles, ``batch`` cards a round trip."""
    assignments = list(assign(read_month(db, month, default_product_data), model).values())
    run = SegmentRun(month, model.version, cards=len(assignments))
    for a in assignments:
        key = a.grocery_segment or "-"
        run.per_segment[key] = run.per_segment.get(key, 0) + 1
        run.per_visits_class[a.visits_class] = run.per_visits_class.get(a.visits_class, 0) + 1
        run.per_money_class[a.money_class] = run.per_money_class.get(a.money_class, 0) + 1
    if progress is not None:
        progress(0, len(assignments))
    for i in range(0, len(assignments), batch):
        chunk = assignments[i : i + batch]
        counts = store_segments(store, [(a.card_id, a.fields(model, month)) for a in chunk])
        run.stored += counts["stored"]
        run.stored_without_segment += counts["stored_without_segment"]
        run.no_profile += counts["no_profile"]
        run.erased += counts["erased"]
        if progress is not None:
            progress(i + len(chunk), len(assignments))
    if metrics is not None:
        for name, n in run.per_segment.items():
            metrics.segments_assigned_total.labels(name).inc(n)
    return run
