"""Rebuilding profiles from the warehouse, and monthly segments, on real servers.

Simulated traffic (sign-up consents, then sales over three weeks with repeated deliveries, late
deliveries and consent changes: withdrawals and re-grants) runs through the real pipeline — the
processor as its own process (router + faust profile agent) and the warehouse sink — into Redis and
DuckDB (and PostgreSQL). ``receiptflow profiles rebuild`` then rebuilds every profile from the
warehouse into an empty Redis database, and each rebuilt profile must equal the live one field for
field: visits, spend, first/last, day buckets, points, product-derived fields, the consent mark and
the dedup set. ``receiptflow segments run`` stores the month's segments in the live profiles, the
same on a second run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.jobs.profile_rebuild import rebuild
from receiptflow.jobs.segments import assign, load_model, read_month, store_segments
from receiptflow.metrics import Metrics
from receiptflow.models import ConsentChange
from receiptflow.processors.profiles.fold import Profile
from receiptflow.processors.profiles.keys import SEGMENT_FIELDS
from receiptflow.processors.profiles.marketing import projection_key
from receiptflow.processors.profiles.projections import MarketingReader
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.profiles.views import render
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator, Traffic
from receiptflow.producers.truth import GroundTruth
from receiptflow.redis_auth import RedisRole
from receiptflow.sinks import DEFAULT_GROUP, open_sink, run_sink, warehouse_counts
from receiptflow.topics import create_topics

from .conftest import KafkaServer, RedisServer
from .support import env_for, stop

SALES = 1500
SPAN = timedelta(days=21)


@dataclass
class Pipeline:
    settings: Settings
    truth: GroundTruth
    store: RedisProfileStore
    cards: list[str]  # every card with a purchase or a consent change
    live: dict[str, Profile]
    server: RedisServer

    def cli(self, *args: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "receiptflow", *args],
            env=env_for(settings or self.settings),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


SALT = b"test-erasure-salt-0123456789"  # the salt of the stores these tests write in-process


def _other_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _newest_consents(truth: GroundTruth) -> dict[str, bool]:
    newest: dict[str, tuple[datetime, bool]] = {}
    for c in truth.consents:
        at, product = datetime.fromisoformat(str(c["event_time"])), bool(c["product_data_marketing"])
        old = newest.get(str(c["card_id"]))
        # Newest by event time; at the same time the stricter one (as the profile records it).
        if old is None or at > old[0] or (at == old[0] and not product):
            newest[str(c["card_id"])] = (at, product)
    return {card: product for card, (_, product) in newest.items()}


def _wait(predicate: object, timeout: float, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if proc.poll() is not None:
            pytest.fail(f"processor exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; processor log tail:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def pipeline(
    kafka_server: KafkaServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    run = uuid.uuid4().hex[:8]
    data = tmp_path_factory.mktemp("rebuild")
    # A Redis database of its own: the store's totals below count every profile in the database,
    # and other tests of the session write profiles into the default one.
    _flush(redis_server, 6)
    settings = Settings(
        **redis_server.role_settings(),
        **kafka_server.auth_settings(),
        kafka={"bootstrap_servers": kafka_server.bootstrap, "topic_prefix": f"rebuild-{run}.", "topic_partitions": 3},
        redis={"url": _other_db(redis_server.url, 6)},
        local={"data_dir": data / "data"},
        warehouse={"url": f"duckdb:///{data / 'warehouse.duckdb'}"},
        router={"id": f"rebuild-{run}"},
        metrics={"port": 0},
    )
    create_topics(settings)
    settings.local.data_dir.mkdir(parents=True, exist_ok=True)
    sim = Simulator(6006, stores=30, customers=120)
    codec = Codec()
    traffic = Traffic(
        sim,
        lambda c: codec.encode("checkout", c.to_avro()),
        dup_rate=0.05,
        consent_change_rate=0.04,
        out_of_order_rate=0.05,
    )
    store = RedisProfileStore.from_settings(settings)
    every_card = sorted({card for c in sim.customers for _, card in c.cards})
    store.client.delete(*[k for card in every_card for k in store.keys_for(card).data])

    log = settings.local.data_dir / "processor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "process"],
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client = RegisterClient(settings)
        start = datetime.now(UTC) - SPAN - timedelta(hours=1)
        # Sign-up consents first, recorded before the sales start (as in production: long before).
        for e in traffic.initial_consents(start - timedelta(days=1)):
            assert e.consent is not None
            client.send_consent(e.consent)
        assert client.flush().failed == 0

        def consents_recorded() -> bool:
            want = _newest_consents(sim.truth)
            got = store.get_many(sorted(want))
            return all(c in got and got[c].consent and got[c].consent.product_data == p for c, p in want.items())  # type: ignore[union-attr]

        _wait(consents_recorded, 120, proc, log, "the sign-up consents in Redis")
        for e in traffic.emissions(SALES, start, SALES / SPAN.total_seconds()):
            if e.checkout is not None:
                client.send(e.checkout)
            elif e.consent is not None:
                client.send_consent(e.consent)
        stats = client.flush()
        assert stats.failed == 0
        truth = sim.truth
        carded = (sum(v[0] for v in truth.per_card.values()), sum(v[1] for v in truth.per_card.values()))
        _wait(lambda: store.totals()[1:] == carded, 180, proc, log, "every visit and refund in Redis")
        _wait(consents_recorded, 60, proc, log, "every consent change in Redis")
        time.sleep(1.5)  # anything still in flight would show now
    finally:
        stop(proc)

    # The warehouse sink loads the three topics (and stops when idle).
    sink = open_sink(settings)
    try:
        run_sink(settings, sink, idle_exit_after=4.0)
        counts = warehouse_counts(sink.warehouse)
        (changes,) = sink.warehouse.query("SELECT count(*) FROM consent_changes")[0]
    finally:
        sink.close()
    assert (counts["receipts"], counts["total_cents"]) == (truth.receipts, truth.spend_cents)
    assert int(changes) == len(truth.consents)

    cards = sorted(set(truth.per_card) | {str(c["card_id"]) for c in truth.consents})
    live = store.get_many(cards)
    assert store.totals()[1:] == carded
    assert {c: (p.visits, p.spend_cents) for c, p in live.items() if c in truth.per_card} == {
        c: (v[0], v[1]) for c, v in truth.per_card.items()
    }
    yield Pipeline(settings, truth, store, cards, live, redis_server)


def _flush(server: RedisServer, db: int) -> None:
    """Empty database ``db`` (test setup: an administrator's job, no role may)."""
    admin = redis.Redis.from_url(server.role_url(RedisRole.ADMIN, db))
    try:
        admin.flushdb()
    finally:
        admin.close()


def _empty_store_at(server: RedisServer, db: int) -> RedisProfileStore:
    """An empty database ``db``, written as the profile writer."""
    _flush(server, db)
    return RedisProfileStore.from_url(server.role_url(RedisRole.WRITER, db), erasure_salt=SALT)


def _empty_store(pipeline: Pipeline, db: int) -> RedisProfileStore:
    return _empty_store_at(pipeline.server, db)


def _assert_equal_profiles(rebuilt: dict[str, Profile], live: dict[str, Profile]) -> None:
    assert sorted(rebuilt) == sorted(live)
    differing = [c for c in live if rebuilt[c] != live[c]]
    assert not differing, f"{len(differing)} profiles differ, e.g. {live[differing[0]]} != {rebuilt[differing[0]]}"


def test_rebuild_from_the_warehouse_equals_the_live_profiles(pipeline: Pipeline) -> None:
    live = pipeline.live
    # The traffic exercised what a profile holds: product data under consent, withdrawals, buckets.
    assert sum(1 for p in live.values() if p.has_product_data()) >= 10
    assert sum(1 for p in live.values() if p.nutrition) >= 10
    withdrawn = [p for p in live.values() if p.consent is not None and not p.consent.product_data and p.visits]
    assert len(withdrawn) >= 10 and not any(p.has_product_data() for p in withdrawn)
    assert any(len(p.days) >= 5 for p in live.values())
    assert any(not p.visits for p in live.values())  # known only from a consent change

    target = _other_db(pipeline.settings.redis.url, 7)
    _flush(pipeline.server, 7)
    textfile = pipeline.settings.local.data_dir / "metrics" / "rebuild.prom"
    with_textfile = pipeline.settings.model_copy(update={"metrics": {"textfile": textfile}})
    result = pipeline.cli(
        "profiles", "rebuild", "--redis-url", target, "--cards-per-batch", "50", settings=with_textfile
    )
    assert result.returncode == 0, result.stderr
    assert f"rebuilt {len(pipeline.cards)} profiles" in result.stdout
    assert "purchases and consent changes" in result.stderr, result.stderr  # the progress display
    # A batch command leaves its metrics for a textfile collector, since nothing scrapes it live.
    assert f"receiptflow_profile_rebuild_cards_total {float(len(pipeline.cards))}" in textfile.read_text()
    # Keys are named by the cards' salted hashes: read with the install's salt, as the CLI wrote them.
    rebuilt = RedisProfileStore.from_url(
        pipeline.server.role_url(RedisRole.WRITER, 7), erasure_salt=pipeline.store.salt
    ).get_many(pipeline.cards)
    _assert_equal_profiles(rebuilt, live)
    _assert_projections(pipeline, target)


def _assert_projections(pipeline: Pipeline, target: str) -> None:
    """The live faust agent and the rebuild wrote every card's marketing projection, the same, equal to
    the marketing view of the live profile; ``profiles project`` writes a missing one again."""
    now = datetime.now(UTC)
    live_reader = MarketingReader.from_settings(pipeline.settings)
    rebuilt_reader = MarketingReader.from_settings(pipeline.settings.model_copy(update={"redis": {"url": target}}))
    views = {c: live_reader.view(c) for c in pipeline.cards}
    assert views == {c: render(p, "marketing", now) for c, p in pipeline.live.items()}
    assert {c: rebuilt_reader.view(c) for c in pipeline.cards} == views
    withdrawn = [c for c, p in pipeline.live.items() if p.consent is not None and not p.consent.product_data]
    assert withdrawn and not [c for c in withdrawn if [k for k in live_reader.fields(c) if k.startswith("P")]]
    assert sum(1 for v in views.values() if v and v.get("product_group_mix")) >= 10

    # A lost projection comes back with `profiles project` (the daily refresh).
    gone = pipeline.cards[0]
    admin = redis.Redis.from_url(pipeline.server.role_url(RedisRole.ADMIN, 7))
    try:
        assert admin.delete(projection_key(rebuilt_reader.marketing_hash(gone))) == 1
    finally:
        admin.close()
    assert rebuilt_reader.view(gone) is None
    result = pipeline.cli("profiles", "project", "--redis-url", target)
    assert result.returncode == 0, result.stderr
    assert f"rewrote {len(pipeline.cards)} marketing projections" in result.stdout
    assert rebuilt_reader.view(gone) == views[gone]


def test_rebuild_batches_and_a_second_rebuild_resets_what_it_rebuilds(pipeline: Pipeline) -> None:
    target = _empty_store(pipeline, 8)
    sink = open_sink(pipeline.settings)
    try:
        started = time.perf_counter()
        metrics = Metrics()
        first = rebuild(sink.warehouse, target, metrics=metrics)
        elapsed = time.perf_counter() - started
        # Stale data in the target is replaced, not added to: the rebuild resets each card it writes.
        target.client.hset(target.keys_for(pipeline.cards[0]).profile, "v", 999)
        second = rebuild(sink.warehouse, target, cards_per_batch=40, events_per_round_trip=300)
    finally:
        sink.close()
    events = first.purchases + first.consent_changes
    print(f"rebuild: {first.cards} cards, {events} events in {elapsed:.2f}s, {first.round_trips} round trips")
    assert first.purchases == pipeline.truth.receipts - pipeline.truth.anonymous
    assert (first.duplicates, first.late, first.erased) == (0, 0, 0)
    assert first.round_trips <= 2 and second.round_trips < second.purchases / 100
    assert (second.purchases, second.cards) == (first.purchases, first.cards)
    assert metrics.registry.get_sample_value("receiptflow_profile_rebuild_cards_total") == len(pipeline.cards)
    _assert_equal_profiles(target.get_many(pipeline.cards), pipeline.live)


def test_rebuild_from_postgresql_equals_the_live_profiles(pipeline: Pipeline, pg_database: str) -> None:
    pg = pipeline.settings.model_copy(update={"warehouse": {"url": pg_database}})
    sink = open_sink(pg, group_id=f"{DEFAULT_GROUP}-rebuild-test")
    try:
        run_sink(pg, sink, idle_exit_after=4.0)
        target = _empty_store(pipeline, 9)
        stats = rebuild(sink.warehouse, target, cards_per_batch=64)
    finally:
        sink.close()
    assert stats.purchases == pipeline.truth.receipts - pipeline.truth.anonymous
    _assert_equal_profiles(target.get_many(pipeline.cards), pipeline.live)


def _stored_segments(pipeline: Pipeline) -> dict[str, dict[str, str]]:
    return {c: pipeline.store.segments(c) for c in pipeline.cards}


def test_segments_are_stored_and_the_same_on_a_second_run(pipeline: Pipeline) -> None:
    sink = open_sink(pipeline.settings)
    try:
        (month,) = sink.warehouse.query(
            "SELECT strftime(event_local_date, '%Y-%m') AS m FROM receipts GROUP BY m ORDER BY count(*) DESC LIMIT 1"
        )[0]
        aggregates = read_month(sink.warehouse, str(month))
    finally:
        sink.close()
    want = assign(aggregates, load_model())
    assert len(want) >= 50

    first = pipeline.cli("segments", "run", "--month", str(month))
    assert first.returncode == 0, first.stderr
    # The report charts the classes: each visits class with its count of cards.
    report = " ".join(first.stdout.split())
    assert f"{month}: {len(want)} active cards" in report and "visits class" in report and "money class" in report
    for name, n in Counter(a.visits_class for a in want.values()).items():
        assert re.search(rf"{name} \(from \d+ receipts\) {n} ", report), (name, n, report)
    # A month without receipts says which months have them.
    empty = pipeline.cli("segments", "run", "--month", "1999-01")
    assert empty.returncode == 0, empty.stderr
    assert "no receipts in 1999-01" in empty.stdout and f"holds receipts for {month} (" in empty.stdout
    stored = _stored_segments(pipeline)
    for card, a in want.items():
        got = stored[card]
        assert got["model"] == "archetypes-v1" and got["month"] == month
        assert (got["visits_class"], got["money_class"]) == (a.visits_class, a.money_class)
        assert got.get("grocery_segment") == a.grocery_segment
    with_segment = {c for c, a in want.items() if a.grocery_segment is not None}
    assert len(with_segment) >= 10 and len(want) - len(with_segment) >= 10
    # A card whose profile says product data may not be used holds no grocery segment.
    for card, profile in pipeline.store.get_many(sorted(want)).items():
        if profile.consent is not None and not profile.consent.product_data:
            stored_fields = pipeline.store.client.hkeys(pipeline.store.keys_for(card).profile)
            assert SEGMENT_FIELDS["grocery_segment"] not in stored_fields
            assert card not in with_segment
    # Cards not active in the month are left alone.
    assert all(stored[c] == {} for c in pipeline.cards if c not in want)
    assert len({a.grocery_segment for a in want.values()} - {None}) >= 3

    textfile = pipeline.settings.local.data_dir / "metrics" / "segments.prom"
    with_textfile = pipeline.settings.model_copy(update={"metrics": {"textfile": textfile}})
    second = pipeline.cli("segments", "run", "--month", str(month), settings=with_textfile)
    assert second.returncode == 0, second.stderr
    assert _stored_segments(pipeline) == stored
    exported = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in textfile.read_text().splitlines()
        if line.startswith("receiptflow_segments_assigned_total{")
    }
    assert sum(exported.values()) == len(want)

    # Subject access shows them; the marketing view only while consent allows the grocery segment.
    card = sorted(with_segment)[0]
    exported = json.loads(pipeline.cli("export", card, "--as", "dpo", "--reason", "test").stdout)
    assert exported["profile"]["segments"] == stored[card]
    summary = pipeline.cli("export", card, "--as", "dpo", "--reason", "test").stderr
    assert f"card {card}: profile" in summary and " €" in summary and ("EET" in summary or "EEST" in summary)
    readable = pipeline.cli("profile", card)
    assert readable.returncode == 0 and " €" in readable.stdout and "spend_cents" not in readable.stdout
    marketing = json.loads(pipeline.cli("profile", card, "--view", "marketing", "--json").stdout)
    assert marketing["classes"]["grocery_segment"] == stored[card]["grocery_segment"]


