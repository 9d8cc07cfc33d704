"""The router loop on in-memory Kafka clients: transactions, aborts and state restore without a broker."""

from __future__ import annotations

import struct
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

from receiptflow.card_hash import erased_hash
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import DeadLetter, LetterOpener
from receiptflow.dlq_seal import Original
from receiptflow.dlq_write import LetterSealer, VaultBackoff
from receiptflow.erasures import encode_erasure
from receiptflow.errors import BrokerError, ConfigError
from receiptflow.metrics import Metrics
from receiptflow.models import Checkout, CheckoutLine, ConsentChange, PaymentMethod
from receiptflow.processors.router.clients import RouterClients
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.state import SEEN_BATCH_HEADER, unpack_seen
from receiptflow.processors.router.worker import Router
from receiptflow.retractions import Reason, Retraction, Scope
from receiptflow.secrets import erasure_salt
from receiptflow.topics import TopicNames

from ...memory_vault import MemoryVault
from ...strategies import NOW
from .memory_kafka import MemoryBroker, MemoryErasureReader, MemoryGroupConsumer, MemoryProducer, MemoryRestoreReader

pytestmark = pytest.mark.unit

NAMES = TopicNames("")
CODEC = Codec()
CARD = "6390000000001"
PARTITIONS = 2


@pytest.fixture
def broker() -> MemoryBroker:
    inputs = [NAMES.checkouts, NAMES.consents, NAMES.receipts_seen]
    outputs = [NAMES.purchases_customer, NAMES.purchases_marketing, NAMES.analytics_baskets, NAMES.checkouts_dlq]
    outputs += [NAMES.retractions, NAMES.consents_erased]
    return MemoryBroker({t: PARTITIONS for t in inputs} | {t: 1 for t in outputs})


def _sealer(settings: Settings, vault: MemoryVault) -> LetterSealer:
    sealer = LetterSealer(settings, "router-test-0", settings.router.id, codec=CODEC, vault=vault, hasher=_hash)
    sealer.backoff = VaultBackoff("router-test-0", sleep=lambda _s: None)
    return sealer


def _hash(card: str) -> str:
    return erased_hash(card, b"router-loop-test-erasure-salt")


def _router(
    broker: MemoryBroker,
    tmp_path: Path,
    name: str = "router",
    vault: MemoryVault | None = None,
    erasures: MemoryErasureReader | None = None,
) -> Router:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        metrics={"port": 0},
        local={"data_dir": tmp_path},
        router={"order_wait_ms": 50},
    )
    reader = erasures or MemoryErasureReader(broker, NAMES.consents_erased)
    clients = RouterClients(
        MemoryGroupConsumer(broker, settings.router.id),
        MemoryProducer(broker),
        lambda: MemoryRestoreReader(broker),
        lambda: reader,
    )
    return Router(
        settings,
        clients=clients,
        metrics=Metrics(),
        clock=lambda: NOW,
        name=name,
        baskets=BasketPseudonymiser(b"router-loop-test-analytics-key"),
        letters=_sealer(settings, vault or MemoryVault()),
    )


def _checkout(receipt: str, card: str | None = CARD, hours_ago: float = 1, total: int = 218) -> Checkout:
    line = CheckoutLine(1, "6410100000000", "dairy", 2.0, 109, 218)
    return Checkout(
        receipt,
        "SOKOS",
        "SOKOS-0001",
        "01",
        card,
        NOW - timedelta(hours=hours_ago),
        PaymentMethod("CARD"),
        total,
        (line,),
    )


def _send_checkout(broker: MemoryBroker, c: Checkout) -> None:
    broker.append(NAMES.checkouts, (c.card_id or c.store_id).encode(), CODEC.encode("checkout", c.to_avro()))


def _send_consent(broker: MemoryBroker, pdm: bool, em: bool, hours_ago: float, card: str = CARD) -> None:
    change = ConsentChange(card, NOW - timedelta(hours=hours_ago), pdm, em)
    broker.append(NAMES.consents, card.encode(), CODEC.encode("consent_change", change.to_avro()))


def _receipts(broker: MemoryBroker, topic: str) -> list[str]:
    return [CODEC.decode(m.value(), expect="purchase").value["receipt_id"] for m in broker.records(topic)]


