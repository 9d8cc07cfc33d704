"""A seeded simulator of Finnish retail chains, stores, households with loyalty cards and checkouts.

Same seed and start time → the same events, byte for byte. Every event the simulator emits is also
recorded in a :class:`GroundTruth` (per card: receipts and spend; per chain: receipts and sums) so
tests and the demo can check the pipeline's results exactly.

Chains and what their baskets look like: S Group (Prisma, S-market, Sokos, Emotion, Alepa, ABC,
Kodin Terra), K Group (K-Citymarket, K-Supermarket, K-Market), Lähikauppa (Valintatalo, Siwa,
Euromarket) and partner fuel stations (Teboil, Neste), which hand over receipt totals only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ..catalogue import Product, load_catalogue
from ..models import Checkout, CheckoutLine, ConsentChange, PaymentMethod, ReceiptKind, Unit
from ..receipt_parts import Adjustment
from . import receipt_mix
from .truth import GroundTruth

HELSINKI = ZoneInfo("Europe/Helsinki")
CONSENT_TEXT = "sim-2026-01"  # the consent text version the simulated customers agree to

GROCERY = (
    "dairy", "bread", "meat", "fish", "vegetables", "fruit", "pet_food", "baby_products",
    "alcohol", "snacks", "household", "drinks", "dry_goods", "frozen", "personal_care",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChainType:
    groups: tuple[str, ...]
    basket: tuple[int, int]  # min, max lines
    lines_on_receipt: bool = True


HYPERMARKET = ChainType((*GROCERY, "clothing", "home_goods", "cosmetics", "garden"), (5, 30))
SUPERMARKET = ChainType(GROCERY, (3, 18))
NEIGHBOURHOOD = ChainType(GROCERY, (1, 8))
DEPARTMENT = ChainType(("clothing", "cosmetics", "home_textiles", "home_goods"), (1, 4))
HOME_GARDEN = ChainType(("garden", "hardware", "home_goods", "home_textiles", "household"), (1, 6))
SERVICE_STATION = ChainType(("fuel", "car_care", "snacks", "drinks", "bread"), (1, 4))
PARTNER_FUEL = ChainType(("fuel", "car_care", "snacks", "drinks"), (1, 3), lines_on_receipt=False)

# chain code -> (loyalty programme, chain type, relative number of stores)
CHAINS: dict[str, tuple[str, ChainType, int]] = {
    "PRISMA": ("S", HYPERMARKET, 3),
    "S_MARKET": ("S", SUPERMARKET, 8),
    "SOKOS": ("S", DEPARTMENT, 1),
    "EMOTION": ("S", DEPARTMENT, 1),
    "ALEPA": ("S", NEIGHBOURHOOD, 5),
    "ABC": ("S", SERVICE_STATION, 3),
    "KODIN_TERRA": ("S", HOME_GARDEN, 1),
    "K_CITYMARKET": ("K", HYPERMARKET, 3),
    "K_SUPERMARKET": ("K", SUPERMARKET, 6),
    "K_MARKET": ("K", NEIGHBOURHOOD, 9),
    "VALINTATALO": ("L", NEIGHBOURHOOD, 2),
    "SIWA": ("L", NEIGHBOURHOOD, 3),
    "EUROMARKET": ("L", NEIGHBOURHOOD, 1),
    "TEBOIL": ("P", PARTNER_FUEL, 2),
    "NESTE": ("P", PARTNER_FUEL, 3),
}

# Chains whose baskets carry deposits, discounts, benefits, voids and returns (receipt_mix).
GROCERY_TYPES = frozenset({HYPERMARKET, SUPERMARKET, NEIGHBOURHOOD})
_UNITS = {"kg": Unit.KG, "l": Unit.L}
_SOLD_KEPT = 500

PAYMENT_WEIGHTS = (
    (PaymentMethod.CARD, 78),
    (PaymentMethod.MOBILE, 12),
    (PaymentMethod.CASH, 8),
    (PaymentMethod.GIFT_CARD, 2),
)


@dataclass(frozen=True, slots=True)
class Store:
    store_id: str
    chain: str
    registers: int


@dataclass(frozen=True, slots=True)
class Customer:
    household_id: str
    cards: tuple[tuple[str, str], ...]  # (programme "S" or "K", card id): many Finns carry both
    anonymous_share: float  # probability they do not show a card

    def card_for(self, programme: str) -> str | None:
        """The card shown at a chain of ``programme``; partners and Lähikauppa take either."""
        held = dict(self.cards)
        if programme in ("P", "L"):
            return held.get("S") or held.get("K")
        return held.get(programme)


def households_of(customers: Iterable[Customer]) -> dict[str, str]:
    """card id -> household id of simulated customers (what ``processors.households`` reads from a file)."""
    return {card: c.household_id for c in customers for _, card in c.cards}


def _luhn_complete(body: str) -> str:
    """Append a Luhn check digit, as payment and loyalty card numbers carry."""
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return body + str((10 - total % 10) % 10)


class Simulator:
    """Deterministic generator of stores, customers and checkouts."""

    def __init__(self, seed: int, stores: int = 20, customers: int = 200) -> None:
        self.rng = random.Random(seed)
        self.catalogue = load_catalogue()
        self._by_group: dict[str, list[Product]] = {}
        for p in self.catalogue:
            self._by_group.setdefault(p.product_group, []).append(p)
        self.stores = self._make_stores(stores)
        self.customers = self._make_customers(customers)
        self._receipt_seq: dict[str, int] = {}
        self._sold: list[Checkout] = []  # recent card receipts a refund may pay back
        self.truth = GroundTruth()

    def _make_stores(self, n: int) -> list[Store]:
        weights = [w for _, _, w in CHAINS.values()]
        chains = list(CHAINS)
        stores = []
        # Every chain gets at least one store when n allows, the rest by chain size.
        picks = chains[:n] + self.rng.choices(chains, weights=weights, k=max(0, n - len(chains)))
        counters: dict[str, int] = {}
        for chain in picks:
            counters[chain] = counters.get(chain, 0) + 1
            ctype = CHAINS[chain][1]
            registers = {HYPERMARKET: 20, SUPERMARKET: 8, DEPARTMENT: 10}.get(ctype, 3)
            stores.append(Store(f"{chain}-{counters[chain]:04d}", chain, registers))
        return stores

    def _make_customers(self, n: int) -> list[Customer]:
        customers: list[Customer] = []
        household = 0
        while len(customers) < n:
            household += 1
            size = self.rng.choices((1, 2, 3, 4), weights=(40, 35, 15, 10))[0]
            # Household members share the household's programmes (co-owner cards).
            programmes = [p for p, share in (("S", 0.85), ("K", 0.65)) if self.rng.random() < share] or ["S"]
            for _ in range(min(size, n - len(customers))):
                cards = []
                for programme in programmes:
                    # S Group cards start 6390..., K Group Plussa cards 2710...: recognisable in the data.
                    prefix = "6390" if programme == "S" else "2710"
                    cards.append((programme, _luhn_complete(prefix + f"{self.rng.randrange(10**11):011d}")))
                customers.append(Customer(f"H{household:07d}", tuple(cards), self.rng.choice((0.03, 0.08, 0.2))))
        return customers

    def _basket(self, ctype: ChainType) -> tuple[CheckoutLine, ...]:
        n = self.rng.randint(*ctype.basket)
        lines = []
        for i in range(n):
            group = self.rng.choice([g for g in ctype.groups if g in self._by_group])
            product = self.rng.choice(self._by_group[group])
            if product.unit == "pcs":
                qty = float(self.rng.choices((1, 2, 3, 4), weights=(70, 20, 7, 3))[0])
            else:
                qty = round(self.rng.uniform(0.2, 40.0 if product.unit == "l" else 2.0), 3)
            amount = round(qty * product.price_cents)
            unit = _UNITS.get(product.unit, Unit.PIECE)
            lines.append(
                CheckoutLine(i + 1, product.sku, product.product_group, qty, product.price_cents, amount, unit=unit)
            )
        return tuple(lines)

    def checkout(self, event_time: datetime) -> Checkout:
        """A valid checkout, recorded in the ground truth."""
        c = self._make(event_time)
        self.truth.add(c)
        return c

    def _make(self, event_time: datetime, store: Store | None = None) -> Checkout:
        if store is None and self._sold and self.rng.random() < receipt_mix.REFUND:
            refund = self._refund(event_time)
            if refund is not None:
                return refund
        store = store or self.rng.choice(self.stores)
        programme, ctype, _ = CHAINS[store.chain]
        customer = self.rng.choice(self.customers)
        held = customer.card_for(programme)
        card = held if held is not None and self.rng.random() >= customer.anonymous_share else None
        lines = self._basket(ctype)
        adjustments: tuple[Adjustment, ...] = ()
        if ctype in GROCERY_TYPES:
            dressed = receipt_mix.dress(self.rng, lines, carded=card is not None)
            lines, adjustments = dressed.lines, dressed.adjustments
        total = sum(line.amount_cents for line in lines) + sum(a.amount_cents for a in adjustments)
        register = self.rng.randint(1, store.registers)
        seq = self._receipt_seq.get(store.store_id, 0) + 1
        self._receipt_seq[store.store_id] = seq
        method = self.rng.choices([m for m, _ in PAYMENT_WEIGHTS], weights=[w for _, w in PAYMENT_WEIGHTS])[0]
        local = event_time.astimezone(HELSINKI)
        c = Checkout(
            # Like a printed receipt number: store, register, local time, running number.
            receipt_id=f"{store.store_id}-{register:02d}-{local:%Y%m%d%H%M%S}-{seq:06d}",
            chain=store.chain,
            store_id=store.store_id,
            register_id=f"{register:02d}",
            card_id=card,
            event_time=local,
            payment_method=method,
            total_cents=total,
            lines=lines if ctype.lines_on_receipt else (),
            adjustments=adjustments,
            payments=receipt_mix.payments(self.rng, total, method),
        )
        if card is not None and c.lines:
            self._sold.append(c)  # a receipt that may be refunded later
            del self._sold[:-_SOLD_KEPT]
        return c

    def _refund(self, event_time: datetime) -> Checkout | None:
        """A refund, at its store's service desk, of some goods of an earlier card receipt (once)."""
        original = self._sold.pop(self.rng.randrange(len(self._sold)))
        lines = receipt_mix.refund_lines(self.rng, original.lines)
        if not lines or event_time <= original.event_time:
            return None
        seq = self._receipt_seq.get(original.store_id, 0) + 1
        self._receipt_seq[original.store_id] = seq
        local = event_time.astimezone(HELSINKI)
        total = sum(x.amount_cents for x in lines)
        return Checkout(
            receipt_id=f"{original.store_id}-{original.register_id}-{local:%Y%m%d%H%M%S}-{seq:06d}",
            chain=original.chain,
            store_id=original.store_id,
            register_id=original.register_id,
            card_id=original.card_id,
            event_time=local,
            payment_method=original.payment_method,
            total_cents=total,
            lines=lines,
            receipt_kind=ReceiptKind.REFUND,
            original_receipt_id=original.receipt_id,
        )

    def stream(self, count: int, start: datetime, rate: float) -> Iterator[Checkout]:
        """``count`` checkouts with event times ``start + i / rate`` seconds (plus jitter)."""
        for i in range(count):
            jitter = self.rng.random() / rate
            yield self.checkout(start + timedelta(seconds=i / rate + jitter))


