"""The linkage attack, performed on the real pipeline: no join hands a card the lines its chain withheld.

20,000 simulated checkouts (every chain, every receipt shape the simulator makes: sales and refunds,
deposits, discounts, voids, weighed goods; three days, every hour the stores are open, 30 stores)
go through the real router, aggregator and warehouse sink (PostgreSQL, with its roles). The
attacker then holds:

* every card-linked table, as the database owner: ``receipts`` and ``receipt_groups``;
* everything the analyst role can read, logged in as an analyst: every relation of ``analytics``;
* the ``purchases.analytics`` topic, read to its end.

Of the card-linked receipts of chains that keep less than every line against a card (product group
or receipt level at the time of sale), it counts those that some join pins to a single basket
(``tests/linkage.py``: every cell a receipt can be placed in by store, chain, day, hour, groups,
line count, refunds, and every remainder a parent minus its published children leaves). At most
1 % may be pinned.

The same attack is run on the old release of the same traffic -- the basket rows the router still
makes, which the warehouse published until the cells replaced them (read here from the internal
``purchases.baskets`` topic) -- and must pin most receipts: the attack works, the cells stop it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from receiptflow.cells import Cell
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.models import AnalyticsBasket, Granularity
from receiptflow.processors.aggregate.worker import Aggregator
from receiptflow.processors.router.worker import Router
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator
from receiptflow.sinks import open_sink, run_sink
from receiptflow.topics import TopicNames, create_topics

from ..linkage import Receipt, fraction, pinned_by_cells, pinned_by_rows
from .support import read_all
from .test_privacy import _login

MakeSettings = Callable[..., Settings]
CODEC = Codec()
N = 20_000
HELSINKI = ZoneInfo("Europe/Helsinki")


@pytest.fixture
def attacked(make_settings: MakeSettings, pg_database: str, tmp_path: Path) -> Settings:
    """20,000 checkouts of three days that are over, routed, aggregated and stored in PostgreSQL."""
    settings = make_settings(warehouse={"url": pg_database}, analytics_grace_seconds=60, analytics_idle_close_seconds=2)
    create_topics(settings)
    start = datetime.now(UTC) - timedelta(days=5)
    client = RegisterClient(settings)
    for c in Simulator(28, stores=30, customers=4_000).stream(N, start, rate=N / (3 * 86_400)):
        client.send(c)
    assert client.flush().acked == N
    Router(settings, name="attack-router").run(max_idle=5)
    Aggregator(settings, name="attack-aggregator").run(max_idle=6)
    with open_sink(settings) as sink:
        run_sink(settings, sink, idle_exit_after=5)
    return settings


def _card_receipts(owner_url: str) -> list[Receipt]:
    """The card-linked receipts of chains below ITEM, as the owner reads them from the warehouse."""
    with psycopg.connect(owner_url) as con:
        groups: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
        for rid, group, cents, lines in con.execute(
            "SELECT receipt_id, product_group, amount_cents, lines FROM receipt_groups"
        ):
            groups[rid][group] = (int(cents), int(lines))
        rows = con.execute(
            "SELECT receipt_id, chain, store_id, event_time, total_cents, deposit_cents, adjustment_cents, "
            "payment_method, granularity, receipt_kind FROM receipts "
            "WHERE card_id IS NOT NULL AND granularity <> %s",
            (Granularity.ITEM.value,),
        ).fetchall()
    out = []
    for rid, chain, store, at, total, deposit, adjustment, payment, granularity, kind in rows:
        kept = None if granularity == Granularity.RECEIPT.value else groups.get(rid, {})
        out.append(
            Receipt(
                chain,
                store,
                at.astimezone(HELSINKI),  # the simulator's stores are in Helsinki
                int(total),
                int(deposit),
                int(adjustment),
                payment,
                None if kept is None else sum(n for _, n in kept.values()),
                None if kept is None else {g: c for g, (c, _) in kept.items()},
                kind,
            )
        )
    return out


def _analyst_cells(owner_url: str) -> tuple[list[Cell], dict[str, int]]:
    """Every cell an analyst login reads, and the row count of every relation of ``analytics`` it can read."""
    role = f"attacker_{uuid.uuid4().hex[:8]}"
    url = _login(owner_url, role, "receiptflow_analyst")
    try:
        with psycopg.connect(url) as con:
            relations = [
                str(name)
                for (name,) in con.execute(
                    "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'analytics' AND c.relkind IN ('r', 'v', 'm') "
                    "AND has_table_privilege(c.oid, 'SELECT')"
                )
            ]
            readable = {
                name: int(con.execute(f"SELECT count(*) FROM analytics.{name}").fetchone()[0]) for name in relations
            }  # type: ignore[index]
            cols = [d for d in con.execute("SELECT * FROM analytics.cells LIMIT 0").description or []]
            names = [c.name for c in cols]
            cells = [
                Cell.from_avro(dict(zip(names, row, strict=True)))
                for row in con.execute("SELECT * FROM analytics.cells")
            ]
    finally:
        with psycopg.connect(owner_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")
    return cells, readable


def test_no_join_of_card_linked_tables_analyst_data_and_analytics_topic_pins_a_card_receipt(
    attacked: Settings, pg_database: str
) -> None:
    settings = attacked
    names = TopicNames(settings.kafka.topic_prefix)
    receipts = _card_receipts(pg_database)
    # Both kinds of chain below ITEM, sales and refunds, are attacked.
    assert {(r.groups is not None, r.receipt_kind) for r in receipts} >= {
        (True, "SALE"), (False, "SALE"), (True, "REFUND"), (False, "REFUND")
    }  # fmt: skip
    assert len(receipts) > 5_000

    stored, readable = _analyst_cells(pg_database)
    on_topic = [
        Cell.from_avro(CODEC.decode(m.value(), expect="analytics_cell").value)
        for m in read_all(settings, names.purchases_analytics)
    ]
    # The analyst reads the cells, exactly those on the topic, none under k.
    assert readable["cells"] == len(stored) == len(on_topic) > 1_000
    assert sorted(map(repr, stored)) == sorted(map(repr, on_topic))
    assert min(c.baskets for c in stored) >= settings.aggregate.k

    pinned_now = fraction(pinned_by_cells(receipts, stored + on_topic))
    old_rows = [
        AnalyticsBasket.from_avro(CODEC.decode(m.value(), expect="analytics_basket").value)
        for m in read_all(settings, names.analytics_baskets)
    ]
    pinned_before = fraction(pinned_by_rows(receipts, old_rows))
    print(
        f"\nlinkage attack on {len(receipts)} card-linked receipts below ITEM (of {N} checkouts): "
        f"old basket rows ({len(old_rows)}) pin {pinned_before:.1%}, the published cells ({len(stored)}) "
        f"pin {pinned_now:.2%}"
    )
    assert pinned_before > 0.5, "the attack must work on the old release (else it proves nothing)"
    assert pinned_now <= 0.01
