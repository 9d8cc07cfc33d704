"""The exactly-once router on the real broker: kills, duplicates, bad input, policy changes, consent, two workers.

The router runs as its own process (``python -m receiptflow process --role router``), as in
production; traffic comes from the seeded simulator through the register client; the outputs are
read back with read-committed consumers, as a downstream team would.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.models import AnalyticsBasket, Checkout, ConsentChange, Granularity, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser, key_period
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import CHAINS, Emission, Simulator, Traffic
from receiptflow.producers.truth import GroundTruth
from receiptflow.secrets import analytics_key
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, opened_letters, read_all

CODEC = Codec()
LOG_INFO = ("--loglevel", "info")  # the router's assignments and restores in its log file


def _traffic(seed: int, count: int, start: datetime, rate: float, **rates: float) -> tuple[GroundTruth, list[Emission]]:
    sim = Simulator(seed, stores=30, customers=300)
    traffic = Traffic(sim, lambda c: CODEC.encode("checkout", c.to_avro()), **rates)
    emissions = list(traffic.initial_consents(start - timedelta(days=1)))
    emissions += traffic.emissions(count, start, rate)
    return sim.truth, emissions


def _send(settings: Settings, emissions: list[Emission]) -> None:
    client = RegisterClient(settings)
    checkouts = TopicNames(settings.kafka.topic_prefix).checkouts
    signing_up = True
    for e in emissions:
        if signing_up and e.consent is None:
            # The sign-up consents are on the broker before the first sale. Sent together, a batch of
            # checkouts may be appended before the consents (another topic, another request), and the
            # router rightly routes those sales without the consent.
            assert client.flush(60).failed == 0
            signing_up = False
        if e.checkout is not None:
            client.send(e.checkout)
        elif e.consent is not None:
            client.send_consent(e.consent)
        else:
            assert e.raw is not None
            client.send_raw(checkouts, e.label.encode(), e.raw)
    stats = client.flush(60)
    assert stats.failed == 0


@contextmanager
def _router(settings: Settings, instance: str = "0", **env: str) -> Iterator[subprocess.Popen[bytes]]:
    settings.local.data_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.local.data_dir / f"router-{instance}-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "receiptflow", "process", "--role", "router", "--instance", instance, *LOG_INFO],
        env={**env_for(settings), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _lag(settings: Settings) -> int:
    """Records of checkouts and consents not yet committed by the router's group."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return _lag_once(settings)
        except KafkaException:
            # A broker that has just started may not have loaded the group coordinator yet
            # (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS): ask again.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _lag_once(settings: Settings) -> int:
    names = TopicNames(settings.kafka.topic_prefix)
    # read_uncommitted: a read-committed consumer asks for *stable* offsets and would wait for the
    # open transaction of a just-killed router to be aborted; the last committed offsets are enough here.
    c = Consumer(
        settings.kafka_config(
            **{
                "group.id": settings.router.id,
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
            }
        )
    )
    try:
        tps = [
            TopicPartition(t, p)
            for t in (names.checkouts, names.consents)
            for p in range(settings.kafka.topic_partitions)
        ]
        lag = 0
        for tp in c.committed(tps, timeout=30):
            _, high = c.get_watermark_offsets(tp, timeout=30)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        c.close()


