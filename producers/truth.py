"""The ground truth of simulated traffic: what the simulator sent, for exact end-to-end checks.

Totals and per-chain figures are what the warehouse sums (every receipt, refunds negative); per card,
what the card's profile holds: visits are sales (a refund is none) and spend is goods net of refunds
and returns, without bottle deposits (docs/design.md, "Receipts v2").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..models import Checkout, ReceiptKind
from ..policy import deposit_cents


@dataclass
class GroundTruth:
    """What the simulator sent, for exact end-to-end checks."""

    receipts: int = 0
    anonymous: int = 0
    spend_cents: int = 0
    per_card: dict[str, list[int]] = field(default_factory=dict)  # card -> [visits, spend cents] as in its profile
    refunds: int = 0  # receipts refunding an earlier one
    per_chain: dict[str, list[int]] = field(default_factory=dict)  # chain -> [receipts, spend cents]
    duplicates: list[str] = field(default_factory=list)  # receipt ids delivered a second time
    bad: list[dict[str, str]] = field(default_factory=list)  # {"label", "reason"} of each injected bad event
    consents: list[dict[str, object]] = field(default_factory=list)  # every consent change sent
    out_of_order: int = 0  # checkouts sent after later ones
    # Analytics window ("chain/local date") -> [baskets, total cents] of the checkouts with lines:
    # what the aggregator counts (one basket per receipt with lines, in its chain's local day).
    windows: dict[str, list[int]] = field(default_factory=dict)

    def add(self, c: Checkout) -> None:
        """Count a receipt: totals as the warehouse sums them; per card what its profile holds
        (visits are sales, spend is goods net of refunds without deposits)."""
        self.receipts += 1
        self.spend_cents += c.total_cents
        if c.lines:
            window = self.windows.setdefault(f"{c.chain}/{c.event_time.date().isoformat()}", [0, 0])
            window[0] += 1
            window[1] += c.total_cents
        chain = self.per_chain.setdefault(c.chain, [0, 0])
        chain[0] += 1
        chain[1] += c.total_cents
        if c.receipt_kind is ReceiptKind.REFUND:
            self.refunds += 1
        if c.card_id is None:
            self.anonymous += 1
        else:
            card = self.per_card.setdefault(c.card_id, [0, 0])
            card[0] += c.receipt_kind is ReceiptKind.SALE
            card[1] += c.total_cents - deposit_cents(c.lines)

    def to_json(self) -> dict[str, object]:
        return {
            "receipts": self.receipts,
            "anonymous": self.anonymous,
            "refunds": self.refunds,
            "spend_cents": self.spend_cents,
            "per_card": {k: {"visits": v[0], "spend_cents": v[1]} for k, v in sorted(self.per_card.items())},
            "per_chain": {k: {"receipts": v[0], "spend_cents": v[1]} for k, v in sorted(self.per_chain.items())},
            "duplicates": self.duplicates,
            "bad": self.bad,
            "consents": self.consents,
            "out_of_order": self.out_of_order,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
