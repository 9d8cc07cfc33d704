"""When the router writes a retraction: a consent change that narrows marketing use (pure).

The route step calls :func:`withdrawal` for every consent change it applies; a retraction it
returns goes to ``purchases.retractions`` in the same transaction (the record and the contract:
:mod:`receiptflow.retractions`, docs/design.md).
"""

from __future__ import annotations

from datetime import datetime

from receiptflow.models import ConsentChange, ConsentState
from receiptflow.retractions import Reason, Retraction, narrowing

from .consent import ConsentHistory, most_restrictive


def withdrawal(
    history: ConsentHistory | None,
    updated: ConsentHistory,
    change: ConsentChange,
    default: ConsentState,
    now: datetime,
    issuer: str,
) -> Retraction | None:
    """The retraction of applying ``change`` to a card's ``history`` (giving ``updated``); None: none.

    Before: the card's newest state (``default`` without one). After: the newest state once the
    change is applied, and the change's own state as well -- the stricter reading: a withdrawal that
    arrives after a later grant still withdraws what marketing may have had in between. The same
    change applied again (``updated == history``) retracts nothing new.
    """
    if updated == history:
        return None
    before = (history.latest() if history is not None else None) or default
    own = ConsentState(change.product_data_marketing, change.electronic_marketing, known=True)
    after = most_restrictive(updated.latest() or default, own)
    scope = narrowing(before, after)
    if scope is None:
        return None
    return Retraction(change.card_id, Reason.WITHDRAWAL, scope, change.event_time, now, issuer)