def _wait_caught_up(settings: Settings, procs: list[subprocess.Popen[bytes]], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (lag := _lag(settings)) > 0:
        for p in procs:
            assert p.poll() is None, f"router exited with {p.returncode}; see {settings.local.data_dir}"
        assert time.monotonic() < deadline, f"router still {lag} records behind after {timeout}s"
        time.sleep(0.5)


def _purchases(settings: Settings, topic: str) -> list[Purchase]:
    return [Purchase.from_avro(CODEC.decode(m.value(), expect="purchase").value) for m in read_all(settings, topic)]


def _baskets(settings: Settings) -> list[AnalyticsBasket]:
    """The anonymous baskets the router wrote for the aggregator (``purchases.baskets``), each keyed by its chain."""
    topic = TopicNames(settings.kafka.topic_prefix).analytics_baskets
    baskets = []
    for m in read_all(settings, topic):
        basket = AnalyticsBasket.from_avro(CODEC.decode(m.value(), expect="analytics_basket").value)
        assert m.key() == basket.chain.encode()
        baskets.append(basket)
    return baskets


def _basket_id(settings: Settings, c: Checkout) -> str:
    """The basket id the router makes for ``c`` with this install's analytics key."""
    return BasketPseudonymiser(analytics_key(settings)).basket_id(c.receipt_id, key_period(c.event_time))


def _uncommitted_count(settings: Settings, topic: str) -> int:
    """Records in ``topic`` including those of aborted transactions (read_uncommitted)."""
    c = Consumer(settings.kafka_config(**{"group.id": f"peek-{uuid.uuid4().hex[:6]}"}))
    try:
        total = 0
        for p in range(settings.kafka.topic_partitions):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += high - low
        return total
    finally:
        c.close()


def _valid_checkouts(emissions: list[Emission]) -> dict[str, Checkout]:
    return {e.checkout.receipt_id: e.checkout for e in emissions if e.kind == "checkout" and e.checkout}


def test_sigkilled_five_times_with_duplicates_every_receipt_once_on_every_topic(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    truth, emissions = _traffic(
        11, 5000, datetime.now(UTC) - timedelta(hours=3), 0.5, dup_rate=0.1, bad_rate=0.03, consent_change_rate=0.02
    )
    valid = _valid_checkouts(emissions)
    assert len(truth.duplicates) > 200 and len(truth.bad) > 50
    _send(settings, emissions)

    # Small transactions so that a kill lands inside one; five kills at random points of the run.
    rng = random.Random(5)
    env = {"RECEIPTFLOW_PROCESSOR_BATCH_MAX": "10"}
    kills = 0
    while kills < 5:
        with _router(settings, **env) as proc:
            time.sleep(rng.uniform(2.0, 4.0))
            assert proc.poll() is None, f"router died on its own; see {settings.local.data_dir}"
            proc.kill()
            proc.wait()
            kills += 1
        assert _lag(settings) > 0, "the run finished before the fifth kill: nothing left to test"
    with _router(settings, **env) as proc:
        _wait_caught_up(settings, [proc])

    customer = Counter(p.receipt_id for p in _purchases(settings, names.purchases_customer))
    assert set(customer) == set(valid), "every valid receipt, nothing else"
    assert max(customer.values()) == 1, [r for r, n in customer.items() if n > 1][:5]
    analytics = Counter(b.basket_id for b in _baskets(settings))
    assert set(analytics) == {_basket_id(settings, c) for c in valid.values() if c.lines}
    assert max(analytics.values()) == 1
    marketing = Counter(p.receipt_id for p in _purchases(settings, names.purchases_marketing))
    assert marketing and set(marketing) <= set(valid) and max(marketing.values()) == 1

    dead = opened_letters(settings)
    assert Counter(d.reason for d in dead) == Counter(b["reason"] for b in truth.bad)
    assert {(d.original_key or b"").decode() for d in dead} == {b["label"] for b in truth.bad}
    assert all(d.source_topic == names.checkouts and d.original_value for d in dead)
    # The kills cut transactions: records of aborted ones are in the log but no reader saw them.
    assert _uncommitted_count(settings, names.purchases_customer) > sum(customer.values())


def _policy_with_change(path: Path, change: date) -> None:
    lines = ['default_level = "receipt"']
    for i, chain in enumerate(sorted(CHAINS)):
        later = ("receipt", "product_group")[i % 2]
        lines += [
            f"[chains.{chain}]",
            "versions = [",
            f'  {{ id = "{chain.lower()}-item", from = 2000-01-01, level = "item" }},',
            f'  {{ id = "{chain.lower()}-{later}", from = {change.isoformat()}, level = "{later}" }},',
            "]",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _consent_at(changes: list[ConsentChange], at: datetime | None) -> tuple[bool, bool] | None:
    """(product data, e-marketing) in force at ``at`` (None: the newest); simultaneous changes: the stricter."""
    before = [c for c in changes if at is None or c.event_time <= at]
    if not before:
        return None
    newest = max(c.event_time for c in before)
    tied = [c for c in before if c.event_time == newest]
    return all(c.product_data_marketing for c in tied), all(c.electronic_marketing for c in tied)


def _consent_for_purchase(changes: list[ConsentChange], at: datetime) -> tuple[bool, bool] | None:
    """What a purchase at ``at`` was made under: the state just before it, narrowed by changes at that instant."""
    prior = _consent_at([c for c in changes if c.event_time < at], None)
    tied = [c for c in changes if c.event_time == at]
    if prior is None or not tied:
        return prior
    return (
        prior[0] and all(c.product_data_marketing for c in tied),
        prior[1] and all(c.electronic_marketing for c in tied),
    )


def test_policy_change_mid_run_and_consent_flips_are_respected_on_every_topic(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Two local days of receipts; the policy of every chain changes at midnight between them.
    start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    change = (start + timedelta(days=1)).date()
    policy_file = tmp_path / "policy.toml"
    _policy_with_change(policy_file, change)
    settings = make_settings(privacy={"policy_file": policy_file})
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    truth, emissions = _traffic(23, 2000, start, 2000 / (40 * 3600), consent_change_rate=0.1)
    consents = [e for e in emissions if e.kind == "consent"]
    checkouts = [e for e in emissions if e.kind == "checkout"]
    assert len(consents) > len(truth.per_card)  # sign-up consents plus flips during the run

    with _router(settings) as proc:
        # Consents first and processed, so "consent at processing time" is each card's final state.
        _send(settings, consents)
        _wait_caught_up(settings, [proc])
        _send(settings, checkouts)
        _wait_caught_up(settings, [proc])

    policy = load_policy(policy_file)
    valid = _valid_checkouts(emissions)
    customer = _purchases(settings, names.purchases_customer)
    assert {p.receipt_id for p in customer} == set(valid)
    versions: Counter[Granularity] = Counter()
    for p in customer:
        decision = policy.version_at(p.chain, p.event_time)
        versions[decision.level] += 1
        assert p.policy_version == decision.version_id
        assert p.granularity == decision.level
        if decision.level != Granularity.ITEM:
            assert not p.items
        if decision.level == Granularity.RECEIPT:
            assert not p.groups
        assert p.total_cents == valid[p.receipt_id].total_cents
    assert all(versions[level] > 100 for level in Granularity), versions

    history: dict[str, list[ConsentChange]] = {}
    for e in consents:
        assert e.consent is not None
        # As the router sees it: through the contract, whose times have millisecond resolution.
        change = ConsentChange.from_avro(CODEC.decode(CODEC.encode("consent_change", e.consent.to_avro())).value)
        history.setdefault(change.card_id, []).append(change)
    marketing = _purchases(settings, names.purchases_marketing)
    assert marketing
    for p in marketing:
        assert p.card_id is not None
        final = _consent_at(history[p.card_id], None)
        at_event = _consent_for_purchase(history[p.card_id], p.event_time)
        assert final is not None and at_event is not None, "no consent at the time of the purchase"
        product = final[0] and at_event[0]
        electronic = final[1] and at_event[1]
        assert product or electronic, (p, history[p.card_id])
        assert p.consent.product_data_marketing == product and p.consent.electronic_marketing == electronic
        if not product:
            assert p.granularity != Granularity.ITEM and not p.items, "product lines without product-data consent"
    marketed = {p.receipt_id for p in marketing}
    for rid, sold in valid.items():
        if sold.card_id is None or rid in marketed:
            continue
        c = Checkout.from_avro(CODEC.decode(CODEC.encode("checkout", sold.to_avro())).value)
        final = _consent_at(history[sold.card_id], None)
        at_event = _consent_for_purchase(history[sold.card_id], c.event_time)
        allowed = (
            final is not None and at_event is not None and ((final[0] and at_event[0]) or (final[1] and at_event[1]))
        )
        assert not allowed, f"{rid} was allowed to reach marketing but did not"

    receipt_ids = {e.checkout.receipt_id for e in emissions if e.checkout is not None}
    for b in _baskets(settings):
        assert b.basket_id not in receipt_ids and not any(r in b.basket_id for r in receipt_ids)
        assert b.event_hour.minute == 0 and b.event_hour.second == 0 and b.lines


def test_two_workers_give_the_same_outputs_as_one(make_settings: Callable[..., Settings]) -> None:
    start = datetime.now(UTC) - timedelta(hours=3)
    _, emissions = _traffic(31, 2500, start, 0.25, dup_rate=0.1, bad_rate=0.02, consent_change_rate=0.05)
    consents = [e for e in emissions if e.kind == "consent"]
    rest = [e for e in emissions if e.kind != "consent"]

    def outputs(settings: Settings) -> dict[str, dict[str, tuple[object, ...]]]:
        names = TopicNames(settings.kafka.topic_prefix)
        out: dict[str, dict[str, tuple[object, ...]]] = {}
        for topic in (names.purchases_customer, names.purchases_marketing):
            seen: dict[str, tuple[object, ...]] = {}
            for p in _purchases(settings, topic):
                assert p.receipt_id not in seen
                seen[p.receipt_id] = (p.granularity, p.items, p.groups, p.total_cents, p.consent, p.policy_version)
            out[TopicNames(settings.kafka.topic_prefix).logical(topic)] = seen
        # Both runs share the data dir, so the install's analytics key and the basket ids are the same.
        baskets: dict[str, tuple[object, ...]] = {}
        for b in _baskets(settings):
            assert b.basket_id not in baskets
            baskets[b.basket_id] = (b.store_id, b.event_hour, b.lines, b.total_cents)
        out["analytics"] = baskets
        dead = read_all(settings, names.checkouts_dlq)
        # A letter naming no card is keyed by its source topic: each run has a topic prefix of its own.
        prefix = settings.kafka.topic_prefix.encode()
        keys = [(m.key() or b"").removeprefix(prefix) for m in dead]
        out["dlq"] = {str(i): (k,) for i, k in enumerate(sorted(keys))}
        return out

    one = make_settings(kafka={"topic_partitions": 4})
    create_topics(one)
    with _router(one) as proc:
        _send(one, consents)
        _wait_caught_up(one, [proc])
        _send(one, rest)
        _wait_caught_up(one, [proc])

    two = make_settings(kafka={"topic_partitions": 4})
    create_topics(two)
    with _router(two, "0") as a, _router(two, "1") as b:
        _send(two, consents)
        _wait_caught_up(two, [a, b])
        _send(two, rest)
        _wait_caught_up(two, [a, b])
        owners = _assignments(two)
    # Both workers share the partitions, and each gets the same numbers of checkouts and consents.
    assert len(owners) == 2 and all(owners.values()), owners
    for owned in owners.values():
        numbers = {t: {p for topic, p in owned if topic == t} for t in {t for t, _ in owned}}
        assert len(numbers) == 2 and len(set(map(frozenset, numbers.values()))) == 1, owned
    assert outputs(one) == outputs(two)


def test_card_linked_outputs_carry_the_append_time_of_their_checkout(settings: Settings) -> None:
    """What the profile agent and the sink measure end-to-end latency from, through a real broker."""
    _, emissions = _traffic(47, 300, datetime.now(UTC) - timedelta(hours=1), 0.5)
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    with _router(settings) as proc:
        _send(settings, emissions)
        _wait_caught_up(settings, [proc])
    appended: dict[str, tuple[int, int]] = {}
    for m in read_all(settings, names.checkouts):
        receipt = CODEC.decode(m.value(), expect="checkout").value["receipt_id"]
        appended.setdefault(receipt, m.timestamp())  # the first delivery is the one routed
    assert {kind for kind, _ in appended.values()} == {TIMESTAMP_LOG_APPEND_TIME}
    marketing = 0
    for topic in (names.purchases_customer, names.purchases_marketing):
        records = read_all(settings, topic)
        marketing += len(records) if topic == names.purchases_marketing else 0
        for m in records:
            receipt = CODEC.decode(m.value(), expect="purchase").value["receipt_id"]
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, appended[receipt][1]), (topic, receipt)
    assert marketing > 0  # the traffic's consents sent some receipts to marketing


def _assignments(settings: Settings) -> dict[str, set[tuple[str, int]]]:
    """The router group's members and the partitions each owns, as the broker describes them."""
    admin = AdminClient(settings.kafka_config())
    desc = admin.describe_consumer_groups([settings.router.id])[settings.router.id].result(timeout=30)
    return {m.client_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} for m in desc.members}
