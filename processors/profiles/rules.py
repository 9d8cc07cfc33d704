"""What one purchase adds to a customer profile: the pure derivation shared by the fold and Redis.

:func:`delta` turns a :class:`~receiptflow.models.Purchase` into a :class:`Delta` of whole-number
increments (visits, spend, the day bucket, points, product-group amounts, affinities, nutrition,
kg CO2e, domestic share). The pure fold (``profiles.update``) and the Redis script
(``profile_store.RedisProfileStore``) both apply exactly these numbers, so they cannot drift apart:
every rounding happens here, once, per receipt line.

Where the facts come from:

* product groups: the purchase's ``groups`` (item and product-group granularity), otherwise its items;
* nutrition, CO2e and origin: only item lines (``ITEM`` granularity) of SKUs in the shipped
  catalogue; nutrition only for food with a known net weight (``data/net_weights.csv``);
* points: ``data/points.toml`` (or ``RECEIPTFLOW_POINTS_FILE``), points per euro per chain,
  partners included;
* checkout v2: spend and points count goods net of returns, refunds, discounts and benefits, never
  bottle deposits (``total_cents - deposit_cents``); a refund or cancelled receipt is no visit; product
  facts are net of returned and voided lines (docs/design.md, "Receipts v2").

No I/O beyond loading the shipped data once, no clock.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_FLOOR, Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from receiptflow.catalogue import load_catalogue
from receiptflow.errors import ConfigError
from receiptflow.models import Purchase, ReceiptKind
from receiptflow.receipt_parts import DEPOSIT_KINDS, GOODS_KINDS

# Product groups whose purchase marks an affinity (ads for pet food or diapers only reach buyers).
AFFINITY_GROUPS: Mapping[str, str] = MappingProxyType(
    {"pet_food": "pet", "baby_products": "baby", "alcohol": "alcohol"}
)

# The nutrition/climate counters a profile keeps, all integers so increments add exactly.
NUTRIENTS = (
    "item_cents",  # money of item lines with catalogue data: the base of CO2e per euro and domestic share
    "co2e_g",  # grams CO2e of those lines
    "domestic_cents",  # money of domestic products among them
    "food_g",  # grams of food with a known net weight: the base of the nutrition shares
    "salt_mg",
    "sugar_mg",
    "energy_kcal",
    "vegfruit_g",  # grams of vegetables and fruit
)

# 1970-01-01 as a proleptic ordinal: epoch day = date.toordinal() - _EPOCH_ORDINAL.
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ProductFacts:
    product_group: str
    net_g: int | None  # grams per sold unit; None: not food (no nutrition)
    salt_g_per_100g: float
    sugar_g_per_100g: float
    energy_kcal_per_100g: float
    vegetable_or_fruit: bool
    kg_co2e_per_unit: float
    domestic: bool


@dataclass(frozen=True, slots=True)
class Rules:
    """The fixed inputs of the fold: product facts, points per chain and the time bounds."""

    products: Mapping[str, ProductFacts]
    points_per_euro: Mapping[str, Decimal]
    default_points_per_euro: Decimal = Decimal(0)
    # A receipt id is remembered this long (event time, behind the card's newest receipt); a
    # receipt older than that can no longer be checked for duplicates and is refused as too late.
    dedup_ms: int = 35 * 86_400_000
    keep_days: int = 365  # day buckets kept behind the card's newest day (the longest window)

    def points(self, chain: str, total_cents: int) -> int:
        """Points for ``total_cents``; a negative amount (a refund) takes back what the same positive one gave."""
        rate = self.points_per_euro.get(chain, self.default_points_per_euro)
        earned = int((Decimal(abs(total_cents)) * rate / 100).to_integral_value(rounding=ROUND_FLOOR))
        return earned if total_cents >= 0 else -earned


@dataclass(frozen=True, slots=True)
class Delta:
    """What one purchase adds. Product-derived parts apply only under product-data consent."""

    receipt_key: str  # short hash of the receipt id: what the dedup set holds
    event_ms: int
    day: int  # the receipt's local date as days since 1970-01-01
    cents: int
    points: int
    consented: bool  # the purchase was processed under product-data consent
    visits: int = 1  # 0 for a refund or a cancelled receipt: money moves (or not), nobody shopped
    groups: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    affinity: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # kind -> event ms
    nutrition: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    salt_by_group: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    sugar_by_group: Mapping[str, int] = field(default_factory=lambda: _EMPTY)


def receipt_key(receipt_id: str) -> str:
    """72 bits of BLAKE2b as 12 URL-safe characters: a per-card collision is out of reach (≈1e-18)."""
    return base64.urlsafe_b64encode(hashlib.blake2b(receipt_id.encode(), digest_size=9).digest()).decode()


def epoch_day(d: date) -> int:
    return d.toordinal() - _EPOCH_ORDINAL


def day_date(day: int) -> date:
    return date.fromordinal(day + _EPOCH_ORDINAL)


def event_ms(p: Purchase) -> int:
    return int(p.event_time.timestamp() * 1000)


def _nonzero(d: dict[str, int]) -> Mapping[str, int]:
    # Zero increments are left out so that the fold and Redis (which would create a "0" field) agree.
    return MappingProxyType({k: v for k, v in d.items() if v})


def delta(p: Purchase, rules: Rules) -> Delta:
    """The increments ``p`` brings to its card's profile (pure)."""
    ms = event_ms(p)
    goods = p.total_cents - p.deposit_cents  # spend and points: net of returns and refunds, without deposits
    groups: dict[str, int] = {}
    if p.groups:
        for g in p.groups:
            groups[g.product_group] = groups.get(g.product_group, 0) + g.amount_cents
    else:
        for line in p.items:
            if line.kind not in DEPOSIT_KINDS:
                groups[line.product_group] = groups.get(line.product_group, 0) + line.amount_cents
    # Returning the dog food does not make a dog owner: only a group bought on balance marks one.
    affinity = {AFFINITY_GROUPS[g]: ms for g, cents in groups.items() if g in AFFINITY_GROUPS and cents > 0}
    nutrition = dict.fromkeys(NUTRIENTS, 0)
    salt: dict[str, int] = {}
    sugar: dict[str, int] = {}
    for line in p.items:
        facts = rules.products.get(line.sku)
        # Goods only, signed: a return or void takes its grams and money back; a discount line's
        # quantity is not more of the product, a deposit is no product at all.
        if facts is None or line.kind not in GOODS_KINDS:
            continue
        nutrition["item_cents"] += line.amount_cents
        nutrition["co2e_g"] += round(line.quantity * facts.kg_co2e_per_unit * 1000)
        if facts.domestic:
            nutrition["domestic_cents"] += line.amount_cents
        if facts.net_g is None:
            continue
        grams = round(line.quantity * facts.net_g)
        salt_mg = round(grams * facts.salt_g_per_100g * 10)
        sugar_mg = round(grams * facts.sugar_g_per_100g * 10)
        nutrition["food_g"] += grams
        nutrition["salt_mg"] += salt_mg
        nutrition["sugar_mg"] += sugar_mg
        nutrition["energy_kcal"] += round(grams * facts.energy_kcal_per_100g / 100)
        if facts.vegetable_or_fruit:
            nutrition["vegfruit_g"] += grams
        salt[line.product_group] = salt.get(line.product_group, 0) + salt_mg
        sugar[line.product_group] = sugar.get(line.product_group, 0) + sugar_mg
    return Delta(
        receipt_key=receipt_key(p.receipt_id),
        event_ms=ms,
        day=epoch_day(p.event_time.date()),
        cents=goods,
        points=rules.points(p.chain, goods),
        consented=p.consent.product_data_marketing,
        visits=1 if p.receipt_kind is ReceiptKind.SALE else 0,
        groups=_nonzero(groups),
        affinity=MappingProxyType(affinity),
        nutrition=_nonzero(nutrition),
        salt_by_group=_nonzero(salt),
        sugar_by_group=_nonzero(sugar),
    )


