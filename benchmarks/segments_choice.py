"""Named archetypes or k-means for the grocery segments: how reproducible is each?

Two consecutive months of a seeded fleet's traffic (every card with product-data consent) give each
card active in a month its grocery mix (shares of the segment model's groups, as ``segments run``
computes them). On the same vectors:

* ``archetypes``  ``segments.assign`` with the shipped model (nearest named prototype);
* ``k-means``     Lloyd's algorithm, k = 10, k-means++ seeding, on the same share vectors,
                  run with five different seeds (what a monthly clustering job would do).

Printed: the adjusted Rand index (1 = the same partition, 0 = chance agreement) between runs on the
same month (k-means seed against seed; archetypes are a pure function, so 1 by construction), and
between the partitions of month 1 and month 2 of the cards active in both (how much a card's segment
moves from month to month), and the cluster sizes.

Usage: ``python benchmarks/segments_choice.py [--customers N] [--receipts-per-month N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from math import comb

from receiptflow.jobs.segments import CardMonth, assign, load_model
from receiptflow.models import ConsentState
from receiptflow.policy import load_policy
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator

Vector = tuple[float, ...]


def months(customers: int, per_month: int, seed: int) -> list[dict[str, CardMonth]]:
    sim = Simulator(seed, stores=60, customers=customers)
    policy = load_policy()
    start = datetime(2026, 9, 1, tzinfo=UTC)
    out: list[dict[str, dict[str, int]]] = [{}, {}]
    visits: list[Counter[str]] = [Counter(), Counter()]
    spend: list[Counter[str]] = [Counter(), Counter()]
    for c in sim.stream(2 * per_month, start, per_month / (30 * 86_400)):
        i = 0 if c.event_time < start + timedelta(days=30) else 1
        if c.card_id is None:
            continue
        p = process(c, policy, ConsentState(True, True, True), start + timedelta(days=61)).customer
        visits[i][c.card_id] += 1
        spend[i][c.card_id] += p.total_cents
        mix = out[i].setdefault(c.card_id, {})
        for g in p.groups:
            mix[g.product_group] = mix.get(g.product_group, 0) + g.amount_cents
    return [{c: CardMonth(c, visits[i][c], spend[i][c], out[i][c]) for c in out[i]} for i in range(2)]


def shares(m: CardMonth, groups: tuple[str, ...]) -> Vector | None:
    assert m.groups is not None
    amounts = [max(0, m.groups.get(g, 0)) for g in groups]
    total = sum(amounts)
    return tuple(a / total for a in amounts) if total else None


def _d2(a: Vector, b: Vector) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def kmeans(points: list[Vector], k: int, seed: int, iterations: int = 100) -> list[int]:
    rnd = random.Random(seed)
    centres = [points[rnd.randrange(len(points))]]
    while len(centres) < k:  # k-means++
        d = [min(_d2(p, c) for c in centres) for p in points]
        centres.append(points[rnd.choices(range(len(points)), weights=d)[0]])
    labels = [0] * len(points)
    for _ in range(iterations):
        new = [min(range(k), key=lambda j, p=p: _d2(p, centres[j])) for p in points]  # type: ignore[misc]
        if new == labels and _ > 0:
            break
        labels = new
        for j in range(k):
            members = [p for p, lab in zip(points, labels, strict=True) if lab == j]
            if members:
                centres[j] = tuple(statistics.fmean(col) for col in zip(*members, strict=True))
    return labels


def ari(a: list[object], b: list[object]) -> float:
    """Adjusted Rand index of two labellings of the same items."""
    n = len(a)
    pairs = Counter(zip(a, b, strict=True))
    sum_ij = sum(comb(v, 2) for v in pairs.values())
    sum_a = sum(comb(v, 2) for v in Counter(a).values())
    sum_b = sum(comb(v, 2) for v in Counter(b).values())
    expected = sum_a * sum_b / comb(n, 2)
    top = (sum_a + sum_b) / 2
    return 1.0 if top == expected else (sum_ij - expected) / (top - expected)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--receipts-per-month", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=2010)
    args = parser.parse_args()
    model = load_model()
    m1, m2 = months(args.customers, args.receipts_per_month, args.seed)
    cards1 = sorted(c for c in m1 if shares(m1[c], model.groups) is not None)
    cards2 = sorted(c for c in m2 if shares(m2[c], model.groups) is not None)
    both = sorted(set(cards1) & set(cards2))
    v1 = [shares(m1[c], model.groups) for c in cards1]
    v2 = [shares(m2[c], model.groups) for c in cards2]
    a1 = assign([m1[c] for c in cards1], model)
    a2 = assign([m2[c] for c in cards2], model)
    arch_months = ari([a1[c].grocery_segment for c in both], [a2[c].grocery_segment for c in both])
    seeds = range(1, 6)
    runs1 = {s: dict(zip(cards1, kmeans(v1, 10, s), strict=True)) for s in seeds}  # type: ignore[arg-type]
    runs2 = {s: dict(zip(cards2, kmeans(v2, 10, s), strict=True)) for s in seeds}  # type: ignore[arg-type]
    same_month = [ari(list(runs1[s].values()), list(runs1[t].values())) for s, t in itertools.combinations(seeds, 2)]
    km_months = [ari([runs1[s][c] for c in both], [runs2[s][c] for c in both]) for s in seeds]
    print(f"{len(cards1)} / {len(cards2)} cards with grocery spend in month 1 / 2, {len(both)} in both")
    print(f"{'method':<12} {'ARI run vs run, same month':>28} {'ARI month 1 vs month 2':>24}")
    print(f"{'archetypes':<12} {1.0:>28.2f} {arch_months:>24.2f}")
    print(
        f"{'k-means':<12} {statistics.fmean(same_month):>21.2f} (min {min(same_month):.2f})"
        f" {statistics.fmean(km_months):>17.2f} (min {min(km_months):.2f})"
    )
    sizes = Counter(a.grocery_segment for a in a1.values())
    print("archetype sizes, month 1:", ", ".join(f"{k} {v}" for k, v in sizes.most_common()))
    print("k-means sizes, month 1, seed 1:", sorted(Counter(runs1[1].values()).values(), reverse=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
