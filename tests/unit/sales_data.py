"""Simulated traffic routed as the router routes it: the realistic data of the analytics tests.

The simulator's checkouts (every receipt shape it makes, repeated deliveries and late ones
included) go through :func:`receiptflow.processors.router.route.process` with the shipped policy,
so the baskets and the card-linked purchases are exactly what the router would write. Routing
20,000 checkouts takes a few seconds: the result is kept per process and shared by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from receiptflow.models import AnalyticsBasket, Checkout, Granularity
from receiptflow.policy import Policy, load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import Routed, process
from receiptflow.producers.simulator import Simulator, Traffic

# A Friday two days before the spring change to summer time in Europe/Helsinki (29 March 2026), so the
# simulated days include a day of 23 hours.
START = datetime(2026, 3, 27, 6, tzinfo=UTC)
KEY = b"analytics-test-key-of-32-bytes!!"


@dataclass(frozen=True, slots=True)
class Sales:
    policy: Policy
    routed: tuple[tuple[Checkout, Routed], ...]  # every delivery, repeated ones included

    @property
    def baskets(self) -> list[AnalyticsBasket]:
        """What the router wrote for the analytics, one record per delivery (repeats included)."""
        return [r.analytics for _, r in self.routed if r.analytics is not None]

    def below_item(self, c: Checkout) -> bool:
        """Whether the chain keeps less than every line against a card at the time of the sale."""
        return self.policy.version_at(c.chain, c.event_time).level is not Granularity.ITEM


@lru_cache(maxsize=4)
def simulated_sales(seed: int, emissions: int, days: int = 3, stores: int = 30, customers: int = 300) -> Sales:
    """``emissions`` deliveries of simulated checkouts over ``days`` days, routed with the default policy."""
    sim = Simulator(seed, stores=stores, customers=customers)
    # Bad records are the dead-letter path's business: only valid checkouts, some delivered twice or late.
    traffic = Traffic(sim, lambda c: b"", dup_rate=0.02, out_of_order_rate=0.02)
    policy = load_policy()
    now = START + timedelta(days=days + 1)
    pseudonyms = BasketPseudonymiser(KEY)
    routed = []
    for e in traffic.emissions(emissions, START, rate=emissions / (days * 86_400)):
        if e.checkout is not None:
            routed.append((e.checkout, process(e.checkout, policy, None, now, pseudonyms)))
    return Sales(policy, tuple(routed))
