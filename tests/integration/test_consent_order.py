"""Consent in time order on the real broker: a withdrawal written before a card's checkouts applies to them.

The router reads ``consents`` and ``checkouts`` with one consumer. With the router stopped, each
card's product-data withdrawal is written, then -- half a second later -- checkouts of that card
made *before* the withdrawal (a register's outbox catching up). Whatever order the fetches bring
them in after the start, or after a second worker joins in the middle of the backlog, none of those
receipts may carry product data on ``purchases.marketing``; they still reach it at product-group
level, because e-mail marketing consent stays on (so the check is never vacuous).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from receiptflow.config import Settings
from receiptflow.models import Checkout, CheckoutLine, ConsentChange, Granularity, PaymentMethod
from receiptflow.producers.client import RegisterClient
from receiptflow.topics import TopicNames, create_topics

from .test_router import _lag, _purchases, _router, _wait_caught_up

CHAIN = "K_CITYMARKET"  # keeps product-level lines: product data is there to leak


def _checkout(card: str, n: int, when: datetime) -> Checkout:
    lines = (
        CheckoutLine(1, "6410100000000", "dairy", 2.0, 129, 258),
        CheckoutLine(2, "6410103779194", "bread", 1.0, 349, 349),
    )
    return Checkout(
        receipt_id=f"ORD-{card}-{n}",
        chain=CHAIN,
        store_id="K-0001",
        register_id="3",
        card_id=card,
        event_time=when,
        payment_method=PaymentMethod.CARD,
        total_cents=607,
        lines=lines,
    )


def _granted_then_stopped(settings: Settings, cards: list[str], at: datetime) -> None:
    """Every card signs up with full consent, and the router commits that before it is stopped."""
    client = RegisterClient(settings)
    for card in cards:
        client.send_consent(ConsentChange(card, at, True, True))
    assert client.flush(60).failed == 0
    with _router(settings) as proc:
        _wait_caught_up(settings, [proc])


def _withdraw_then_sell_earlier(
    settings: Settings, cards: list[str], withdrawn_at: datetime, per_card: int, others: int = 0
) -> set[str]:
    """Withdrawals first; 0.5 s later, checkouts made before them. Returns the receipt ids.

    ``others`` consent changes of other cards are written before the withdrawals: a consents backlog
    that takes the consumer more than one fetch to read, as after a long stop. Small record batches,
    as from many registers and apps each sending a few.
    """
    client = RegisterClient(settings, **{"batch.num.messages": 10})
    for i in range(others):
        client.send_consent(ConsentChange(f"64000{i:08d}", withdrawn_at - timedelta(hours=1), i % 2 == 0, True))
    for card in cards:
        client.send_consent(ConsentChange(card, withdrawn_at, False, True))
    assert client.flush(60).failed == 0
    time.sleep(0.5)
    receipts = set()
    for n in range(per_card):
        for card in cards:
            c = _checkout(card, n, withdrawn_at - timedelta(minutes=30) + timedelta(seconds=n))
            client.send(c)
            receipts.add(c.receipt_id)
    assert client.flush(60).failed == 0
    return receipts


def _assert_no_product_data_reached_marketing(settings: Settings, receipts: set[str]) -> None:
    names = TopicNames(settings.kafka.topic_prefix)
    marketing = {p.receipt_id: p for p in _purchases(settings, names.purchases_marketing) if p.receipt_id in receipts}
    leaked = sorted(rid for rid, p in marketing.items() if p.items or p.consent.product_data_marketing)
    assert not leaked, f"{len(leaked)} of {len(receipts)} receipts reached marketing with product data: {leaked[:5]}"
    # E-mail consent was kept: every receipt is there, at product-group level.
    assert set(marketing) == receipts
    assert all(p.granularity is Granularity.PRODUCT_GROUP and p.groups for p in marketing.values())
    customer = [p for p in _purchases(settings, names.purchases_customer) if p.receipt_id in receipts]
    assert len(customer) == len(receipts) and all(p.items for p in customer)  # recorded at the register anyway


def test_withdrawal_written_before_checkouts_applies_after_a_restart(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(kafka={"topic_partitions": 3})
    create_topics(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    cards = [f"63900000{i:05d}" for i in range(40)]
    _granted_then_stopped(settings, cards, now - timedelta(days=30))
    receipts = _withdraw_then_sell_earlier(settings, cards, now - timedelta(minutes=1), per_card=5, others=5_000)

    # Small fetches: the consumer needs many rounds to read the backlog, as a router far behind does.
    with _router(settings, RECEIPTFLOW_KAFKA_EXTRA='{"max.partition.fetch.bytes": "4096"}') as proc:
        _wait_caught_up(settings, [proc])
    _assert_no_product_data_reached_marketing(settings, receipts)


def test_withdrawal_written_before_checkouts_applies_when_a_second_worker_joins(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(kafka={"topic_partitions": 4})
    create_topics(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    cards = [f"63910000{i:05d}" for i in range(60)]
    _granted_then_stopped(settings, cards, now - timedelta(days=30))
    receipts = _withdraw_then_sell_earlier(settings, cards, now - timedelta(minutes=1), per_card=40, others=20_000)
    backlog = _lag(settings)
    assert backlog >= len(receipts)

    # Small transactions, so the backlog lasts long enough for the second worker to join in its middle.
    small = {"RECEIPTFLOW_PROCESSOR_BATCH_MAX": "25"}
    with _router(settings, "0", **small) as first:
        deadline = time.monotonic() + 120
        while _lag(settings) > backlog * 0.8:
            assert first.poll() is None and time.monotonic() < deadline, "the first worker made no progress"
            time.sleep(0.2)
        with _router(settings, "1", **small) as second:
            joined_with = _lag(settings)
            _wait_caught_up(settings, [first, second])
    assert joined_with > 0, "the second worker joined after the backlog was gone: nothing was rebalanced"
    _assert_no_product_data_reached_marketing(settings, receipts)