# --- loading the shipped data -----------------------------------------------------------------
def _net_weights() -> dict[str, int]:
    text = resources.files("receiptflow").joinpath("data/net_weights.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO("".join(line for line in text.splitlines(True) if not line.startswith("#"))))
    return {row["sku"]: int(row["net_g_per_unit"]) for row in rows}


@cache
def product_facts() -> Mapping[str, ProductFacts]:
    weights = _net_weights()
    return MappingProxyType(
        {
            p.sku: ProductFacts(
                product_group=p.product_group,
                net_g=weights.get(p.sku),
                salt_g_per_100g=p.salt_g_per_100g,
                sugar_g_per_100g=p.sugar_g_per_100g,
                energy_kcal_per_100g=p.energy_kcal_per_100g,
                vegetable_or_fruit=p.vegetable_or_fruit,
                kg_co2e_per_unit=p.kg_co2e_per_unit,
                domestic=p.domestic,
            )
            for p in load_catalogue()
        }
    )


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"points file: {where} must be a number, got {value!r}")
    rate = Decimal(str(value))
    if rate < 0:
        raise ConfigError(f"points file: {where} must not be negative")
    return rate


def load_points(path: Path | None = None) -> tuple[Mapping[str, Decimal], Decimal]:
    """Points per euro per chain and the default, from ``path`` or the shipped ``data/points.toml``."""
    try:
        if path is None:
            text = resources.files("receiptflow").joinpath("data/points.toml").read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read points file {path or 'data/points.toml'}: {exc}") from exc
    rates = doc.get("rates", {})
    if not isinstance(rates, dict):
        raise ConfigError("points file: [rates] must be a table of chain = points per euro")
    parsed = {str(chain): _decimal(v, f"rates.{chain}") for chain, v in rates.items()}
    return MappingProxyType(parsed), _decimal(doc.get("default_rate", 0), "default_rate")


def load_rules(points_file: Path | None = None, dedup_days: int = 35) -> Rules:
    rates, default = load_points(points_file)
    return Rules(product_facts(), rates, default, dedup_ms=dedup_days * 86_400_000)


@cache
def default_rules() -> Rules:
    return load_rules()