def _committed_everything(broker: MemoryBroker, group: str) -> bool:
    return all(
        broker.committed.get((group, t, p), 0) == broker.end(t, p)
        for t in (NAMES.checkouts, NAMES.consents)
        for p in range(PARTITIONS)
    )


def test_a_transaction_commits_outputs_changelog_and_offsets(broker: MemoryBroker, tmp_path: Path) -> None:
    for rid in ("r-1", "r-2", "r-3"):
        _send_checkout(broker, _checkout(rid))
    _send_checkout(broker, _checkout("r-2"))  # an upstream retry
    _send_checkout(broker, _checkout("r-bad", total=1))  # totals do not add up
    _send_checkout(broker, _checkout("r-4", card="2710000000002"))  # the other partition
    router = _router(broker, tmp_path)
    stats = router.run(max_idle=0.3)
    assert sorted(_receipts(broker, NAMES.purchases_customer)) == ["r-1", "r-2", "r-3", "r-4"]
    [letter] = broker.records(NAMES.checkouts_dlq)
    assert CODEC.decode(letter.value(), expect="dead_letter").value["reason"] == "totals_mismatch"
    seen = [rid for m in broker.records(NAMES.receipts_seen) for rid, _ in unpack_seen(m.value() or b"")]
    assert sorted(seen) == ["r-1", "r-2", "r-3", "r-4"]
    assert all(SEEN_BATCH_HEADER in (m.headers() or []) for m in broker.records(NAMES.receipts_seen))
    assert _committed_everything(broker, router.settings.router.id)
    assert (stats.consumed, stats.routed, stats.duplicates, stats.dead_letters, stats.aborted) == (6, 4, 1, 1, 0)
    assert broker.aborts == 0 and broker.commits == stats.batches >= 1


def test_a_dead_letter_waits_for_the_vault_and_never_names_the_card(broker: MemoryBroker, tmp_path: Path) -> None:
    """Redis away: the batch is aborted and read again after a pause, no letter is written unsealed, none lost."""
    bad = _checkout("r-bad", total=1)
    _send_checkout(broker, _checkout("r-1"))
    _send_checkout(broker, bad)
    vault = MemoryVault(down_for=3)
    pauses: list[float] = []
    router = _router(broker, tmp_path, vault=vault)
    router.letters.backoff = VaultBackoff("router-test-0", sleep=pauses.append)
    stats = router.run(max_idle=0.3)
    assert (stats.aborted, broker.aborts, pauses) == (3, 3, [0.5, 1.0, 2.0])
    assert router.letters.backoff.failures == 0  # reset by the batch that went through
    assert _receipts(broker, NAMES.purchases_customer) == ["r-1"]  # once, though read four times
    assert _committed_everything(broker, router.settings.router.id)
    [message] = broker.records(NAMES.checkouts_dlq)
    letter = DeadLetter.from_record(0, CODEC.decode(message.value(), expect="dead_letter").value)
    assert (letter.reason, letter.payload, letter.card_hash) == ("totals_mismatch", "card", _hash(CARD))
    assert letter.consumer_group == router.settings.router.id and letter.original_value is None
    assert CARD.encode() not in (message.value() or b"") and message.key() == _hash(CARD).encode()
    opener = LetterOpener(Settings(), codec=CODEC, vault=vault, hasher=_hash)
    assert opener.open(letter) == Original(CARD.encode(), CODEC.encode("checkout", bad.to_avro()))


def test_an_aborted_transaction_is_read_again_and_committed_once(broker: MemoryBroker, tmp_path: Path) -> None:
    for rid in ("r-1", "r-2", "r-3"):
        _send_checkout(broker, _checkout(rid))
    broker.fail_next_commit = True
    router = _router(broker, tmp_path)
    stats = router.run(max_idle=0.3)
    # Nothing of the aborted attempt stayed in the state: the same records routed on the second try.
    assert broker.aborts == 1 and stats.aborted == 1
    assert sorted(_receipts(broker, NAMES.purchases_customer)) == ["r-1", "r-2", "r-3"]
    assert stats.duplicates == 0 and stats.routed == 3
    assert _committed_everything(broker, router.settings.router.id)


