"""The fault run (``make chaos``): the whole pipeline under kills and outages, then checked against the truth.

A broker and Redis of the test's own (``own_stack``), and the three consumers as real processes
(``process --role router``, ``process --role profiles``, ``sink run`` into DuckDB), each started
again by a supervisor thread whenever it dies. Registers sell seeded simulator traffic through a
durable outbox, paced in real time: sign-up consents, then sales with 10 % repeated deliveries,
1 % bad records on ``checkouts`` (the simulator's five kinds), consent flips, and 1 % corrupt records
on ``consents`` (raw bytes that are not a consent change, injected here: every 100th consent record).

While they sell (seeded random moments):

* the router and the sink are SIGKILLed, at least ``MIN_KILLS`` times in all;
* Redis is SIGKILLed, kept down ``REDIS_DOWN`` s and started again (same data dir: its AOF);
* the broker is SIGKILLed and kept down ``BROKER_DOWN`` s while the registers keep selling into
  their outbox, which must keep accepting and drain afterwards.

Then, with the kills stopped, everything catches up and is checked against the simulator's ground
truth: every accepted receipt in the warehouse exactly once (and every table equal to the truth);
every profile's visits and spend equal to the truth; each output topic, read committed, holding
each receipt once; the dead-letter topic holding exactly what was injected; no product data on
``purchases.marketing`` without consent.

How "the DLQ holds exactly what was injected" is counted: a bad checkout is read by the router only,
inside its transactions, so it must be dead-lettered exactly once -- one letter per injected record,
with the injected reason. A corrupt consent is read by three consumers (router, profile agent,
sink), and each dead-letters it (field ``processor`` says which). The router's letter is written in
its transaction (exactly once); the profile agent's and the sink's are written before their
position moves past the record, so a kill in between writes the same letter again (documented as at
least once, see ``receiptflow.dlq``). So letters are counted per distinct (reader, source topic,
partition, offset): each corrupt consent's position once per reader, nothing else; repeats of the
two at-least-once readers are reported, and the router may have none.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest

from receiptflow.codec import Codec
from receiptflow.models import AnalyticsBasket, Checkout, ConsentChange, Purchase
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.producers.outbox import Outbox
from receiptflow.producers.simulator import Emission, Simulator, Traffic
from receiptflow.sinks import DEFAULT_GROUP, open_sink
from receiptflow.stack import Stack
from receiptflow.stack.process import gone, wait_until
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, read_all
from .test_router import _basket_id, _consent_at, _consent_for_purchase, _lag
from .test_sink_crash import Sent, _assert_equal_to_the_truth

CODEC = Codec()
SEED = 15
SALES = 3000  # valid checkouts
SELL_RATE = 30.0  # checkouts per second, wall clock: about 100 s of selling
MIN_KILLS = 24  # SIGKILLs of the router and the sink together (the issue asks for 20)
REDIS_KILL_AT, REDIS_DOWN = 12.0, 8.0  # seconds after the start of selling; seconds down
BROKER_KILL_AT, BROKER_DOWN = 35.0, 30.0
CORRUPT_CONSENT_EVERY = 100  # 1 % of the records on `consents`
RUN_DEADLINE = 600.0  # the whole run, chaos and catching up, in seconds
RESTART_DELAY = 1.0  # as a service manager waits before a restart: no hot loop while a server is down
CORRUPT_CONSENTS = (
    b'{"card_id": "6390000000000000", "product_data_marketing": true}',  # JSON, not Avro
    b"\x00\x00\x00\x00\x02" + b"\xff" * 11,  # a framed-looking record that does not decode
    b"",  # empty
    b"\x00\x00\x00\x00",  # a truncated frame
)


@dataclass
class Worker:
    """One supervised consumer process."""

    role: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    out: IO[bytes] | None = None
    exited_at: float | None = None  # when the supervisor saw it dead


@dataclass
class Supervisor:
    """Keeps the three consumers running: a dead one is started again (its exit is counted)."""

    workers: dict[str, Worker]
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    paused: set[str] = field(default_factory=set)
    kills: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)  # "role:code" of exits not caused by our SIGKILL
    killed: set[int] = field(default_factory=set)  # pids we SIGKILLed
    timeline: list[tuple[int, str]] = field(default_factory=list)  # (wall clock ms, what happened)
    thread: threading.Thread | None = None

    def _start(self, w: Worker) -> None:
        w.out = w.out or w.log.open("ab")
        w.out.write(f"--- start at {time.monotonic():.1f}\n".encode())
        w.out.flush()
        w.proc = subprocess.Popen(w.argv, env=w.env, stdout=w.out, stderr=subprocess.STDOUT)
        w.started_at = time.monotonic()

    def start(self) -> None:
        with self.lock:
            for w in self.workers.values():
                self._start(w)
        self.thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            with self.lock:
                for role, w in self.workers.items():
                    if w.proc is None or role in self.paused or w.proc.poll() is None:
                        continue
                    if w.exited_at is None:
                        w.exited_at = time.monotonic()
                        if w.proc.pid not in self.killed:
                            self.exits[f"{role}:{w.proc.returncode}"] += 1
                    if time.monotonic() - w.exited_at < RESTART_DELAY:
                        continue
                    w.exited_at = None
                    self._start(w)
                    self.restarts[role] += 1

    def kill(self, role: str, min_age: float) -> bool:
        """SIGKILL ``role`` if it has run at least ``min_age`` s; True when it was killed."""
        with self.lock:
            w = self.workers[role]
            if w.proc is None or w.proc.poll() is not None or time.monotonic() - w.started_at < min_age:
                return False
            self.killed.add(w.proc.pid)
            w.proc.kill()
            w.proc.wait()
            self.kills[role] += 1
            self.timeline.append((_now_ms(), f"{role} SIGKILLed"))
            return True

    def terminate(self, role: str) -> None:
        """Stop ``role`` for good (SIGTERM, then SIGKILL after 30 s); the supervisor leaves it stopped."""
        with self.lock:
            self.paused.add(role)
            w = self.workers[role]
        if w.proc is not None and w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
            try:
                w.proc.wait(30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    def alive(self, role: str) -> bool:
        w = self.workers[role]
        return w.proc is not None and w.proc.poll() is None

    def shutdown(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
        for role in self.workers:
            self.terminate(role)
        for w in self.workers.values():
            if w.out is not None:
                w.out.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _log_tails(workers: dict[str, Worker]) -> str:
    return "\n".join(f"--- {w.role} log tail:\n{w.log.read_text(errors='replace')[-2500:]}" for w in workers.values())


def _wait(predicate: Callable[[], bool], timeout: float, what: str, workers: dict[str, Worker]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{_log_tails(workers)}")
        time.sleep(0.5)


@dataclass
class Plan:
    """The traffic, decided before the run (seeded): what each register sends, in order."""

    sim: Simulator
    signups: list[Emission]
    sales: list[Emission]  # checkouts, duplicates, bad checkouts, consent flips, corrupt consents


def _plan(names: TopicNames) -> Plan:
    sim = Simulator(SEED, stores=30, customers=200)
    traffic = Traffic(
        sim,
        lambda c: CODEC.encode("checkout", c.to_avro()),
        dup_rate=0.10,
        bad_rate=0.01,
        consent_change_rate=0.05,
    )
    start = datetime.now(UTC) - timedelta(hours=3)
    signups = list(traffic.initial_consents(start - timedelta(days=1)))
    # Event times 0.5 s apart: the 3,000 sales span 100 minutes of the last three hours.
    emitted = list(traffic.emissions(SALES, start, rate=0.5))
    flips = sum(1 for e in emitted if e.kind == "consent")
    # 1 % of the records on `consents` corrupt, spread evenly over the flips (after every `every`-th).
    corrupt = max(4, round((len(signups) + flips) / (CORRUPT_CONSENT_EVERY - 1)))
    every = max(1, flips // corrupt)
    rng = random.Random(SEED)
    sales: list[Emission] = []
    seen_flips = n = 0
    for e in emitted:
        sales.append(e)
        if e.kind == "consent":
            seen_flips += 1
            if seen_flips % every == 0 and n < corrupt:
                n += 1
                raw = rng.choice(CORRUPT_CONSENTS)
                sales.append(Emission("corrupt-consent", raw=raw, label=f"corrupt-consent-{n:04d}"))
    return Plan(sim, signups, sales)


def _sell(outbox: Outbox, names: TopicNames, plan: Plan, accepted: list[float], done: threading.Event) -> None:
    """The registers: every emission into the outbox, checkouts paced at SELL_RATE (wall clock)."""
    try:
        for e in plan.signups:
            assert e.consent is not None
            outbox.accept_consent(e.consent)
        begin = time.monotonic()
        sold = 0
        for e in plan.sales:
            if e.kind == "checkout" and e.checkout is not None:
                ahead = begin + sold / SELL_RATE - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                outbox.accept(e.checkout)
                sold += 1
                accepted.append(time.monotonic())
            elif e.kind == "duplicate" and e.checkout is not None:
                outbox.accept(e.checkout)
            elif e.kind == "consent" and e.consent is not None:
                outbox.accept_consent(e.consent)
            elif e.kind == "corrupt-consent" and e.raw is not None:
                outbox.accept_raw(names.consents, e.label.encode(), e.raw, e.label)
            elif e.raw is not None:
                outbox.accept_raw(names.checkouts, e.label.encode(), e.raw, e.label)
    finally:
        done.set()


def _decoded(change: ConsentChange) -> ConsentChange:
    """A consent change as the pipeline sees it: through the contract (millisecond times)."""
    return ConsentChange.from_avro(CODEC.decode(CODEC.encode("consent_change", change.to_avro())).value)


@pytest.mark.chaos
def test_chaos_run_loses_nothing_counts_nothing_twice_and_leaks_nothing(
    own_stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_started = time.monotonic()
    base = own_stack.settings
    own_stack.up()
    settings = base.model_copy(
        update={
            "kafka": {"topic_prefix": "chaos."},
            "router": {"id": "chaos"},
            "warehouse": {"url": f"duckdb:///{tmp_path / 'warehouse.duckdb'}"},
        }
    )
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    plan = _plan(names)
    truth = plan.sim.truth
    valid: dict[str, Checkout] = {}
    for e in plan.sales:
        if e.kind == "checkout" and e.checkout is not None:
            valid.setdefault(e.checkout.receipt_id, e.checkout)
    corrupt_consents = [e for e in plan.sales if e.kind == "corrupt-consent"]
    flips = sum(1 for e in plan.sales if e.kind == "consent")
    assert len(valid) == SALES == truth.receipts
    assert len(truth.duplicates) > 200 and len(truth.bad) >= 15 and len(corrupt_consents) >= 4 and flips > 100

    logs = tmp_path / "logs"
    logs.mkdir()
    env = env_for(settings)
    py = [sys.executable, "-m", "receiptflow"]
    workers = {
        "router": Worker(
            "router",
            [*py, "process", "--role", "router", "--instance", "0", "--loglevel", "info"],
            # Small transactions, so that kills land inside them.
            {**env, "RECEIPTFLOW_PROCESSOR_BATCH_MAX": "50"},
            logs / "router.log",
        ),
        "profiles": Worker("profiles", [*py, "process", "--role", "profiles"], env, logs / "profiles.log"),
        "sink": Worker(
            "sink",
            [*py, "sink", "run"],
            # Small batches; a stable member name, so that a restarted sink takes its partitions back at once.
            {
                **env,
                "RECEIPTFLOW_SINK_BATCH_MAX": "100",
                "RECEIPTFLOW_SINK_BATCH_SECONDS": "0.3",
                "RECEIPTFLOW_SINK_INSTANCE": "chaos",
            },
            logs / "sink.log",
        ),
    }
    supervisor = Supervisor(workers)
    outbox = Outbox(settings.local.data_dir / "outbox" / "registers.sqlite3", settings, codec=CODEC)
    outbox.start()
    accepted: list[float] = []
    sold_out = threading.Event()
    seller = threading.Thread(target=_sell, args=(outbox, names, plan, accepted, sold_out), daemon=True)
    stop_kills = threading.Event()
    rng = random.Random(SEED)

    def killer() -> None:
        # Random moments (seeded): every 1.5-4 s one of the two, if it has run for at least a second.
        while not stop_kills.wait(rng.uniform(1.5, 4.0)):
            role = rng.choice(("router", "sink"))
            supervisor.kill(role, min_age=1.0) or supervisor.kill("sink" if role == "router" else "router", 1.0)

    chaos = threading.Thread(target=killer, name="killer", daemon=True)
    outage: dict[str, float] = {}
    try:
        supervisor.start()
        seller.start()
        chaos.start()
        t0 = time.monotonic()

        def at(seconds: float) -> None:
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))

        # Redis: SIGKILL, down, started again from its own data dir (the AOF holds the profiles).
        at(REDIS_KILL_AT)
        redis_pid = own_stack.redis.pid()
        assert redis_pid is not None
        os.kill(redis_pid, signal.SIGKILL)
        supervisor.timeline.append((_now_ms(), "Redis SIGKILLed"))
        wait_until(lambda: gone(redis_pid), 30, 0.05, what="exit of the killed Redis")
        at(REDIS_KILL_AT + REDIS_DOWN)
        own_stack.redis.up()
        supervisor.timeline.append((_now_ms(), "Redis up"))

        # The broker: SIGKILL, down BROKER_DOWN s while the registers keep selling into the outbox.
        at(BROKER_KILL_AT)
        own_stack.kafka.kill()
        supervisor.timeline.append((_now_ms(), "broker SIGKILLed"))
        before, pending_before = len(accepted), outbox.pending()
        time.sleep(BROKER_DOWN)
        outage = {
            "accepted": len(accepted) - before,
            "pending_before": pending_before,
            "pending_after": outbox.pending(),
        }
        own_stack.kafka.up()
        supervisor.timeline.append((_now_ms(), "broker up"))

        assert sold_out.wait(RUN_DEADLINE), "the registers did not finish selling"
        seller.join(10)
        _wait(lambda: sum(supervisor.kills.values()) >= MIN_KILLS, 120, f"{MIN_KILLS} kills", workers)
        stop_kills.set()
        chaos.join(10)
        # The outbox drains once the broker is back: every accepted sale reaches `checkouts`.
        assert outbox.drain(180), f"{outbox.pending()} records still in the outbox"

        # Catching up, without kills: the router to the end of its inputs, the profile agent to the truth.

        def remaining() -> float:
            return max(30.0, RUN_DEADLINE - (time.monotonic() - run_started))

        _wait(lambda: _lag(settings) == 0, remaining(), "the router to catch up", workers)
        store = RedisProfileStore.from_settings(settings)
        cards = sorted(truth.per_card)

        def profiles_complete() -> bool:
            got = store.get_many(cards, with_seen=False)
            return sum(p.visits for p in got.values()) >= sum(v[0] for v in truth.per_card.values())

        _wait(profiles_complete, remaining(), "every visit in Redis", workers)
        consents_log = read_all(settings, names.consents)
        corrupt_positions = {
            (m.partition(), m.offset()) for m in consents_log if (m.key() or b"").startswith(b"corrupt-consent-")
        }
        profiles_processor = f"{settings.router.id}-profiles"

        def profile_letters_complete() -> bool:
            dead = read_all(settings, names.checkouts_dlq)
            letters = [CODEC.decode(m.value(), expect="dead_letter").value for m in dead]
            seen = {
                (d["source_partition"], d["source_offset"]) for d in letters if d["processor"] == profiles_processor
            }
            return seen >= corrupt_positions

        _wait(profile_letters_complete, remaining(), "the profile agent's dead letters", workers)
        time.sleep(1.5)  # anything still in flight (a visit counted twice) would show now
        supervisor.terminate("profiles")
        # The sink to the end of its topics: stop the supervised one, run it once more until idle.
        supervisor.terminate("sink")
        final = subprocess.run(
            [*py, "sink", "run", "--idle-exit", "5"],
            env=workers["sink"].env,
            capture_output=True,
            text=True,
            timeout=remaining(),
            check=False,
        )
        assert final.returncode == 0, final.stderr[-3000:]
        supervisor.terminate("router")
    finally:
        stop_kills.set()
        supervisor.shutdown()
        outbox.close()
    duration = time.monotonic() - run_started

    # --- the checks ---------------------------------------------------------------------------
    lost: Counter[str] = Counter()
    double: Counter[str] = Counter()
    leaked: Counter[str] = Counter()

    # Every accepted receipt in the warehouse exactly once.
    with open_sink(settings) as sink:
        stored = Counter(str(r) for (r,) in sink.warehouse.query("SELECT receipt_id FROM receipts"))
    lost["warehouse"] = len(set(valid) - set(stored))
    double["warehouse"] = sum(n - 1 for n in stored.values()) + len(set(stored) - set(valid))

    # Each output topic, read committed: each receipt once.
    customer = Counter(
        Purchase.from_avro(CODEC.decode(m.value(), expect="purchase").value).receipt_id
        for m in read_all(settings, names.purchases_customer)
    )
    lost["purchases.customer"] = len(set(valid) - set(customer))
    double["purchases.customer"] = sum(n - 1 for n in customer.values()) + len(set(customer) - set(valid))
    baskets = Counter(
        AnalyticsBasket.from_avro(CODEC.decode(m.value(), expect="analytics_basket").value).basket_id
        for m in read_all(settings, names.purchases_analytics)
    )
    want_baskets = {_basket_id(settings, c) for c in valid.values() if c.lines}
    lost["purchases.analytics"] = len(want_baskets - set(baskets))
    double["purchases.analytics"] = sum(n - 1 for n in baskets.values()) + len(set(baskets) - want_baskets)
    marketing = [
        Purchase.from_avro(CODEC.decode(m.value(), expect="purchase").value)
        for m in read_all(settings, names.purchases_marketing)
    ]
    marketed = Counter(p.receipt_id for p in marketing)
    double["purchases.marketing"] = sum(n - 1 for n in marketed.values()) + len(set(marketed) - set(valid))

    # Every profile's visits and spend equal the truth.
    profiles = RedisProfileStore.from_settings(settings).get_many(sorted(truth.per_card), with_seen=False)
    for card, (visits, spend) in truth.per_card.items():
        p = profiles.get(card)
        got = (p.visits, p.spend_cents) if p is not None else (0, 0)
        lost["profile visits"] += max(0, visits - got[0])
        double["profile visits"] += max(0, got[0] - visits)
        if got[1] != spend:
            (lost if got[1] < spend else double)["profile spend (cards)"] += 1

    # No product data on marketing without consent: in force at event time and at processing (the
    # newest change the registers had sent before the receipt's first delivery).
    history: dict[str, list[tuple[int, ConsentChange]]] = {}
    first_sent: dict[str, int] = {}
    for i, e in enumerate([*plan.signups, *plan.sales]):
        if e.consent is not None:
            history.setdefault(e.consent.card_id, []).append((i, _decoded(e.consent)))
        elif e.checkout is not None:
            first_sent.setdefault(e.checkout.receipt_id, i)
    # Evidence for a leak: when the broker appended the checkout and the consent changes sent before it.
    appended = {}
    for m in read_all(settings, names.checkouts):
        if not (m.key() or b"").startswith(b"bad-"):
            rid = Checkout.from_avro(CODEC.decode(m.value(), expect="checkout").value).receipt_id
            appended.setdefault(rid, (m.timestamp()[1], m.partition(), m.offset()))
    consent_appended: dict[tuple[str, datetime, bool, bool], tuple[int, int, int]] = {}
    for m in consents_log:
        if m.value() is not None and not (m.key() or b"").startswith(b"corrupt-consent-"):
            c = ConsentChange.from_avro(CODEC.decode(m.value(), expect="consent_change").value)
            where = (m.timestamp()[1], m.partition(), m.offset())
            consent_appended.setdefault(
                (c.card_id, c.event_time, c.product_data_marketing, c.electronic_marketing), where
            )
    evidence: list[str] = []
    for p in marketing:
        changes = history.get(p.card_id or "", [])
        before = [c for i, c in changes if i < first_sent.get(p.receipt_id, -1)]
        at_event = _consent_for_purchase([c for _, c in changes], p.event_time)
        at_processing = _consent_at(before, None)
        product = bool(at_event and at_processing and at_event[0] and at_processing[0])
        electronic = bool(at_event and at_processing and at_event[1] and at_processing[1])
        if product or electronic:
            if not (p.items and not product):
                continue
            leaked["product data"] += 1
        else:
            leaked["no consent"] += 1
        ts, part, off = appended[p.receipt_id]
        late = []
        for c in before[-3:]:
            c_ts, c_part, c_off = consent_appended[
                (c.card_id, c.event_time, c.product_data_marketing, c.electronic_marketing)
            ]
            late.append(
                f"consent {c.event_time:%H:%M:%S.%f} product={c.product_data_marketing} "
                f"electronic={c.electronic_marketing} appended {c_ts - ts:+d} ms (consents[{c_part}]@{c_off})"
            )
        nearby = [f"{what} {t - ts:+d} ms" for t, what in supervisor.timeline if abs(t - ts) < 15_000]
        evidence.append(
            f"{p.receipt_id} at {p.event_time:%H:%M:%S.%f} consent on record {p.consent}, items {len(p.items)}; "
            f"checkout appended at {ts} (checkouts[{part}]@{off}); last changes sent before it: {late}; "
            f"around it: {nearby}"
        )

    # The DLQ: exactly what was injected (see the module docstring for how it is counted).
    letters = [CODEC.decode(m.value(), expect="dead_letter").value for m in read_all(settings, names.checkouts_dlq)]
    router_id = f"{settings.router.id}-0"
    sink_id = f"receiptflow-sink-{DEFAULT_GROUP}"
    readers = {router_id: "router", profiles_processor: "profiles", sink_id: "sink"}
    unexpected = [d for d in letters if d["processor"] not in readers]
    on_checkouts = [d for d in letters if d["source_topic"] == names.checkouts]
    on_consents = [d for d in letters if d["source_topic"] == names.consents]
    bad_labels = {b["label"]: b["reason"] for b in truth.bad}
    dlq_problems: list[str] = []
    if unexpected or len(on_checkouts) + len(on_consents) != len(letters):
        dlq_problems.append(f"letters from elsewhere: {[(d['processor'], d['source_topic']) for d in unexpected][:5]}")
    checkout_letters = {(d["original_key"] or b"").decode(): d["reason"] for d in on_checkouts}
    if len(on_checkouts) != len(truth.bad) or checkout_letters != bad_labels:
        dlq_problems.append(
            f"bad checkouts: {len(on_checkouts)} letters for {len(truth.bad)} injected; "
            f"reasons {Counter(d['reason'] for d in on_checkouts)} vs {Counter(bad_labels.values())}"
        )
    repeats: Counter[str] = Counter()
    for processor, reader in readers.items():
        mine = [(d["source_partition"], d["source_offset"]) for d in on_consents if d["processor"] == processor]
        repeats[reader] = len(mine) - len(set(mine))
        if set(mine) != corrupt_positions:
            dlq_problems.append(f"{reader}: consent letters at {sorted(set(mine))} != {sorted(corrupt_positions)}")
    if repeats["router"] or any(d["reason"] != "undecodable" for d in on_consents):
        dlq_problems.append(
            f"consent letters: router repeats {repeats['router']}, reasons {Counter(d['reason'] for d in on_consents)}"
        )
    if len(corrupt_positions) != len(corrupt_consents):
        dlq_problems.append(f"{len(corrupt_positions)} corrupt records on consents, {len(corrupt_consents)} injected")

    kills = sum(supervisor.kills.values())
    restarts = sum(supervisor.restarts.values())
    k, r = supervisor.kills, supervisor.restarts
    other = ", ".join(f"{x} x{n}" for x, n in sorted(supervisor.exits.items()))
    summary = (
        f"chaos: {duration:.0f}s; kills {kills} (router {k['router']}, sink {k['sink']}), restarts {restarts} "
        f"({', '.join(f'{role} {n}' for role, n in sorted(r.items()))}{'; other exits ' + other if other else ''}), "
        f"redis killed 1 for {REDIS_DOWN:.0f}s, broker killed 1 for {BROKER_DOWN:.0f}s (sold "
        f"{outage.get('accepted', 0):.0f} into the outbox meanwhile, pending {outage.get('pending_before', 0):.0f}"
        f"->{outage.get('pending_after', 0):.0f}); receipts {len(valid)}, duplicates {len(truth.duplicates)}, "
        f"corrupt records {len(truth.bad)} on checkouts + {len(corrupt_consents)} on consents, flips {flips}; "
        f"dead letters {len(letters)} (repeats: profiles {repeats['profiles']}, sink {repeats['sink']}); "
        f"marketing {len(marketed)}; lost = {sum(lost.values())}, double-counted = {sum(double.values())}, "
        f"leaked = {sum(leaked.values())}"
    )
    with capsys.disabled():  # on the terminal in any run, not only with -s
        print("\n" + summary)
        for line in [*dlq_problems, *evidence[:25]]:
            print("  " + line)
    assert kills >= MIN_KILLS
    assert outage["accepted"] > 300 and outage["pending_after"] > outage["pending_before"], outage
    assert not +lost and not +double, (dict(+lost), dict(+double))
    assert not +leaked, f"{dict(+leaked)}:\n" + "\n".join(evidence[:25])
    assert not dlq_problems, dlq_problems
    # And every table of the warehouse equal to the truth: items, groups, baskets, consent audit.
    consents = [e.consent for e in [*plan.signups, *plan.sales] if e.consent is not None]
    _assert_equal_to_the_truth(settings, Sent(truth, list(valid.values()), consents, len(truth.duplicates)))
    assert marketed, "consent flips and sign-ups must let some receipts reach marketing"


def test_after_a_broker_outage_consent_changes_are_appended_before_the_sales_accepted_after_them(
    own_stack: Stack, tmp_path: Path
) -> None:
    # What the fault run found: the router applies consents and checkouts in the order the broker
    # appended them, so the outbox must not let a sale overtake a consent change accepted before it.
    own_stack.kafka.up()
    settings = own_stack.settings.model_copy(update={"kafka": {"topic_prefix": "order."}})
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    outbox = Outbox(tmp_path / "register.sqlite3", settings, codec=CODEC)
    outbox.start()
    sim = Simulator(SEED, stores=20, customers=60)
    traffic = Traffic(sim, lambda c: CODEC.encode("checkout", c.to_avro()), consent_change_rate=0.2)
    accepted: list[tuple[str, str]] = []  # ("consent", card@ms) or ("checkout", receipt id), in order
    try:
        own_stack.kafka.kill()
        for e in traffic.emissions(1500, datetime.now(UTC) - timedelta(hours=2), rate=0.5):
            if e.consent is not None:
                outbox.accept_consent(e.consent)
                accepted.append(("consent", f"{e.consent.card_id}@{_decoded(e.consent).event_time.isoformat()}"))
            elif e.checkout is not None:
                outbox.accept(e.checkout)
                accepted.append(("checkout", e.checkout.receipt_id))
        own_stack.kafka.up()
        assert outbox.drain(120), f"{outbox.pending()} records still in the outbox"
    finally:
        outbox.close()
    appended: dict[tuple[str, str], tuple[int, int]] = {}  # -> (partition, append time ms)
    for m in read_all(settings, names.consents):
        c = ConsentChange.from_avro(CODEC.decode(m.value(), expect="consent_change").value)
        appended[("consent", f"{c.card_id}@{c.event_time.isoformat()}")] = (m.partition(), m.timestamp()[1])
    for m in read_all(settings, names.checkouts):
        rid = Checkout.from_avro(CODEC.decode(m.value(), expect="checkout").value).receipt_id
        appended.setdefault(("checkout", rid), (m.partition(), m.timestamp()[1]))
    newest_consent: dict[int, tuple[int, str]] = {}  # partition -> (latest append time, change) so far
    overtaken = []
    for item in accepted:
        partition, at = appended[item]
        if item[0] == "consent":
            newest_consent[partition] = max(newest_consent.get(partition, (0, "")), (at, item[1]))
        elif partition in newest_consent and at < newest_consent[partition][0]:
            overtaken.append(
                f"{item[1]} appended {newest_consent[partition][0] - at} ms before {newest_consent[partition][1]}"
            )
    assert sum(1 for kind, _ in accepted if kind == "consent") > 200
    assert not overtaken, f"{len(overtaken)} sales overtook a consent change accepted before them: {overtaken[:5]}"
