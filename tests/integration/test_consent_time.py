"""Mis-clocked and forged consent times on the real broker, Redis and warehouse.

Card A: a grant dated tomorrow, then the card holder's withdrawal dated now. Card B: a grant dated
eight minutes ahead (inside the registers' clock drift, so it is accepted), then a withdrawal dated
now, and a purchase dated nine minutes ahead (inside the drift as well) after the grant's date.
Card C: a grant dated 1970. The withdrawals keep e-mail marketing on, so every receipt reaches
``purchases.marketing`` (at product-group level when product data is withdrawn): the check that no
product data got there is never vacuous.

Every reader must end withdrawn (A, B) or with no consent at all (C): the router, the profile store,
``profiles rebuild`` and the page. A's grant is dead-lettered as ``future_event_time`` and C's as
``absurd_event_time`` by each reader of the topic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from receiptflow.config import Settings
from receiptflow.consent_codec import WrittenConsent
from receiptflow.jobs.looks import Looker
from receiptflow.jobs.profile_rebuild import rebuild
from receiptflow.jobs.subject import export_card
from receiptflow.kafka_auth import KafkaPrincipal, as_principal
from receiptflow.models import Checkout, CheckoutLine, ConsentChange, PaymentMethod
from receiptflow.processors.profiles.fold import fold
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.producers.client import RegisterClient
from receiptflow.redis_auth import RedisRole
from receiptflow.sinks import open_sink, run_sink
from receiptflow.topics import TopicNames, create_topics
from receiptflow.web.data import Backend

from .conftest import RedisServer
from .support import CODEC, env_for, opened_letters, read_all, stop
from .test_router import _purchases, _wait_caught_up

CHAIN = "K_CITYMARKET"  # keeps product-level lines: product data is there to leak
A, B, C = "6390220000001", "6390220000002", "6390220000003"
REBUILD_DB = 15  # a Redis database of this test's own for the rebuilt profiles (the default Redis has 16)


def _checkout(card: str, when: datetime) -> Checkout:
    lines = (
        CheckoutLine(1, "6410100000000", "dairy", 2.0, 129, 258),
        CheckoutLine(2, "6410103779194", "bread", 1.0, 349, 349),
    )
    return Checkout(f"ORD-{card}", CHAIN, "K-0001", "3", card, when, PaymentMethod.CARD, 607, lines=lines)


def _send(settings: Settings, now: datetime) -> None:
    """The consent changes in the order of the scenario (one producer: A's grant is written before its
    withdrawal), then one purchase per card."""
    client = RegisterClient(as_principal(settings, KafkaPrincipal.CONSENT_WRITER))  # as the registers' app writes
    for change in (
        ConsentChange(A, now + timedelta(days=1), True, True, channel="store", text_version="2026-01"),
        ConsentChange(B, now + timedelta(minutes=8), True, True, channel="store", text_version="2026-01"),
        ConsentChange(C, datetime(1970, 1, 2, tzinfo=UTC), True, True, channel="store", text_version="2026-01"),
    ):
        client.send_consent(change)
    assert client.flush(60).failed == 0
    time.sleep(0.2)  # the withdrawals are appended in later milliseconds than the grants
    for card in (A, B):
        client.send_consent(ConsentChange(card, now, False, True, channel="app", text_version="2026-02"))
    assert client.flush(60).failed == 0
    time.sleep(0.2)
    registers = RegisterClient(as_principal(settings, KafkaPrincipal.REGISTERS))  # checkouts are the registers'
    for card, when in ((A, now + timedelta(seconds=1)), (B, now + timedelta(minutes=9)), (C, now)):
        registers.send(_checkout(card, when))
    assert registers.flush(60).failed == 0


def _wait_for_profiles(store: RedisProfileStore, proc: subprocess.Popen[bytes], settings: Settings) -> None:
    deadline = time.monotonic() + 120
    while True:
        got = store.get_many([A, B, C])
        if all(c in got and got[c].visits == 1 for c in (A, B, C)) and all(got[c].consent for c in (A, B)):
            return
        assert proc.poll() is None, f"processor exited with {proc.returncode}; see {settings.local.data_dir}"
        assert time.monotonic() < deadline, f"profiles not complete after 120 s: {got}"
        time.sleep(0.25)


def _consent_letters(settings: Settings) -> dict[str, set[tuple[str, str]]]:
    """The dead letters of ``consents`` records: card -> {(reason, processor)}."""
    names = TopicNames(settings.kafka.topic_prefix)
    out: dict[str, set[tuple[str, str]]] = {}
    for letter in opened_letters(settings):  # sealed: opened as `dlq replay` opens them
        if letter.source_topic == names.consents and letter.original_key is not None:
            out.setdefault(letter.original_key.decode(), set()).add((letter.reason, letter.processor))
    return out


def test_a_future_grant_never_outranks_a_later_withdrawal_and_1970_is_refused(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> None:
    settings = make_settings(kafka={"topic_partitions": 3})
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    now = datetime.now(UTC).replace(microsecond=0)
    store = RedisProfileStore.from_settings(settings)
    store.client.delete(*[k for card in (A, B, C) for k in store.keys_for(card).data])

    _send(settings, now)
    settings.local.data_dir.mkdir(parents=True, exist_ok=True)
    log = settings.local.data_dir / "process.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "process"],
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_caught_up(settings, [proc])
        _wait_for_profiles(store, proc, settings)
        time.sleep(1.5)  # anything still in flight would show now
    finally:
        stop(proc)

    # The router: no product data reached marketing, every purchase routed withdrawn (C: the default).
    customer = {p.card_id: p for p in _purchases(settings, names.purchases_customer)}
    assert {c: customer[c].consent.product_data_marketing for c in (A, B, C)} == dict.fromkeys((A, B, C), False)
    marketing = {p.card_id: p for p in _purchases(settings, names.purchases_marketing)}
    assert set(marketing) == {A, B}, "A and B kept e-mail marketing: their receipts are there at group level"
    assert not any(p.items or p.consent.product_data_marketing for p in marketing.values())

    # The profile store: withdrawn, no product data; C has no consent recorded at all.
    live = store.get_many([A, B, C])
    assert {c: live[c].consent.product_data for c in (A, B)} == {A: False, B: False}  # type: ignore[union-attr]
    assert live[C].consent is None
    assert not any(live[c].has_product_data() for c in (A, B, C))

    # Dead letters: each reader that saw the records refused them, with the reason.
    sink = open_sink(settings)
    try:
        run_sink(settings, sink, idle_exit_after=4.0)
        rows = sink.warehouse.query(
            "SELECT card_id, product_data_marketing FROM consent_changes ORDER BY card_id, appended_at, source_offset"
        )
        provenance = sink.warehouse.query(
            "SELECT principal, channel, text_version FROM consent_changes WHERE card_id = ? "
            "ORDER BY appended_at, source_offset",
            (B,),
        )
        rebuilt_store = _empty_store(redis_server)
        rebuild(sink.warehouse, rebuilt_store)
    finally:
        sink.close()
    letters = _consent_letters(settings)
    assert {reason for reason, _ in letters[A]} == {"future_event_time"}
    assert {reason for reason, _ in letters[C]} == {"absurd_event_time"}
    for card in (A, C):
        assert len({processor for _, processor in letters[card]}) == 3, letters[card]  # router, profiles, sink
    assert B not in letters

    # The warehouse kept B's grant (inside the drift) and both withdrawals, with their provenance.
    assert [(str(c), bool(p)) for c, p in rows] == [(A, False), (B, True), (B, False)]
    assert [tuple(r) for r in provenance] == [
        ("consent-writer", "store", "2026-01"),
        ("consent-writer", "app", "2026-02"),
    ]

    # `profiles rebuild`: withdrawn as well.
    rebuilt = rebuilt_store.get_many([A, B, C])
    assert {c: rebuilt[c].consent.product_data for c in (A, B)} == {A: False, B: False}  # type: ignore[union-attr]
    assert rebuilt[C].consent is None

    # The page: the warehouse's newest consent and the profile it shows.
    backend = Backend(settings)
    for card in (A, B):
        facts = backend.warehouse_facts(card)
        assert facts is not None and facts["consent"]["product_data_marketing"] is False, facts
        page = backend.customer(card)
        assert page is not None and page.profile.consent is not None and not page.profile.consent.product_data
    facts_c = backend.warehouse_facts(C)
    assert facts_c is not None and facts_c["consent"] is None

    # The export reads the history as a card holder would: when, what, by whom and which text.
    history = export_card(settings, B, who=Looker("dpo", "the card holder's request", "cli", ""))["consent_history"]
    assert [(h["channel"], h["text_version"], h["principal"]) for h in history] == [
        ("store", "2026-01", "consent-writer"),
        ("app", "2026-02", "consent-writer"),
    ]


def _empty_store(server: RedisServer) -> RedisProfileStore:
    redis.Redis.from_url(server.role_url(RedisRole.ADMIN, REBUILD_DB)).flushdb()
    return RedisProfileStore.from_url(server.role_url(RedisRole.WRITER, REBUILD_DB), erasure_salt=b"consent-time-salt")


def test_the_profile_script_keeps_the_newest_written_change_whatever_order_it_is_given(
    redis_server: RedisServer,
) -> None:
    """The Lua script against the pure fold: a withdrawal written after a grant dated tomorrow, applied in
    either order, and a profile recorded before the append time was kept (no ``ca``: its event time counts)."""
    store = _empty_store(redis_server)
    now = datetime.now(UTC).replace(microsecond=0)
    written = int(now.timestamp() * 1000)
    grant = WrittenConsent(ConsentChange(A, now + timedelta(days=1), True, True), written)
    withdrawal = WrittenConsent(ConsentChange(A, now, False, True), written + 1)
    for order in ((grant, withdrawal), (withdrawal, grant)):
        store.client.delete(*store.keys_for(A).data)
        store.apply_consents(order)
        got = store.get(A)
        assert got is not None and got.consent is not None
        assert not got.consent.product_data and got.consent.written_ms == written + 1
        assert got == fold(order)[A]
    # One producer batch, one append time: the later offset is the later word, in either order.
    regrant = WrittenConsent(ConsentChange(A, now, True, True), written + 1, offset=8)
    for order in ((withdrawal, regrant), (regrant, withdrawal)):
        store.client.delete(*store.keys_for(A).data)
        store.apply_consents(order)
        got = store.get(A)
        assert got is not None and got.consent is not None and got.consent.product_data
        assert got == fold(order)[A]
    # A profile of before: its consent recorded with the event time only. A change written before that
    # time changes nothing; one written after it does.
    key = store.keys_for(B).profile
    store.client.delete(*store.keys_for(B).data)
    store.client.hset(key, mapping={"c": "1", "ct": written})
    store.apply_consents([WrittenConsent(ConsentChange(B, now - timedelta(hours=1), False, True), written - 1)])
    assert store.client.hget(key, "c") == "1"
    store.apply_consents([WrittenConsent(ConsentChange(B, now - timedelta(hours=1), False, True), written + 5)])
    assert store.client.hget(key, "c") == "0"


def test_produce_kind_consent_stamps_its_principal_takes_the_text_version_and_refuses_bad_times(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    create_topics(settings)
    now = datetime.now(UTC).replace(microsecond=0)

    def line(card: str, at: datetime, **more: str) -> str:
        doc = {"card_id": card, "event_time": at.isoformat(), "product_data_marketing": True}
        return json.dumps({**doc, "electronic_marketing": False, "source": "app", **more})

    path = tmp_path / "consents.jsonl"
    lines = [
        line(A, now),  # channel from its source, text version from the option
        line(B, now, channel="customer_service", text_version="cs-7", principal="someone-else"),
        line(C, now + timedelta(days=1)),  # dated tomorrow
        line(C, datetime(1970, 1, 2, tzinfo=UTC)),
        line(C, now, channel="fax"),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", "produce", str(path), "--kind", "consent", "--text-version", "2026-03"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for n, reason in ((3, "future_event_time"), (4, "absurd_event_time"), (5, "unknown_channel")):
        assert f"line {n}: rejected ({reason})" in done.stderr, done.stderr
    assert "line 2: warning: not in the contract, not sent: principal" in done.stderr
    records = read_all(settings, names_of(settings).consents)
    sent = sorted((CODEC.decode(m.value(), expect="consent_change") for m in records), key=lambda d: d.value["card_id"])
    assert [(d.writer_version, d.value["card_id"]) for d in sent] == [(2, A), (2, B)]
    proof = [(d.value["principal"], d.value["channel"], d.value["text_version"]) for d in sent]
    # produce --kind consent logs in as the consent writers' principal (only they may write consents).
    assert proof == [("consent-writer", "app", "2026-03"), ("consent-writer", "customer_service", "cs-7")]


def names_of(settings: Settings) -> TopicNames:
    return TopicNames(settings.kafka.topic_prefix)
