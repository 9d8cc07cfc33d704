"""Receipt-level discounts and benefits split over a receipt's goods lines, in whole cents (pure).

A receipt-level adjustment (a bonus on the whole basket, a 5 € benefit) is on no line, yet product
group totals (a purchase's ``groups``, a profile's product-group mix, the warehouse's group rows, the
analytics lines) should add up to what the goods finally cost. :func:`line_shares` gives each goods
line its share of the receipt's adjustments, pro rata to the line's net amount (its own amount plus
the discount, benefit and void lines that name it), by the largest remainder method:

* every line gets ``floor(|A| * w / W)`` cents, and the cents left over go one each to the lines with
  the largest remainders, ties to the lower line number, so the shares add up to ``A`` exactly and
  the same receipt always splits the same way, whatever the order of its lines;
* a line whose net amount is not positive (returned, voided, fully discounted) takes no share, and
  neither do deposits (money held for bottles, not goods) nor discount or benefit lines themselves;
* when no goods line has a positive net amount, nothing can carry the adjustment: every share is 0
  and the adjustment stays on the receipt only (``adjustment_cents``).

docs/design.md ("Receipts v2") states the rule with an example.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .receipt_parts import GOODS_KINDS, Adjustment, CheckoutLine, LineKind

# The lines that change the line they name (a RETURN's ref_line_no names a line of the sold receipt).
_REDUCING = frozenset({LineKind.DISCOUNT, LineKind.BENEFIT, LineKind.VOID})


def largest_remainder(amount: int, weights: Mapping[int, int]) -> dict[int, int]:
    """``amount`` split over the keys (line numbers) of ``weights`` pro rata to the weights, in whole units.

    Weights below 0 count as 0. The shares have the sign of ``amount`` and add up to it exactly,
    unless every weight is 0: then every share is 0. Ties of the remainders go to the smaller key.
    """
    w = {k: max(v, 0) for k, v in weights.items()}
    total = sum(w.values())
    if total == 0 or amount == 0:
        return dict.fromkeys(weights, 0)
    sign = -1 if amount < 0 else 1
    size = abs(amount)
    floors = {k: size * v // total for k, v in w.items()}
    left = size - sum(floors.values())
    # Remainders compared as size * v mod total (exact integers): largest first, then the smaller key.
    order = sorted(w, key=lambda k: (-(size * w[k] % total), k))
    for k in order[:left]:
        floors[k] += 1
    return {k: sign * v for k, v in floors.items()}


def net_amounts(lines: Iterable[CheckoutLine]) -> dict[int, int]:
    """Each goods line's net amount by line number: its amount plus the lines that name it.

    Discount, benefit and void lines that name another goods line of the receipt (``ref_line_no``)
    reduce it; deposit lines are no goods and are left out, as are the discount and benefit lines.
    """
    lines = tuple(lines)
    net = {x.line_no: x.amount_cents for x in lines if x.kind in GOODS_KINDS}
    for x in lines:
        ref = x.ref_line_no
        if ref is not None and ref != x.line_no and ref in net and x.kind in _REDUCING:
            net[ref] += x.amount_cents
    return net


def line_shares(lines: Iterable[CheckoutLine], adjustments: Iterable[Adjustment]) -> dict[int, int]:
    """The receipt-level adjustments' share of each goods line, by line number (0 for most lines).

    Only lines with a non-zero share are in the result.
    """
    amount = sum([a.amount_cents for a in adjustments])
    if amount == 0:
        return {}
    shares = largest_remainder(amount, net_amounts(lines))
    return {k: v for k, v in shares.items() if v}
