"""Profile rebuild from the warehouse: events/s of ``profiles rebuild`` next to one round trip per receipt.

A seeded fleet's year of traffic (routed by the pure core; a third of the cards with product-data
consent, a tenth of those withdrawing it half-way) is written to a DuckDB warehouse through the
sink. Then, against the same Redis server in the same run:

* ``rebuild (pipelined)``  ``profile_rebuild.rebuild``: cards read from the warehouse 500 at a time,
                           their keys reset and their events applied in pipelines of about 5,000
                           scripts;
* ``one round trip per receipt``  the same events in the same order, each its own script call and
                           round trip (what a rebuild written with the live store's single-purchase
                           call would do); the warehouse is read the same way.

Both start from an empty database and end with the same profiles (checked). Also printed: the
share of the rebuild's time spent reading the warehouse.

Usage: ``python benchmarks/profile_rebuild.py [--customers N] [--receipts N] [--redis URL]``.
Without ``--redis`` a redis-server is started on a free port in a temporary data dir.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from receiptflow.config import Settings
from receiptflow.jobs.profile_rebuild import apply_events, card_pages, in_event_order, read_events, rebuild
from receiptflow.models import ConsentChange, ConsentState
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.redis_auth import RedisRole, connection_url
from receiptflow.sinks import DuckDBSink, SinkConsentRecord, SinkRecord
from receiptflow.stack import EmbeddedRedis
from receiptflow.stack.process import free_port


def fill_warehouse(sink: DuckDBSink, customers: int, receipts: int, seed: int) -> int:
    sim = Simulator(seed, stores=60, customers=customers)
    policy = load_policy()
    now = datetime.now(UTC)
    start = now - timedelta(days=365)
    batch: list[SinkRecord | SinkConsentRecord] = []
    written = 0
    for i, c in enumerate(sim.stream(receipts, start, receipts / (365 * 86_400))):
        p = process(c, policy, None, now).customer
        if p.card_id is not None:
            p = replace(p, consent=ConsentState(int(p.card_id[-3:]) % 3 == 0, True, True))
        batch.append(SinkRecord(p, "purchases.customer", 0, i))
        if len(batch) >= 5000:
            sink.write(batch)
            sink.flush()
            written += len(batch)
            batch = []
    cards = sorted(sim.truth.per_card)
    for i, card in enumerate(cards):
        if int(card[-3:]) % 3 == 0:
            batch.append(
                SinkConsentRecord(ConsentChange(card, start - timedelta(days=1), True, True), "consents", 0, i)
            )
            if i % 10 == 0:
                change = ConsentChange(card, start + timedelta(days=180), False, True)
                batch.append(SinkConsentRecord(change, "consents", 0, len(cards) + i))
    sink.write(batch)
    sink.flush()
    return written + len(batch)


def one_by_one(sink: DuckDBSink, store: RedisProfileStore) -> int:
    n = 0
    for cards in card_pages(sink.warehouse, 500):
        per_card = read_events(sink.warehouse, cards[0], cards[-1])
        for card in cards:
            for e in in_event_order(per_card.get(card, ())):
                apply_events(store, [e])
                n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2010)
    parser.add_argument("--redis", help="Redis URL (default: start one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server: EmbeddedRedis | None = None
        url = admin_url = args.redis
        if url is None:
            settings = Settings(
                redis={"url": f"redis://127.0.0.1:{free_port()}/0"}, local={"data_dir": Path(tmp)}, metrics={"port": 0}
            )
            server = EmbeddedRedis(settings)
            server.up()
            # Rebuilt as `profiles rebuild` runs, with the writer's login; flushed by the administrator.
            url = connection_url(settings, RedisRole.WRITER)
            admin_url = connection_url(settings, RedisRole.ADMIN)
        salt = secrets.token_bytes(32)  # a benchmark of its own: no install secret to share
        sink = DuckDBSink(Path(tmp) / "warehouse.duckdb", erasure_salt=salt)
        sink.setup()
        try:
            records = fill_warehouse(sink, args.customers, args.receipts, args.seed)
            store = RedisProfileStore.from_url(url, erasure_salt=salt)
            client = redis.Redis.from_url(admin_url)

            client.flushdb()
            started = time.perf_counter()
            stats = rebuild(sink.warehouse, store)
            pipelined = time.perf_counter() - started
            cards = [card for page in card_pages(sink.warehouse, 500) for card in page]  # key names hold no card id
            rebuilt = store.get_many(cards)

            started = time.perf_counter()
            for page in card_pages(sink.warehouse, 500):
                read_events(sink.warehouse, page[0], page[-1])
            reading = time.perf_counter() - started

            client.flushdb()
            started = time.perf_counter()
            events = one_by_one(sink, store)
            single = time.perf_counter() - started
            assert store.get_many(cards) == rebuilt, "the two paths must give the same profiles"
        finally:
            sink.close()
            if server is not None:
                server.down()
    total = stats.purchases + stats.consent_changes
    print(f"{records} warehouse records, {stats.cards} cards, {events} events applied per path")
    print(f"{'path':<34} {'events/s':>10} {'vs one-by-one':>14}")
    print(f"{'rebuild (pipelined)':<34} {events / pipelined:>10,.0f} {single / pipelined:>13.1f}x")
    print(f"{'one round trip per receipt':<34} {events / single:>10,.0f} {1:>13.1f}x")
    print(f"rebuild: {stats.round_trips} round trips for {total} events; reading the warehouse took {reading:.2f}s")
    print(f"of its {pipelined:.2f}s ({reading / pipelined:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