def test_card_linked_outputs_carry_the_checkouts_append_time_and_time_is_observed_once_committed(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    _send_consent(broker, True, True, hours_ago=5)
    for rid in ("r-1", "r-2"):
        _send_checkout(broker, _checkout(rid))
    appended = {
        CODEC.decode(m.value(), expect="checkout").value["receipt_id"]: m.timestamp()[1]
        for m in broker.records(NAMES.checkouts)
    }
    broker.fail_next_commit = True  # the first attempt's records must not be observed
    router = _router(broker, tmp_path)
    router.run(max_idle=0.3)
    for topic in (NAMES.purchases_customer, NAMES.purchases_marketing):
        stamps = {
            CODEC.decode(m.value(), expect="purchase").value["receipt_id"]: m.timestamp() for m in broker.records(topic)
        }
        assert stamps == {rid: (TIMESTAMP_CREATE_TIME, at) for rid, at in appended.items()}
    assert {m.timestamp()[0] for m in broker.records(NAMES.analytics_baskets)} == {TIMESTAMP_LOG_APPEND_TIME}
    registry = router.metrics.registry
    assert registry.get_sample_value("receiptflow_checkout_to_output_seconds_count", {"stage": "router"}) == 2
    counts = {"chain": "SOKOS", "granularity": "ITEM"}
    assert registry.get_sample_value("receiptflow_routed_granularity_total", counts) == 2
    assert registry.get_sample_value("receiptflow_marketing_consent_total", {"outcome": "product_data"}) == 2


def test_a_restarted_worker_restores_receipts_seen_and_consent(broker: MemoryBroker, tmp_path: Path) -> None:
    _send_consent(broker, True, True, hours_ago=9)
    _send_checkout(broker, _checkout("r-1"))
    first = _router(broker, tmp_path, "first")
    first.run(max_idle=0.3)
    assert _receipts(broker, NAMES.purchases_marketing) == ["r-1"]
    # After the restart: a retry of r-1, an id in the older changelog format, a new receipt.
    _send_checkout(broker, _checkout("r-1"))
    old_format = struct.pack(">q", int((NOW - timedelta(hours=2)).timestamp() * 1000))
    r_old = _checkout("r-old", hours_ago=2)
    broker.append(
        NAMES.receipts_seen, b"r-old", old_format, partition=broker.partition_for(NAMES.checkouts, CARD.encode())
    )
    _send_checkout(broker, r_old)
    _send_checkout(broker, _checkout("r-2"))
    second = _router(broker, tmp_path, "second")
    stats = second.run(max_idle=0.3)
    assert stats.duplicates == 2 and stats.routed == 1
    assert _receipts(broker, NAMES.purchases_customer) == ["r-1", "r-2"]
    # The consent change was committed before the restart: restored, not read again, and applied.
    assert _receipts(broker, NAMES.purchases_marketing) == ["r-1", "r-2"]
    assert stats.consent_changes == 0
    [history] = [s.consent[CARD] for s in second.state.values() if CARD in s.consent]
    assert len(history.changes) == 1


def test_a_consent_change_written_before_a_checkout_applies_to_it(broker: MemoryBroker, tmp_path: Path) -> None:
    _send_consent(broker, True, True, hours_ago=9)
    _router(broker, tmp_path, "first").run(max_idle=0.3)
    # Written in this order; the in-memory consumer hands out checkouts before consents, so only
    # the time-ordered merge puts the withdrawal first.
    _send_consent(broker, False, False, hours_ago=3)
    _send_checkout(broker, _checkout("r-1", hours_ago=1))
    stats = _router(broker, tmp_path, "second").run(max_idle=0.3)
    assert stats.consent_changes == 1 and stats.routed == 1
    assert _receipts(broker, NAMES.purchases_customer) == ["r-1"]
    assert broker.records(NAMES.purchases_marketing) == []


def test_inputs_that_are_not_co_partitioned_stop_the_worker_before_it_starts(tmp_path: Path) -> None:
    uneven = MemoryBroker({NAMES.checkouts: 2, NAMES.consents: 3, NAMES.receipts_seen: 2})
    with pytest.raises(ConfigError, match="co-partitioned"):
        _router(uneven, tmp_path).run(max_idle=0.1)
    missing = MemoryBroker({NAMES.checkouts: 2, NAMES.consents: 2})
    with pytest.raises(BrokerError, match="receiptflow topics create"):
        _router(missing, tmp_path).run(max_idle=0.1)


# --- erased cards and retractions --------------------------------------------------------------------
def _erase(broker: MemoryBroker, router: Router, card: str = CARD) -> None:
    """Record ``card`` on the erased-cards topic, keyed by its hash with the router's install salt."""
    key, value = encode_erasure(erased_hash(card, erasure_salt(router.settings)), NOW - timedelta(minutes=5))
    broker.append(NAMES.consents_erased, key, value)


def _retractions(broker: MemoryBroker) -> list[Retraction]:
    return [
        Retraction.from_avro(CODEC.decode(m.value(), expect="retraction").value)
        for m in broker.records(NAMES.retractions)
    ]


def test_an_erased_card_is_dropped_before_anything_and_counted(broker: MemoryBroker, tmp_path: Path) -> None:
    other = "2710000000002"
    _send_consent(broker, True, True, hours_ago=9)
    _send_checkout(broker, _checkout("r-1"))
    _send_checkout(broker, _checkout("r-bad", total=1))  # invalid: would be a dead letter holding the card id
    _send_checkout(broker, _checkout("r-2", card=other))
    router = _router(broker, tmp_path)
    _erase(broker, router)
    stats = router.run(max_idle=0.3)
    assert _receipts(broker, NAMES.purchases_customer) == ["r-2"]
    assert broker.records(NAMES.purchases_marketing) == []
    assert broker.records(NAMES.checkouts_dlq) == [] and broker.records(NAMES.retractions) == []
    assert len(broker.records(NAMES.analytics_baskets)) == 1  # r-2's only
    assert (stats.erased, stats.routed, stats.consent_changes, stats.dead_letters) == (3, 1, 0, 0)
    dropped = router.metrics.erased_dropped_total
    assert dropped.labels("checkout")._value.get() == 2 and dropped.labels("consent")._value.get() == 1
    assert all(CARD not in s.consent for s in router.state.values())
    assert _committed_everything(broker, router.settings.router.id)


def test_an_erasure_recorded_while_a_transaction_is_open_aborts_it_and_the_card_is_dropped(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    _send_checkout(broker, _checkout("r-1"))
    _send_checkout(broker, _checkout("r-2", card="2710000000002"))
    reader = MemoryErasureReader(broker, NAMES.consents_erased)
    router = _router(broker, tmp_path, erasures=reader)
    # The erasure is acknowledged after the transaction started and before it commits.
    reader.before_catch_up.append(lambda: _erase(broker, router))
    stats = router.run(max_idle=0.3)
    assert broker.aborts == 1 and stats.aborted == 1
    assert _receipts(broker, NAMES.purchases_customer) == ["r-2"]
    assert len(broker.records(NAMES.analytics_baskets)) == 1
    assert stats.erased == 1 and stats.routed == 1
    assert reader.catch_ups >= 2 and reader.closed
    assert _committed_everything(broker, router.settings.router.id)


def test_a_withdrawal_writes_one_retraction_in_its_transaction(broker: MemoryBroker, tmp_path: Path) -> None:
    _send_consent(broker, True, True, hours_ago=9)
    _router(broker, tmp_path, "first").run(max_idle=0.3)
    assert broker.records(NAMES.retractions) == []  # a grant narrows nothing
    _send_consent(broker, False, True, hours_ago=3)  # product data withdrawn, e-mail kept
    _send_consent(broker, False, True, hours_ago=3)  # the same change delivered again
    router = _router(broker, tmp_path, "second")
    stats = router.run(max_idle=0.3)
    [retraction] = _retractions(broker)
    assert (retraction.card_id, retraction.reason, retraction.scope) == (CARD, Reason.WITHDRAWAL, Scope.PRODUCT_DATA)
    assert retraction.effective_at == NOW - timedelta(hours=3) and retraction.issued_at == NOW
    assert retraction.issuer == router.transactional_id
    assert [m.key() for m in broker.records(NAMES.retractions)] == [CARD.encode()]
    assert stats.retractions == 1
    assert router.metrics.retractions_total.labels("withdrawal", "product_data_marketing")._value.get() == 1
    assert _committed_everything(broker, router.settings.router.id)
