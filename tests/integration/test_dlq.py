"""Dead letters: listed with their reasons, replayed to their source after a fix, idempotently.

Issue 29, item 4: a letter holds no clear card id; once its card is erased nobody can read it and
``dlq replay`` restores nothing of it; one source record rejected by two consumers is two letters,
and replay sends it once, to its own topic, without reporting an earlier replay that never ran.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import redis
from confluent_kafka import Producer
from pydantic import SecretStr

from receiptflow.card_hash import erased_hash
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import Closed, LetterOpener, iter_dead_letters, replay_letters
from receiptflow.dlq_seal import associated_data, open_sealed
from receiptflow.dlq_vault import KeyState, RedisVault, data_key_name
from receiptflow.jobs.subject import erase_card
from receiptflow.models import ConsentChange, Purchase
from receiptflow.processors.router.worker import Router
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.redis_auth import RedisRole
from receiptflow.secrets import erasure_salt
from receiptflow.sinks import DEFAULT_GROUP, open_sink, run_sink
from receiptflow.topics import TopicNames, create_topics

from .conftest import RedisServer
from .support import env_for, read_all


def test_dead_letters_are_listed_and_replayed_after_a_fix(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    codec = Codec()
    now = datetime.now(UTC)
    sales = list(Simulator(3, stores=5, customers=20).stream(40, now - timedelta(hours=1), rate=0.02))
    # A register whose clock ran an hour fast: its receipts look like they come from the future.
    fast = [replace(c, receipt_id=f"FAST-{i}", event_time=now + timedelta(hours=1)) for i, c in enumerate(sales[:5])]
    client = RegisterClient(settings)
    for c in sales + fast:
        client.send(c)
    client.send_raw(names.checkouts, b"junk-1", b"not avro at all")
    client.flush()

    Router(settings, name="router-1").run(max_idle=3)
    letters = list(iter_dead_letters(settings))
    assert sorted(d.reason for d in letters) == ["future_event_time"] * 5 + ["undecodable"]
    listed = subprocess.run(
        [sys.executable, "-m", "receiptflow", "dlq", "list"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "6 dead letters (future_event_time: 5, undecodable: 1)" in listed.stderr
    assert f"{names.checkouts}[" in listed.stdout and "is after" in listed.stdout

    # The fix: processing now happens when those receipts are no longer in the future (here: a
    # processor clock two hours on). A second replay starts where the first stopped: nothing to send.
    # Replaying the same letters again on purpose (--from-offset 0) must not route anything twice.
    for from_offset, sent in ((None, 5), (None, 0), (0, 5)):
        result = replay_letters(settings, reason="future_event_time", from_offset=from_offset)
        assert (result.replayed, result.skipped_repeats) == (sent, 0)
        fixed = Router(settings, name="router-2", clock=lambda: datetime.now(UTC) + timedelta(hours=2))
        fixed.run(max_idle=3)

    customer = [
        Purchase.from_avro(codec.decode(m.value(), expect="purchase").value).receipt_id
        for m in read_all(settings, names.purchases_customer)
    ]
    assert sorted(customer) == sorted([c.receipt_id for c in sales] + [c.receipt_id for c in fast])
    # The still-bad record stays in the dead-letter topic; nothing new was rejected.
    assert len(list(iter_dead_letters(settings))) == 6


def test_replay_sends_only_what_was_there_and_twice_is_harmless(make_settings: Callable[..., Settings]) -> None:
    """Issue 15: with the processor running, a replay of 3 letters reported 9 and left 12 in the DLQ."""
    settings = make_settings()
    create_topics(settings)
    now = datetime.now(UTC)
    sales = list(Simulator(5, stores=5, customers=20).stream(3, now - timedelta(hours=1), rate=0.02))
    client = RegisterClient(settings)
    for i, c in enumerate(sales):
        client.send(replace(c, receipt_id=f"MISMATCH-{i}", total_cents=c.total_cents + 1))
    client.flush()

    stop = threading.Event()
    router = Router(settings, name="router-live")
    worker = threading.Thread(target=router.run, args=(stop,), daemon=True)
    worker.start()
    try:
        _wait_for_letters(settings, 3)
        for expected_replayed, expected_repeats, letters_after in ((3, 0, 6), (0, 3, 6)):
            done = subprocess.run(
                [sys.executable, "-m", "receiptflow", "dlq", "replay", "--reason", "totals_mismatch"],
                env=env_for(settings),
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert f"replayed {expected_replayed} dead letters" in done.stdout, done.stdout
            if expected_repeats:
                assert f"skipped {expected_repeats} that an earlier replay already sent" in done.stdout
            _wait_for_letters(settings, letters_after)
            time.sleep(3)  # nothing more arrives: the replay did not feed on its own output
            assert len(list(iter_dead_letters(settings))) == letters_after
    finally:
        stop.set()
        worker.join(60)


def _wait_for_letters(settings: Settings, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (found := len(list(iter_dead_letters(settings, idle=1)))) < count:
        assert time.monotonic() < deadline, f"{found} dead letters, expected {count}"
        time.sleep(0.5)


def _card() -> str:
    return "27" + str(uuid.uuid4().int)[:11]  # a card of this test's own: Redis is shared by the session


def _dlq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiptflow", "dlq", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        check=False,
    )


def test_an_erased_cards_dead_letter_cannot_be_read_and_replay_brings_nothing_back(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> None:
    """Issue 29, item 4: a receipt dead-lettered as future_event_time, its card erased, then ``dlq replay``
    once its time is inside the drift allowance. On main the router routed it to purchases.customer keyed
    by the erased card id, and the letter kept the whole checkout in clear."""
    settings = make_settings()
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    now = datetime.now(UTC)
    erased, kept = _card(), _card()
    sales = list(Simulator(29, stores=3, customers=5).stream(2, now - timedelta(hours=1), rate=0.02))
    # A register clock 11 minutes fast: just past the 10 minutes of drift a checkout is allowed.
    ahead = now + timedelta(minutes=11)
    gone = replace(sales[0], receipt_id=f"AHEAD-{erased}", card_id=erased, event_time=ahead)
    stays = replace(sales[1], receipt_id=f"AHEAD-{kept}", card_id=kept, event_time=ahead)
    client = RegisterClient(settings)
    for c in (gone, stays):
        client.send(c)
    client.flush()
    Router(settings, name="router-1").run(max_idle=3)

    raw = read_all(settings, names.checkouts_dlq)
    assert len(raw) == 2
    for m in raw:  # no card id in any byte of a letter, key or value
        for card in (erased, kept):
            assert card.encode() not in (m.key() or b"") + (m.value() or b"")
    letters = list(iter_dead_letters(settings))
    assert [(d.reason, d.payload, d.original_value) for d in letters] == [("future_event_time", "card", None)] * 2
    subject = erased_hash(erased, erasure_salt(settings))
    [letter] = [d for d in letters if d.card_hash == subject]
    vault = RedisVault.from_settings(settings)
    aad = associated_data(letter.source_topic, letter.source_partition, letter.source_offset, subject)
    key = vault.key_for_reading(subject).key
    assert key is not None and open_sealed(key, letter.sealed or b"", aad).key == erased.encode()  # before erasure
    listed = _dlq(settings, "list")
    assert listed.returncode == 0, listed.stderr
    assert subject[:12] in listed.stdout and erased not in listed.stdout + listed.stderr

    erase_card(settings, erased)
    # The data key went with the erasure; the vault will not make another for the card.
    admin = redis.Redis.from_url(redis_server.role_url(RedisRole.ADMIN))
    assert admin.exists(data_key_name(subject)) == 0
    assert vault.key_for_reading(subject) == KeyState(erased=True, key=None)
    assert vault.key_for_writing(subject) is None
    assert LetterOpener(settings).open(letter) is Closed.ERASED
    vault.close()

    done = _dlq(settings, "replay")
    assert done.returncode == 0, done.stderr
    assert "replayed 1 dead letters" in done.stdout and "1 records sent" in done.stdout, done.stdout
    assert "skipped 1 dead letters of erased cards: their records are not restored" in done.stdout, done.stdout
    # Five minutes on, both receipts are inside the drift allowance: only the kept card's is routed.
    Router(settings, name="router-2", clock=lambda: datetime.now(UTC) + timedelta(minutes=5)).run(max_idle=3)
    routed = read_all(settings, names.purchases_customer)
    assert [Purchase.from_avro(Codec().decode(m.value(), expect="purchase").value).receipt_id for m in routed] == [
        stays.receipt_id
    ]
    assert all(erased.encode() not in (m.key() or b"") for m in routed)
    assert sum(1 for m in read_all(settings, names.checkouts) if m.key() == erased.encode()) == 1  # never re-sent


def _load(settings: Settings) -> None:
    """Run the sink of ``settings`` until it has been idle for a moment."""
    sink = open_sink(settings)
    try:
        run_sink(settings, sink, idle_exit_after=3.0)
    finally:
        sink.close()


def test_one_record_rejected_by_two_consumers_is_two_letters_and_replayed_once(
    make_settings: Callable[..., Settings],
) -> None:
    """Issue 29, item 4: letters did not say which consumer wrote them, replay de-duplicated on the bytes
    alone: a letter of the same bytes on another topic was never replayed, and letters of this replay
    were reported as sent by an earlier replay that never ran."""
    settings = make_settings()
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    card = _card()
    junk = b"\x00\x00\x00\x00\x02 not a consent change"  # framed as consent_change v1, the body garbage
    client = RegisterClient(settings)
    client.send_raw(names.consents, card.encode(), junk)  # read by the router and by the sink
    client.send_raw(names.checkouts, card.encode(), junk)  # the same bytes on another topic: the router's
    client.flush()
    Router(settings, name="router-1").run(max_idle=3)
    _load(settings)

    letters = list(iter_dead_letters(settings))
    assert Counter((d.source_topic, d.consumer_group) for d in letters) == {
        (names.consents, settings.router.id): 1,
        (names.consents, DEFAULT_GROUP): 1,
        (names.checkouts, settings.router.id): 1,
    }
    assert len({(d.source_partition, d.source_offset) for d in letters if d.source_topic == names.consents}) == 1
    assert all(d.payload == "card" and card.encode() not in (d.sealed or b"") for d in letters)

    done = _dlq(settings, "replay")
    assert done.returncode == 0, done.stderr
    assert "replayed 3 dead letters" in done.stdout and "2 records sent" in done.stdout, done.stdout
    assert "earlier replay" not in done.stdout, done.stdout
    # Each topic got its record back once: the consents record once for both consumers that rejected it.
    assert [m.value() for m in read_all(settings, names.consents)] == [junk, junk]
    assert [m.value() for m in read_all(settings, names.checkouts)] == [junk, junk]

    # Still garbage: both consumers reject the copies again. The next replay sends nothing and says why.
    Router(settings, name="router-2").run(max_idle=3)
    _load(settings)
    assert len(list(iter_dead_letters(settings))) == 6
    again = replay_letters(settings)
    assert (again.replayed, again.sent, again.skipped_repeats, again.erased) == (0, 0, 3, 0)


def test_the_sink_waits_for_the_vault_and_writes_no_letter_unsealed_and_loses_none(
    make_settings: Callable[..., Settings],
) -> None:
    """Redis refusing the vault's login: the sink neither writes a letter without its seal nor moves past
    the record; once the vault answers, the letter is written once and the change behind it stored once."""
    settings = make_settings()
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    card = _card()
    junk = b"\x00\x00\x00\x00\x02 not a consent change"
    change = ConsentChange(card, datetime.now(UTC), True, True, "app")
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    for value in (junk, Codec().encode("consent_change", change.to_avro())):
        producer.produce(names.consents, key=card.encode(), value=value)
    assert producer.flush(30) == 0

    locked = settings.model_copy(update={"redis": {"dlq_vault_password": SecretStr("not-the-vault-password")}})
    stop = threading.Event()
    sink = open_sink(locked)
    worker = threading.Thread(target=run_sink, args=(locked, sink), kwargs={"stop": stop}, daemon=True)
    try:
        worker.start()
        time.sleep(8)  # several turns: each reads the batch, cannot seal its letter, reads it again
        assert worker.is_alive()  # waiting, not stopped for good
    finally:
        stop.set()
        worker.join(60)
        sink.close()
    assert read_all(settings, names.checkouts_dlq) == []
    with open_sink(settings) as sink:
        assert sink.committed_offsets(names.consents) == {}
        assert sink.warehouse.query("SELECT count(*) FROM consent_changes WHERE card_id = ?", (card,)) == [(0,)]

    _load(settings)
    _load(settings)  # and again: nothing read or written twice
    letters = list(iter_dead_letters(settings))
    assert [(d.consumer_group, d.payload, d.source_offset) for d in letters] == [(DEFAULT_GROUP, "card", 0)]
    with open_sink(settings) as sink:
        assert sink.warehouse.query("SELECT count(*) FROM consent_changes WHERE card_id = ?", (card,)) == [(1,)]