# --- traffic with faults, as registers really produce it ---------------------------------------

# Relative checkout volume per local hour: a morning bump, a lunch bump and the after-work peak.
HOURLY_PROFILE = (0, 0, 0, 0, 0, 0, 1, 3, 4, 4, 5, 6, 7, 6, 5, 6, 9, 11, 10, 7, 5, 3, 2, 1)
# Service stations and fuel partners are open round the clock; everyone else 7-23.
ALWAYS_OPEN = {SERVICE_STATION, PARTNER_FUEL}


def is_open(chain: str, local_hour: int) -> bool:
    return CHAINS[chain][1] in ALWAYS_OPEN or 7 <= local_hour < 23


@dataclass(frozen=True, slots=True)
class Emission:
    """One record a register sends: a checkout, a repeated delivery, a consent change or bad bytes."""

    kind: str  # checkout | duplicate | consent | bad
    checkout: Checkout | None = None
    consent: ConsentChange | None = None
    raw: bytes | None = None  # bad: the bytes to send as they are
    label: str = ""
    reason: str = ""


BAD_KINDS = ("undecodable", "totals_mismatch", "negative_amount", "missing_id", "future_event_time")


class Traffic:
    """Checkouts with injected duplicates, bad input, consent changes and out-of-order delivery."""

    def __init__(
        self,
        sim: Simulator,
        encode_checkout: Callable[[Checkout], bytes],
        *,
        dup_rate: float = 0.0,
        bad_rate: float = 0.0,
        consent_change_rate: float = 0.0,
        out_of_order_rate: float = 0.0,
    ) -> None:
        self.sim = sim
        self.rng = random.Random(sim.rng.random())
        self.encode = encode_checkout
        self.dup_rate = dup_rate
        self.bad_rate = bad_rate
        self.consent_change_rate = consent_change_rate
        self.out_of_order_rate = out_of_order_rate
        self._sent: list[Checkout] = []
        self._held: list[tuple[int, Checkout]] = []
        self._bad_seq = 0

    def initial_consents(self, at: datetime) -> Iterator[Emission]:
        """Every card's consent as given at sign-up: about a third allow product data for marketing."""
        for customer in self.sim.customers:
            for _, card in customer.cards:
                yield self._consent(card, at, self.rng.random() < 0.35, self.rng.random() < 0.55, "signup")

    def _consent(self, card: str, at: datetime, product: bool, electronic: bool, source: str) -> Emission:
        channel = "store" if source == "signup" else source  # sign-up at a store, later changes in the app
        change = ConsentChange(card, at.astimezone(HELSINKI), product, electronic, source, "", channel, CONSENT_TEXT)
        self.sim.truth.consents.append({"card_id": card, "event_time": change.event_time.isoformat(), "source": source,
            "product_data_marketing": product, "electronic_marketing": electronic})  # fmt: skip
        return Emission("consent", consent=change, label=f"consent:{card}")

    def _bad(self, at: datetime, now: datetime | None) -> Emission:
        kind = self.rng.choice(BAD_KINDS)
        self._bad_seq += 1
        label = f"bad-{self._bad_seq:06d}"
        base = self.sim._make(at)
        if kind == "undecodable":
            raw = b"\x00\x00\x00\x00\x01" + bytes(self.rng.randrange(256) for _ in range(12))
        else:
            if kind == "totals_mismatch":
                while not base.lines:  # partners send totals only: nothing to disagree with
                    base = self.sim._make(at)
                base = replace(base, total_cents=base.total_cents + 1 + self.rng.randrange(500))
            elif kind == "negative_amount":
                # A sale without lines that pays out money (a refund may: it says what it refunds).
                total = -1 - self.rng.randrange(10_000)
                base = replace(base, lines=(), total_cents=total, receipt_kind=ReceiptKind.SALE, payments=())
                base = replace(base, original_receipt_id=None, adjustments=())
            elif kind == "missing_id":
                base = replace(base, receipt_id="")
            else:  # a register clock days ahead of the time the record is sent, however old the traffic
                base = replace(base, event_time=max(at, (now or at).astimezone(at.tzinfo)) + timedelta(days=2))
            raw = self.encode(base)
        self.sim.truth.bad.append({"label": label, "reason": kind})
        return Emission("bad", raw=raw, label=label, reason=kind)

    def emissions(self, count: int, start: datetime, rate: float, now: datetime | None = None) -> Iterator[Emission]:
        """``count`` valid checkouts (plus injected extras) with event times ``start + i / rate``; ``now``:
        when back-dated traffic is sent (a bad record's future event time is ahead of it too)."""
        for i, c in enumerate(self.sim.stream(count, start, rate)):
            at = c.event_time
            r = self.rng.random()
            if r < self.bad_rate:
                yield self._bad(at, now)
            if self.rng.random() < self.consent_change_rate and self.sim.customers:
                customer = self.rng.choice(self.sim.customers)
                _, card = self.rng.choice(customer.cards)
                yield self._consent(card, at, self.rng.random() < 0.5, self.rng.random() < 0.5, "app")
            if self.rng.random() < self.out_of_order_rate:
                # Held back: delivered a few sales later, after receipts with later event times.
                self._held.append((i + self.rng.randint(1, 20), c))
                self.sim.truth.out_of_order += 1
            else:
                yield from self._deliver(c)
            for due in [h for h in self._held if h[0] <= i]:
                self._held.remove(due)
                yield from self._deliver(due[1])
        for _, c in self._held:
            yield from self._deliver(c)
        self._held.clear()

    def _deliver(self, c: Checkout) -> Iterator[Emission]:
        yield Emission("checkout", checkout=c, label=c.receipt_id)
        self._sent.append(c)
        if self.rng.random() < self.dup_rate:
            # A retried delivery of a sale sent a little earlier (same receipt, same bytes).
            again = self._sent[-1 - self.rng.randrange(min(len(self._sent), 50))]
            self.sim.truth.duplicates.append(again.receipt_id)
            yield Emission("duplicate", checkout=again, label=again.receipt_id)


def day_of_checkouts(sim: Simulator, count: int, day: datetime) -> list[Checkout]:
    """``count`` checkouts spread over one local day by the hourly profile, only in open stores."""
    weights = list(HOURLY_PROFILE)
    local_midnight = day.astimezone(HELSINKI).replace(hour=0, minute=0, second=0, microsecond=0)
    times = sorted(
        local_midnight
        + timedelta(hours=sim.rng.choices(range(24), weights=weights)[0], seconds=sim.rng.random() * 3600)
        for _ in range(count)
    )
    out = []
    for t in times:
        open_stores = [s for s in sim.stores if is_open(s.chain, t.hour)]
        c = sim._make(t, sim.rng.choice(open_stores))
        sim.truth.add(c)
        out.append(c)
    return out
