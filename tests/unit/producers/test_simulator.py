"""Simulator: seeded determinism, a ground truth that matches what it emitted, a valid catalogue."""

from __future__ import annotations

from datetime import UTC, datetime

from receiptflow.catalogue import is_valid_ean13, load_catalogue
from receiptflow.codec import Codec
from receiptflow.models import LineKind, ReceiptKind
from receiptflow.policy import deposit_cents
from receiptflow.producers.simulator import CHAINS, Simulator
from receiptflow.validation import validate

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _encoded(seed: int) -> list[bytes]:
    codec = Codec()
    sim = Simulator(seed, stores=25, customers=60)
    return [codec.encode("checkout", c.to_avro()) for c in sim.stream(400, START, rate=20)]


def test_same_seed_gives_byte_identical_events() -> None:
    assert _encoded(7) == _encoded(7)
    assert _encoded(7) != _encoded(8)


def test_ground_truth_matches_emitted_events() -> None:
    sim = Simulator(3, stores=30, customers=80)
    events = list(sim.stream(500, START, rate=10))
    t = sim.truth
    assert t.receipts == len(events) == 500
    assert t.anonymous == sum(1 for c in events if c.card_id is None)
    assert t.spend_cents == sum(c.total_cents for c in events)
    for card, (n, spend) in t.per_card.items():
        # What the card's profile holds: sales as visits, goods net of refunds without deposits.
        mine = [c for c in events if c.card_id == card]
        visits = sum(c.receipt_kind is ReceiptKind.SALE for c in mine)
        assert (n, spend) == (visits, sum(c.total_cents - deposit_cents(c.lines) for c in mine))
    assert sum(v[0] for v in t.per_chain.values()) == 500
    assert len({c.receipt_id for c in events}) == 500


def test_events_are_valid_and_chains_realistic() -> None:
    sim = Simulator(11, stores=40, customers=100)
    events = list(sim.stream(600, START, rate=5))
    for c in events:
        validate(c, START.replace(year=2027))
        assert c.chain in CHAINS
        if c.chain in ("TEBOIL", "NESTE"):
            assert c.lines == ()  # partners hand over totals only
    assert {c.chain for c in events} == set(CHAINS)  # every chain has a store when stores >= chains
    assert 0 < sum(1 for c in events if c.card_id is None) < len(events)


def test_catalogue_skus_are_valid_ean13_and_unique() -> None:
    products = load_catalogue()
    assert len(products) > 50
    assert all(is_valid_ean13(p.sku) for p in products)
    assert len({p.sku for p in products}) == len(products)
    groups = {p.product_group for p in products}
    assert {"dairy", "bread", "meat", "fish", "vegetables", "fruit", "pet_food", "baby_products", "alcohol"} <= groups


def test_traffic_carries_the_shapes_of_real_receipts_and_all_are_valid() -> None:
    sim = Simulator(5, stores=40, customers=200)
    events = list(sim.stream(3000, START, rate=0.05))  # 3000 receipts over about 17 hours
    for c in events:
        validate(c, START.replace(year=2027))
    grocery = [c for c in events if c.lines and any(x.product_group != "fuel" for x in c.lines)]
    kinds = [{x.kind for x in c.lines} for c in grocery]

    def share(kind: LineKind) -> float:
        return sum(kind in k for k in kinds) / len(grocery)

    # Deposit slips in many grocery baskets, deposits on drinks; discounts, benefits, voids, returns rarer.
    assert 0.2 < share(LineKind.DEPOSIT_REFUND) < 0.4
    assert share(LineKind.DEPOSIT) > 0.2
    assert 0.1 < share(LineKind.DISCOUNT) < 0.8
    assert 0.02 < share(LineKind.BENEFIT) < 0.6
    assert 0.01 < share(LineKind.VOID) < 0.5
    assert 0.001 < share(LineKind.RETURN) < 0.1
    assert any(x.quantity == 0 for c in grocery for x in c.lines)  # voided in place
    refunds = [c for c in events if c.receipt_kind is ReceiptKind.REFUND]
    assert 0.002 < len(refunds) / len(events) < 0.03
    by_id = {c.receipt_id: c for c in events}
    for r in refunds:  # each names an earlier card receipt of the same card and store
        original = by_id[r.original_receipt_id or ""]
        assert (original.card_id, original.store_id) == (r.card_id, r.store_id)
        assert original.event_time < r.event_time and r.total_cents < 0
    assert sim.truth.refunds == len(refunds)
    assert any(c.payments for c in events) and any(c.adjustments for c in events)
    assert any(c.total_cents < 0 for c in events if c.receipt_kind is ReceiptKind.SALE)  # slip above the basket
