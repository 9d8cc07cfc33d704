"""What real grocery receipts carry besides plain sales, at realistic rates, for the simulator.

A Finnish grocery basket often has bottle deposits (pantti) on its drinks and the reverse vending
machine's slip paid back; lines carry campaign discounts and loyalty benefits; cashiers void lines
(as a ± pair, or by writing quantity 0 on some registers); goods come back; a few receipts carry a
receipt-level benefit or are paid with a gift card and a card. :func:`dress` adds these to a basket
(checkout v2 line kinds, docs/design.md "Receipts v2"); refunds of earlier receipts are made by the
simulator from receipts it remembers (:func:`refund_lines`). Pure apart from the ``random.Random``
passed in, so the simulator stays deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..models import CheckoutLine, LineKind, PaymentMethod
from ..receipt_parts import Adjustment, AdjustmentKind, Payment

# Share of grocery baskets (or of their lines) with each shape: what store data shows in order of size.
DEPOSIT_ON_DRINKS = 0.95  # drinks in returnable bottles and cans
DEPOSIT_SLIP = 0.30  # baskets paying back a reverse vending machine slip
LINE_DISCOUNT = 0.15
BENEFIT = 0.08  # loyalty benefit on a line (card holders only)
VOID_PAIR = 0.03
VOID_IN_PLACE = 0.01
RETURN = 0.01
RECEIPT_BENEFIT = 0.03  # receipt-level (card holders only)
SPLIT_TENDER = 0.03
REFUND = 0.01  # share of checkouts that refund an earlier receipt
DEPOSITS_CENTS = (10, 20, 40)  # cans, small and large bottles


@dataclass(frozen=True, slots=True)
class Dressed:
    lines: tuple[CheckoutLine, ...]
    adjustments: tuple[Adjustment, ...] = ()

    @property
    def total_cents(self) -> int:
        return sum(x.amount_cents for x in self.lines) + sum(a.amount_cents for a in self.adjustments)


def dress(rng: random.Random, basket: tuple[CheckoutLine, ...], carded: bool) -> Dressed:
    """A grocery basket as a register prints it: deposits, slip, discounts, benefits, voids, returns."""
    out: list[CheckoutLine] = []
    for line in basket:
        if rng.random() < VOID_IN_PLACE:
            out.append(replace(line, quantity=0.0, amount_cents=0))  # keyed in, then zeroed
            continue
        out.append(line)
        if line.product_group == "drinks" and line.quantity >= 1 and rng.random() < DEPOSIT_ON_DRINKS:
            n = int(line.quantity)
            each = rng.choice(DEPOSITS_CENTS)
            out.append(CheckoutLine(0, "PANTTI", "deposit", float(n), each, n * each, LineKind.DEPOSIT, ref_line_no=0))
        if rng.random() < VOID_PAIR:
            out.append(_minus(line, LineKind.VOID, line.amount_cents, line.sku))
            continue
        if line.amount_cents >= 100 and rng.random() < LINE_DISCOUNT:
            off = max(1, line.amount_cents * rng.choice((10, 20, 30)) // 100)
            out.append(_minus(line, LineKind.DISCOUNT, off, "CAMPAIGN"))
        elif carded and line.amount_cents >= 100 and rng.random() < BENEFIT:
            out.append(_minus(line, LineKind.BENEFIT, max(1, line.amount_cents // 20), "BENEFIT"))
    if basket and rng.random() < RETURN:
        back = rng.choice(basket)
        if back.quantity >= 1:
            out.append(replace(back, quantity=-1.0, amount_cents=-back.unit_price_cents, kind=LineKind.RETURN))
    if rng.random() < DEPOSIT_SLIP:
        slip = rng.randint(1, 60) * 10
        out.append(CheckoutLine(0, "PANTTI-SLIP", "deposit", -1.0, slip, -slip, LineKind.DEPOSIT_REFUND))
    lines = _numbered(out)
    goods = sum(x.amount_cents for x in lines)
    adjustments: tuple[Adjustment, ...] = ()
    if carded and goods >= 1000 and rng.random() < RECEIPT_BENEFIT:
        adjustments = (Adjustment(AdjustmentKind.BENEFIT, "BONUS", -rng.randint(1, 5) * 100),)
    return Dressed(lines, adjustments)


def payments(rng: random.Random, total_cents: int, method: PaymentMethod) -> tuple[Payment, ...]:
    """Split tender now and then (a gift card, the rest by card); otherwise none: the whole total in ``method``."""
    if total_cents >= 500 and rng.random() < SPLIT_TENDER:
        gift = rng.randint(1, total_cents // 100) * 100 if total_cents >= 200 else total_cents
        gift = min(gift, total_cents)
        return (Payment(PaymentMethod.GIFT_CARD, gift), Payment(PaymentMethod.CARD, total_cents - gift))
    return ()


def refund_lines(rng: random.Random, sold: tuple[CheckoutLine, ...]) -> tuple[CheckoutLine, ...]:
    """RETURN lines for one or two goods lines of an earlier receipt (empty when it had none to return)."""
    goods = [x for x in sold if x.kind is LineKind.SALE and x.quantity > 0 and x.amount_cents > 0]
    if not goods:
        return ()
    back = rng.sample(goods, min(len(goods), rng.choice((1, 1, 2))))
    return tuple(x.returned(i + 1) for i, x in enumerate(back))


def _minus(line: CheckoutLine, kind: LineKind, cents: int, sku: str) -> CheckoutLine:
    # ref_line_no is fixed up by _numbered: it points at the line just before it.
    quantity = -line.quantity if kind is LineKind.VOID else 1.0
    price = line.unit_price_cents if kind is LineKind.VOID else 0
    return CheckoutLine(0, sku, line.product_group, quantity, price, -cents, kind, line.unit, ref_line_no=0)


def _numbered(lines: list[CheckoutLine]) -> tuple[CheckoutLine, ...]:
    """Lines numbered 1.. in order; a line with ``ref_line_no`` 0 refers to the goods line before it."""
    out: list[CheckoutLine] = []
    last_goods = 0
    for i, line in enumerate(lines, start=1):
        ref = line.ref_line_no
        if ref == 0:
            ref = last_goods or None
        out.append(replace(line, line_no=i, ref_line_no=ref))
        if line.kind is LineKind.SALE:
            last_goods = i
    return tuple(out)
