"""Retractions: how the consumers of ``purchases.marketing`` learn that marketing use of a card must stop.

A retraction (Avro ``retraction`` v1 on ``purchases.retractions``, keyed by card id) is written

* by the router, in the transaction that applies a consent change which narrows marketing use
  (:func:`narrowing` decides which use), reason ``withdrawal``;
* by ``receiptflow erase`` for the erased card, reason ``erasure``, scope ``all``.

What a consumer must do on each is the contract in docs/design.md ("Retractions"). This module is
the record and the rule, without I/O; the writers produce it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .field_values import to_utc
from .models import ConsentState


class Reason(enum.StrEnum):
    WITHDRAWAL = "withdrawal"  # a consent change narrowed marketing use
    ERASURE = "erasure"  # the card was erased: permanent


class Scope(enum.StrEnum):
    PRODUCT_DATA = "product_data_marketing"  # product-level purchase data for marketing
    ELECTRONIC = "electronic_marketing"  # e-mail / SMS / app marketing
    ALL = "all"  # every marketing use of the card's data (erasure: every use at all)


@dataclass(frozen=True, slots=True)
class Retraction:
    card_id: str
    reason: Reason
    scope: Scope
    effective_at: datetime  # the withdrawal's event time, or when the card was (first) erased
    issued_at: datetime  # covers every marketing record of the card processed at or before it
    issuer: str  # the router's transactional id, or "erase"

    def to_avro(self) -> dict[str, Any]:
        return {
            "card_id": self.card_id,
            "reason": str(self.reason),
            "scope": str(self.scope),
            "effective_at": to_utc(self.effective_at),
            "issued_at": to_utc(self.issued_at),
            "issuer": self.issuer,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Retraction:
        return cls(
            str(d["card_id"]),
            Reason(d["reason"]),
            Scope(d["scope"]),
            _aware(d["effective_at"]),
            _aware(d["issued_at"]),
            str(d["issuer"]),
        )


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def narrowing(before: ConsentState, after: ConsentState) -> Scope | None:
    """What going from consent ``before`` to ``after`` withdraws from marketing use; None: nothing.

    ``all`` when marketing had some use before and has none after (the router then sends marketing
    nothing more of the card); otherwise the one permission withdrawn while the other stays.
    """
    product_data = before.product_data_marketing and not after.product_data_marketing
    electronic = before.electronic_marketing and not after.electronic_marketing
    if not (product_data or electronic):
        return None
    if not (after.product_data_marketing or after.electronic_marketing):
        return Scope.ALL
    return Scope.PRODUCT_DATA if product_data else Scope.ELECTRONIC


def erasure_retraction(card_id: str, erased_at: datetime, now: datetime) -> Retraction:
    """The retraction ``receiptflow erase`` publishes for an erased card."""
    return Retraction(card_id, Reason.ERASURE, Scope.ALL, erased_at, now, "erase")
