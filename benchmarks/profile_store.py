"""Profile store: Redis bytes per active card and profile updates/s next to a one-command-per-event baseline.

Every figure is measured against the same Redis server in the same process run, on the same
simulated purchases (a year of a seeded fleet's traffic routed by the pure core; a third of the
cards with product-data consent, so their profiles carry the product-derived fields too):

* ``one command per event (baseline)``  each purchase applied with its own script call and round
                                        trip, as a naive consumer would;
* ``pipelined batches of N``            ``RedisProfileStore.apply``: one pipelined round trip per
                                        batch (N = 100 and 1000);
* ``... + marketing projections``       the same with the cards' marketing projections kept, as the
                                        faust agent does (three round trips per batch).

Each path starts from an empty database, applies the same purchases in event-time order, then
the same purchases again (a full redelivery, which must change nothing); updates/s counts the
first pass, the median of ``--repeat`` runs is printed. Bytes per active card are Redis's own
``MEMORY USAGE`` of each card's keys (profile hash and dedup set) after the year, averaged, with
the largest card and the server's ``used_memory`` growth per card next to it.

Usage: ``python benchmarks/profile_store.py [--cards N] [--receipts N] [--redis URL]``.
Without ``--redis`` a redis-server is started on a free port in a temporary data dir and stopped
afterwards.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from receiptflow.config import Settings, redact_url
from receiptflow.models import ConsentState, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.fold import fold
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.redis_auth import RedisRole, connection_url
from receiptflow.stack import EmbeddedRedis
from receiptflow.stack.process import free_port


def purchases(customers: int, receipts: int, seed: int) -> list[Purchase]:
    sim = Simulator(seed, stores=60, customers=customers)
    policy = load_policy()
    now = datetime.now(UTC)
    start = now - timedelta(days=365)
    rate = receipts / (365 * 86_400)
    out = []
    for c in sim.stream(receipts, start, rate):
        p = process(c, policy, None, now).customer
        if p.card_id is not None:
            product = int(p.card_id[-3:]) % 3 == 0
            out.append(replace(p, consent=ConsentState(product, True, True)))
    return out


def baseline(store: RedisProfileStore, ps: list[Purchase]) -> float:
    start = time.perf_counter()
    for p in ps:
        store.apply([p])
    return time.perf_counter() - start


def batched(store: RedisProfileStore, ps: list[Purchase], size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(ps), size):
        store.apply(ps[i : i + size])
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", type=int, default=2000, help="simulated customers (most hold two cards)")
    parser.add_argument("--receipts", type=int, default=100_000, help="checkouts over the simulated year")
    parser.add_argument("--baseline-receipts", type=int, default=20_000, help="events the slow baseline applies")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the median is shown")
    parser.add_argument("--redis", help="use this Redis (its database is flushed!) instead of starting one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="receiptflow-bench-") as tmp:
        server: EmbeddedRedis | None = None
        if args.redis:
            url = admin_url = args.redis
        else:
            settings = Settings(
                redis={"url": f"redis://127.0.0.1:{free_port()}/0"}, local={"data_dir": Path(tmp)}, metrics={"port": 0}
            )
            server = EmbeddedRedis(settings)
            server.up()
            # The store as the profile agent runs it; flushing and INFO as the administrator.
            url = connection_url(settings, RedisRole.WRITER)
            admin_url = connection_url(settings, RedisRole.ADMIN)
        try:
            client = redis.Redis.from_url(url, decode_responses=True)
            admin = redis.Redis.from_url(admin_url, decode_responses=True)
            salt = secrets.token_bytes(32)
            store = RedisProfileStore(client, erasure_salt=salt)
            # The agent's store also keeps the cards' marketing projections (two more round trips a batch).
            projecting = RedisProfileStore(client, erasure_salt=salt, marketing_key=secrets.token_bytes(32))
            ps = purchases(args.cards, args.receipts, seed=42)
            cards = sorted({p.card_id for p in ps if p.card_id is not None})
            print(f"{len(ps)} carded purchases of {len(cards)} cards over 365 days, Redis {redact_url(url)}")

            runs: list[tuple[str, int, Callable[[], float]]] = [
                (
                    "one command per event (baseline)",
                    args.baseline_receipts,
                    lambda: baseline(store, ps[: args.baseline_receipts]),
                ),
                ("pipelined batches of 100", len(ps), lambda: batched(store, ps, 100)),
                ("pipelined batches of 1000", len(ps), lambda: batched(store, ps, 1000)),
                ("batches of 1000 + marketing projections", len(ps), lambda: batched(projecting, ps, 1000)),
            ]
            results: list[tuple[str, float]] = []
            for name, n, run in runs:
                rates = []
                for _ in range(args.repeat):
                    admin.flushdb()
                    rates.append(n / run())
                results.append((name, statistics.median(rates)))
            # The last run left the full year in Redis: a redelivery of everything must change nothing.
            before = store.get_many(cards[:200])
            again = store.apply_all(ps)
            if again.applied or store.get_many(cards[:200]) != before:
                raise SystemExit(f"redelivery changed profiles: {again}")
            expected = fold(ps, store.rules)
            if store.get_many(cards[:200]) != {c: expected[c] for c in cards[:200]}:
                raise SystemExit("Redis profiles differ from the pure fold")

            base = results[0][1]
            print(f"\n{'path':<36}{'updates/s':>12}{'vs baseline':>13}")
            for name, rate in results:
                print(f"{name:<36}{rate:>12,.0f}{rate / base:>12.1f}x")

            sizes = [store.memory_bytes(c) for c in cards]
            admin.flushdb()
            empty = int(admin.info("memory")["used_memory"])
            batched(store, ps, 1000)
            used = int(admin.info("memory")["used_memory"]) - empty
            fields = statistics.mean(int(client.hlen(store.keys_for(c).profile)) for c in cards[:500])
            print("\nRedis bytes per active card (MEMORY USAGE of hash + dedup set):")
            print(
                f"  mean {statistics.mean(sizes):,.0f}, median {statistics.median(sizes):,.0f}, "
                f"max {max(sizes):,} (target <= 2,048)"
            )
            print(
                f"used_memory growth per card: {used / len(cards):,.0f} bytes; mean hash fields per card {fields:.0f}"
            )
            print(f"visits per card in the year: mean {len(ps) / len(cards):.1f}")
        finally:
            if server is not None:
                server.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