def test_the_segment_script_checks_consent_erasure_and_the_profile_in_redis(redis_server: RedisServer) -> None:
    store = _empty_store_at(redis_server, 10)
    allowed, withdrawn, erased, unknown = "6390000000101", "6390000000102", "6390000000103", "6390000000104"
    for card, product in ((allowed, True), (withdrawn, False), (erased, True)):
        store.apply_consents([ConsentChange(card, datetime(2026, 11, 1, tzinfo=UTC), product, True)])
    # Erased with the support login: the card's marker (which the script checks) and the audit list.
    support = RedisProfileStore.from_url(redis_server.role_url(RedisRole.SUPPORT, 10), erasure_salt=SALT)
    assert support.record_erased([store.erased_hash(erased)]) == 1
    values = {"model": "archetypes-v1", "month": "2026-11", "visits_class": "regular", "money_class": "50_150"}
    rows = [(c, {**values, "grocery_segment": "seafood"}) for c in (allowed, withdrawn, erased, unknown)]
    counts = store_segments(store, rows)
    assert counts == {"no_profile": 1, "stored": 1, "stored_without_segment": 1, "erased": 1}
    assert store.segments(allowed) == rows[0][1]
    assert store.segments(withdrawn) == values  # the recorded consent says no: no grocery segment
    assert store.client.exists(store.keys_for(unknown).profile) == 0
    # A later run without a grocery segment removes the stored one.
    assert store_segments(store, [(allowed, values)])["stored_without_segment"] == 1
    assert store.segments(allowed) == values
