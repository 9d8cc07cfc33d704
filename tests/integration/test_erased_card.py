"""No way back for an erased card through the pipeline, and retractions for the consumers of marketing,
on the real broker, Redis and the DuckDB warehouse.

* ``receiptflow produce --kind consent`` and the registers' client refuse a consent change for an
  erased card; nothing new reaches ``consents``.
* The router drops every checkout and consent change of an erased card sent after the erasure (also
  one sent past the registers' client, and an invalid one): nothing on ``purchases.customer``,
  ``purchases.marketing`` or ``purchases.baskets``, no dead letter, and the metric counts them.
* A consent withdrawal publishes a retraction on ``purchases.retractions`` (the router, in its
  transaction), and so does the erasure (the erase job, audited as a step).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from receiptflow.checkout_json import checkout_from_json
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.errors import ValidationError
from receiptflow.jobs.subject import audit_log, erase_card
from receiptflow.metrics import Metrics
from receiptflow.models import ConsentChange, Purchase
from receiptflow.processors.router.pseudonym import BasketPseudonymiser, key_period
from receiptflow.processors.router.state import RouterStats
from receiptflow.processors.router.worker import Router
from receiptflow.producers.client import RegisterClient
from receiptflow.secrets import analytics_key
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, read_all

MakeSettings = Callable[..., Settings]
CODEC = Codec()
RETRACTIONS = "purchases.retractions"


def _card() -> str:
    return "27" + str(uuid.uuid4().int)[:11]  # a card of this test's own: Redis is shared by the session


def _checkout_doc(rid: str, card: str, hours_ago: float = 1.0, total: int = 218) -> dict[str, object]:
    line = {"line_no": 1, "sku": "6410100000000", "product_group": "dairy", "quantity": 2, "unit_price_cents": 109}
    return {
        "receipt_id": rid,
        "chain": "K_MARKET",
        "store_id": "K_MARKET-0001",
        "register_id": "1",
        "card_id": card,
        "event_time": (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat(),
        "payment_method": "CARD",
        "currency": "EUR",
        "total_cents": total,
        "lines": [{**line, "amount_cents": 218}],
    }


def _consent_doc(card: str, product_data: bool, electronic: bool) -> dict[str, object]:
    return {
        "card_id": card,
        "event_time": datetime.now(UTC).isoformat(),
        "product_data_marketing": product_data,
        "electronic_marketing": electronic,
        "source": "app",
    }


def _produce(
    settings: Settings, tmp_path: Path, kind: str, docs: list[dict[str, object]]
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{kind}-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    # A consent change names the consent text the card holder saw (produce refuses one without).
    version = ["--text-version", "terms-2026-12"] if kind == "consent" else []
    return subprocess.run(
        [sys.executable, "-m", "receiptflow", "produce", "--kind", kind, str(path), *version],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _route(settings: Settings, metrics: Metrics | None = None) -> RouterStats:
    """Run a router worker in this process until it has routed everything on its inputs."""
    router = Router(settings, metrics=metrics or Metrics())
    stats = router.run(max_idle=5.0)
    assert _lag(settings) == 0, "the router stopped before routing everything"
    return stats


def _lag(settings: Settings) -> int:
    names = TopicNames(settings.kafka.topic_prefix)
    c = Consumer(settings.kafka_config(**{"group.id": settings.router.id, "enable.auto.commit": False}))
    try:
        tps = [TopicPartition(t, p) for t in (names.checkouts, names.consents) for p in range(3)]
        lag = 0
        for tp in c.committed(tps, timeout=30):
            _, high = c.get_watermark_offsets(tp, timeout=30)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        c.close()


def _purchases(settings: Settings, topic: str) -> list[Purchase]:
    return [Purchase.from_avro(CODEC.decode(m.value(), expect="purchase").value) for m in read_all(settings, topic)]


def _basket_ids(settings: Settings) -> set[str]:
    topic = TopicNames(settings.kafka.topic_prefix).analytics_baskets
    return {CODEC.decode(m.value(), expect="analytics_basket").value["basket_id"] for m in read_all(settings, topic)}


def _basket_id(settings: Settings, doc: dict[str, object]) -> str:
    when = datetime.fromisoformat(str(doc["event_time"]))
    return BasketPseudonymiser(analytics_key(settings)).basket_id(str(doc["receipt_id"]), key_period(when))


def _retractions(settings: Settings) -> list[dict[str, object]]:
    topic = TopicNames(settings.kafka.topic_prefix).physical(RETRACTIONS)
    out = []
    for m in read_all(settings, topic):
        record = dict(CODEC.decode(m.value(), expect="retraction").value)
        assert m.key() == str(record["card_id"]).encode()  # keyed by card id
        out.append(record)
    return out


def _consents_of(settings: Settings, card: str) -> list[bytes | None]:
    """The values of the records keyed by ``card`` on ``consents`` (None: a tombstone)."""
    topic = TopicNames(settings.kafka.topic_prefix).consents
    return [m.value() for m in read_all(settings, topic) if m.key() == card.encode()]


# --- produce and the registers' client ---------------------------------------------------------------
def test_produce_and_the_registers_client_refuse_a_consent_change_for_an_erased_card(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings()
    create_topics(settings)
    card, other = _card(), _card()
    erase_card(settings, card)
    assert _consents_of(settings, card) == [None]  # the erasure's tombstone, nothing else

    done = _produce(settings, tmp_path, "consent", [_consent_doc(card, True, True), _consent_doc(other, True, True)])
    assert done.returncode == 1, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("line ")]  # after the endpoints
    assert len(said) == 1, done.stderr
    [refusal] = said
    assert refusal.startswith("line 1: rejected (erased_card):") and "erased" in refusal.split(":", 2)[2]
    assert "Traceback" not in done.stderr and card not in refusal  # one line; the card id is not repeated
    assert "sent 1," in done.stdout

    client = RegisterClient(settings)
    with pytest.raises(ValidationError) as refused:
        client.send_consent(ConsentChange(card, datetime.now(UTC), True, False, "app"))
    assert refused.value.reason == "erased_card"
    client.send_consent(ConsentChange(other, datetime.now(UTC), False, False, "app"))  # not erased: sent
    assert client.flush(30).failed == 0

    assert _consents_of(settings, card) == [None]
    assert len(_consents_of(settings, other)) == 2


# --- the router -------------------------------------------------------------------------------------
def test_the_router_drops_every_checkout_and_consent_change_of_an_erased_card(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings()
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    card, other = _card(), _card()
    client = RegisterClient(settings)
    for c in (card, other):
        client.send_consent(ConsentChange(c, datetime.now(UTC) - timedelta(days=1), True, True, "app"))
    assert client.flush(30).failed == 0
    before = [_checkout_doc("r-before", card, hours_ago=2)]
    assert _produce(settings, tmp_path, "checkout", before).returncode == 0
    _route(settings)
    assert {p.receipt_id for p in _purchases(settings, names.purchases_marketing)} == {"r-before"}

    erase_card(settings, card)
    after = [_checkout_doc("r-after", card), _checkout_doc("r-other", other)]
    sent = _produce(settings, tmp_path, "checkout", after)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    # What an old register, or anyone who can write, sends past the client's check: a consent change,
    # and a checkout the router would dead-letter (totals do not add up) -- with the card id in it.
    raw = Producer(settings.kafka_config(**{"enable.idempotence": True}))
    change = ConsentChange(card, datetime.now(UTC), True, True, "app")
    raw.produce(names.consents, key=card.encode(), value=CODEC.encode("consent_change", change.to_avro()))
    bad = {**checkout_from_json(_checkout_doc("r-bad", card)).to_avro(), "total_cents": 1}
    raw.produce(names.checkouts, key=card.encode(), value=CODEC.encode("checkout", bad))
    assert raw.flush(30) == 0

    metrics = Metrics()
    stats = _route(settings, metrics)
    for topic in (names.purchases_customer, names.purchases_marketing):
        routed = {p.receipt_id: p.card_id for p in _purchases(settings, topic)}
        assert routed == {"r-before": card, "r-other": other}, topic  # nothing of the card since its erasure
    baskets = _basket_ids(settings)
    assert _basket_id(settings, after[1]) in baskets and _basket_id(settings, after[0]) not in baskets
    assert read_all(settings, names.checkouts_dlq) == []  # no letter keeps the card id
    assert stats.erased == 3 and stats.dead_letters == 0
    dropped = metrics.erased_dropped_total
    assert (dropped.labels("checkout")._value.get(), dropped.labels("consent")._value.get()) == (2, 1)
    assert not [r for r in _retractions(settings) if r["reason"] == "withdrawal"]


# --- retractions ------------------------------------------------------------------------------------
def test_a_withdrawal_and_an_erasure_each_publish_a_retraction(make_settings: MakeSettings) -> None:
    settings = make_settings()
    create_topics(settings)
    card = _card()
    client = RegisterClient(settings)
    client.send_consent(ConsentChange(card, datetime.now(UTC) - timedelta(days=1), True, True, "app"))
    assert client.flush(30).failed == 0
    _route(settings)
    assert _retractions(settings) == []  # a grant retracts nothing

    withdrawn_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    client.send_consent(ConsentChange(card, withdrawn_at, False, True, "app"))  # product data off, e-mail on
    assert client.flush(30).failed == 0
    before_routing = datetime.now(UTC)
    _route(settings)
    [withdrawal] = _retractions(settings)
    assert (withdrawal["card_id"], withdrawal["reason"], withdrawal["scope"]) == (
        card,
        "withdrawal",
        "product_data_marketing",
    )
    assert withdrawal["effective_at"] == withdrawn_at
    assert before_routing - timedelta(seconds=1) <= withdrawal["issued_at"] <= datetime.now(UTC)  # type: ignore[operator]

    erasure = erase_card(settings, card)
    retractions = _retractions(settings)
    assert len(retractions) == 2
    erased = retractions[-1]
    assert (erased["card_id"], erased["reason"], erased["scope"], erased["issuer"]) == (card, "erasure", "all", "erase")
    assert erased["effective_at"] == erasure.at.replace(microsecond=erasure.at.microsecond // 1000 * 1000)
    steps = [e["step"] for e in audit_log(settings) if e.get("subject") == erasure.subject]
    assert steps.count("retraction") == 1
    # A second run (resuming) publishes it again with the same effective time: consumers are idempotent.
    again = erase_card(settings, card)
    assert again.resumed
    last = _retractions(settings)[-1]
    assert (last["reason"], last["effective_at"]) == ("erasure", erased["effective_at"])
