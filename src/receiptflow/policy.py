"""Granularity policy: which level of detail a chain may keep against a customer, by date (pure).

A :class:`Policy` is loaded once from TOML (the shipped default is ``receiptflow/data/policy.toml``)
and is then only read: :meth:`Policy.version_at` picks the version in force at a receipt's *local*
event date and :func:`truncate` cuts a checkout down to that level. No I/O, no clock: callers pass
the time in. Totals are preserved exactly at every level.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from .adjustment_split import line_shares
from .errors import ConfigError
from .models import Checkout, CheckoutLine, Granularity, GroupTotal
from .receipt_parts import DEPOSIT_KINDS, GOODS_KINDS, Adjustment

log = logging.getLogger(__name__)

_LEVELS = {"item": Granularity.ITEM, "product_group": Granularity.PRODUCT_GROUP, "receipt": Granularity.RECEIPT}
UNKNOWN_CHAIN_VERSION = "unknown-chain-default"


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    id: str
    valid_from: date
    level: Granularity


@dataclass(frozen=True, slots=True)
class ChainPolicy:
    chain: str
    group: str
    versions: tuple[PolicyVersion, ...]  # sorted by valid_from


@dataclass(frozen=True, slots=True)
class Decision:
    """The version in force for one receipt; ``known_chain`` is False for the default fallback."""

    version_id: str
    level: Granularity
    known_chain: bool


@dataclass(frozen=True, slots=True)
class Policy:
    chains: Mapping[str, ChainPolicy]
    default_level: Granularity = Granularity.RECEIPT

    def version_at(self, chain: str, event_time: datetime) -> Decision:
        """The version in force at the receipt's local date (the date printed on the receipt)."""
        cp = self.chains.get(chain)
        if cp is None:
            return Decision(UNKNOWN_CHAIN_VERSION, self.default_level, known_chain=False)
        day = event_time.date()
        chosen: PolicyVersion | None = None
        for v in cp.versions:
            if v.valid_from <= day:
                chosen = v
            else:
                break
        if chosen is None:
            # Before the first recorded version nothing was agreed: keep the least.
            return Decision(f"{chain.lower()}-before-first-version", Granularity.RECEIPT, known_chain=True)
        return Decision(chosen.id, chosen.level, known_chain=True)

    def describe_at(self, day: date) -> list[tuple[str, str, str, str]]:
        """(chain, group, level, version id) in force on ``day``, for ``receiptflow policy show``."""
        rows = []
        for name in sorted(self.chains):
            cp = self.chains[name]
            d = self.version_at(name, datetime(day.year, day.month, day.day, 12))
            rows.append((name, cp.group, d.level.value.lower(), d.version_id))
        return rows


def _level(value: Any, where: str) -> Granularity:
    try:
        return _LEVELS[str(value)]
    except KeyError as exc:
        raise ConfigError(f"{where}: unknown level {value!r} (item, product_group, receipt)") from exc


def parse_policy(doc: Mapping[str, Any], source: str = "policy") -> Policy:
    chains: dict[str, ChainPolicy] = {}
    seen_ids: set[str] = set()
    for name, body in dict(doc.get("chains", {})).items():
        versions = []
        for i, raw in enumerate(body.get("versions", [])):
            where = f"{source}: chains.{name}.versions[{i}]"
            try:
                vid, valid_from, level = raw["id"], raw["from"], raw["level"]
            except KeyError as exc:
                raise ConfigError(f"{where}: missing {exc}") from exc
            if not isinstance(valid_from, date) or isinstance(valid_from, datetime):
                raise ConfigError(f"{where}: 'from' must be a TOML date like 2010-05-01")
            if vid in seen_ids:
                raise ConfigError(f"{where}: version id {vid!r} is used twice")
            seen_ids.add(vid)
            versions.append(PolicyVersion(str(vid), valid_from, _level(level, where)))
        if not versions:
            raise ConfigError(f"{source}: chain {name} has no versions")
        versions.sort(key=lambda v: v.valid_from)
        dates = [v.valid_from for v in versions]
        if len(set(dates)) != len(dates):
            raise ConfigError(f"{source}: chain {name} has two versions from the same date")
        chains[name] = ChainPolicy(name, str(body.get("group", "")), tuple(versions))
    return Policy(chains, _level(doc.get("default_level", "receipt"), f"{source}: default_level"))


def load_policy(path: Path | None = None) -> Policy:
    """Load a policy file, or the shipped default when ``path`` is None."""
    try:
        if path is None:
            text = resources.files("receiptflow").joinpath("data/policy.toml").read_text(encoding="utf-8")
            source = "default policy"
        else:
            text = path.read_text(encoding="utf-8")
            source = str(path)
        return parse_policy(tomllib.loads(text), source)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot load policy {path or 'default'}: {exc}") from exc


def group_totals(lines: Iterable[CheckoutLine], adjustments: Iterable[Adjustment] = ()) -> tuple[GroupTotal, ...]:
    """Net totals by product group (quantity and amount), sorted by group name.

    Amounts are signed, so a group is net of returns, voids, line discounts and benefits. Quantities
    count goods only (a discount line's quantity is not more of the product). Deposit lines are money
    held for containers, not products: they are in no group (see :func:`deposit_cents`). Receipt-level
    ``adjustments`` come off the groups too, each goods line's share by
    :func:`~receiptflow.adjustment_split.line_shares`, so the groups add up to the goods net of every
    discount (unless no goods line has a positive net amount to carry them).
    """
    lines = tuple(lines)
    shares = line_shares(lines, adjustments) if adjustments else {}
    acc: dict[str, list[Any]] = {}
    for line in lines:
        kind = line.kind
        if kind in DEPOSIT_KINDS:
            continue
        qty = line.quantity if kind in GOODS_KINDS else 0.0
        amount = line.amount_cents + shares[line.line_no] if line.line_no in shares else line.amount_cents
        a = acc.get(line.product_group)
        if a is None:
            acc[line.product_group] = [qty, amount, 1]
        else:
            a[0] += qty
            a[1] += amount
            a[2] += 1
    return tuple([GroupTotal(g, float(q), amount, n) for g, (q, amount, n) in sorted(acc.items())])


def deposit_cents(lines: Iterable[CheckoutLine]) -> int:
    """Net bottle deposits of a receipt's lines: deposits charged less deposit refunds paid back."""
    return sum([line.amount_cents for line in lines if line.kind in DEPOSIT_KINDS])


def truncate(
    checkout: Checkout, level: Granularity, groups: tuple[GroupTotal, ...] | None = None
) -> tuple[Granularity, tuple[CheckoutLine, ...], tuple[GroupTotal, ...]]:
    """Cut a checkout down to ``level``: (granularity, items, groups). Totals are untouched.

    ``groups`` may pass ``group_totals(checkout.lines, checkout.adjustments)`` already computed (a
    receipt is truncated to up to three levels, one per output topic; the aggregation is the costly part).
    """
    if level is Granularity.RECEIPT:
        return Granularity.RECEIPT, (), ()
    if groups is None:
        groups = group_totals(checkout.lines, checkout.adjustments)
    if level is Granularity.ITEM:
        return level, checkout.lines, groups
    return level, (), groups
