"""The fault run (``make chaos``): the whole pipeline under kills and outages, then checked against the truth.

A broker and Redis of the test's own (``own_stack``), and the four consumers as real processes
(``process --role router``, ``process --role profiles``, ``aggregate run``, ``sink run`` into
DuckDB), each started again by a supervisor thread whenever it dies. Registers sell seeded simulator
traffic through a durable outbox, paced in real time: sign-up consents, then sales with 10 % repeated
deliveries, 1 % bad records on ``checkouts`` (the simulator's five kinds), consent flips, and 1 %
corrupt records on ``consents`` (raw bytes that are not a consent change, injected here: every 100th
consent record).

The sales fall on three days that are over (``DAYS``), so every analytics window (one chain's local
day) closes during the run: the first two days' windows while the faults go on, when the aggregator
reads the next day's baskets (stream time), the last day's once everything has caught up, by the idle
rule (in a last run of the aggregator, as of the sink). Between two days the registers close for the
night: they sell the next day only when the router has routed every sale of the day before. A basket
read after its window closed would be late (counted in the window's close marker and dropped, by
design); the nights make sure none is, so that each window's cells can be checked against the truth.

While they sell (seeded random moments):

* the router, the aggregator and the sink are SIGKILLed, the router and the sink at least
  ``MIN_KILLS`` times together, the aggregator at least ``MIN_AGGREGATOR_KILLS`` times;
* Redis is SIGKILLed, kept down ``REDIS_DOWN`` s and started again (same data dir: its AOF);
* the broker is SIGKILLed and kept down ``BROKER_DOWN`` s while the registers keep selling into
  their outbox, which must keep accepting and drain afterwards.

Then, with the kills stopped, everything catches up and is checked against the simulator's ground
truth: every accepted receipt in the warehouse exactly once (and every table equal to the truth);
every profile's visits and spend equal to the truth; each output topic, read committed, holding
each receipt once, and ``purchases.baskets`` each receipt's basket once; every window closed once,
its close marker counting each of its baskets once, its cells on ``purchases.analytics`` exactly
``release()`` of its baskets, once each, and the same cells in the warehouse; the dead-letter topic
holding exactly what was injected; no product data on ``purchases.marketing`` without consent.

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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka import KafkaException

from receiptflow.cells import Cell, Window, window_of
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.models import AnalyticsBasket, Checkout, ConsentChange, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.aggregate.marker import Marker
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.route import process
from receiptflow.producers.outbox import Outbox
from receiptflow.producers.simulator import Emission, Simulator, Traffic
from receiptflow.secrets import analytics_key
from receiptflow.sinks import DEFAULT_GROUP, open_sink
from receiptflow.stack import Stack
from receiptflow.stack.process import gone, wait_until
from receiptflow.suppression import release
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, opened_letters, read_all
from .test_router import _consent_at, _consent_for_purchase, _lag
from .test_sink_crash import Sent, _assert_equal_to_the_truth, _warehouse_cells

CODEC = Codec()
SEED = 15
# Valid checkouts per day. The nights between come after the broker's outage (a night lasts until the
# router has caught up, and the registers must go on selling while the broker is down).
DAYS = (2400, 300, 300)
SALES = sum(DAYS)  # valid checkouts
# The first day's date, the others following it: over, and well within the router's 14 days of dedup.
DAYS_AGO = 6
SELL_RATE = 30.0  # checkouts per second, wall clock: about 100 s of selling
MIN_KILLS = 24  # SIGKILLs of the router and the sink together (the issue asks for 20)
MIN_AGGREGATOR_KILLS = 8
KILLED = ("router", "sink", "aggregate")  # the workers the killer picks from
# Seconds the registers wait at most for the router to route the day's sales. The first night follows
# the broker's outage: the router, still killed now and then, works off the backlog (about 70 s).
NIGHT_DEADLINE = 240.0
# The aggregator's windows close 60 s after their day (grace) on reading the next day's baskets; the
# idle rule waits longer than any quiet spell the faults make (the broker is down 30 s), so that no
# window closes before all its baskets are read. The last run, after the faults, closes the rest.
ANALYTICS_GRACE, ANALYTICS_IDLE_CLOSE, LAST_IDLE_CLOSE = 60, 120, 5
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
    """Keeps the consumers running: a dead one is started again (its exit is counted)."""

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
    mornings: set[int] = field(default_factory=set)  # indexes in sales where a day after the first begins


def _plan() -> Plan:
    sim = Simulator(SEED, stores=30, customers=200)
    now = datetime.now(UTC)
    traffic = Traffic(
        sim,
        lambda c: CODEC.encode("checkout", c.to_avro()),
        dup_rate=0.10,
        bad_rate=0.01,
        consent_change_rate=0.05,
    )
    # Days that are over, from 11:00 Helsinki time (09:00 UTC) on: every chain's stores are open.
    first = now.replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(days=DAYS_AGO)
    signups = list(traffic.initial_consents(first - timedelta(days=1)))
    emitted: list[Emission] = []
    mornings: set[int] = set()
    for day, sales_of_day in enumerate(DAYS):
        if day:
            mornings.add(len(emitted))
        # Event times 2 s apart: a day's sales span its late morning and early afternoon. Sent now: a bad
        # record's future event time is ahead of now, not only of its day.
        emitted.extend(traffic.emissions(sales_of_day, first + timedelta(days=day), rate=0.5, now=now))
    flips = sum(1 for e in emitted if e.kind == "consent")
    # 1 % of the records on `consents` corrupt, spread evenly over the flips (after every `every`-th).
    corrupt = max(4, round((len(signups) + flips) / (CORRUPT_CONSENT_EVERY - 1)))
    every = max(1, flips // corrupt)
    rng = random.Random(SEED)
    plan_mornings: set[int] = set()
    sales: list[Emission] = []
    seen_flips = n = 0
    for i, e in enumerate(emitted):
        if i in mornings:
            plan_mornings.add(len(sales))
        sales.append(e)
        if e.kind == "consent":
            seen_flips += 1
            if seen_flips % every == 0 and n < corrupt:
                n += 1
                raw = rng.choice(CORRUPT_CONSENTS)
                sales.append(Emission("corrupt-consent", raw=raw, label=f"corrupt-consent-{n:04d}"))
    return Plan(sim, signups, sales, plan_mornings)


@dataclass
class Registers:
    """What the registers' thread reports: when each sale was accepted, its nights, and when it is done."""

    accepted: list[float] = field(default_factory=list)
    nights: list[float] = field(default_factory=list)  # seconds each night lasted
    problems: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _night(settings: Settings, outbox: Outbox) -> str | None:
    """Wait until every sale accepted is routed (the outbox drained, the router's lag 0); why not, if it is not."""
    deadline = time.monotonic() + NIGHT_DEADLINE
    if not outbox.drain(NIGHT_DEADLINE):
        return f"night: {outbox.pending()} records still in the outbox after {NIGHT_DEADLINE:.0f}s"
    lag: int | str = "unknown"
    while time.monotonic() < deadline:
        try:
            lag = _lag(settings)
        except KafkaException as exc:  # the broker is up at night: this is worth a look
            lag = f"unreadable ({exc})"
        if lag == 0:
            return None
        time.sleep(0.2)
    return f"night: the router's lag is {lag} after {NIGHT_DEADLINE:.0f}s"


def _sell(settings: Settings, outbox: Outbox, plan: Plan, registers: Registers) -> None:
    """The registers: every emission into the outbox, checkouts paced at SELL_RATE (wall clock); at each
    night they wait until the day's sales are routed, so that no basket of a day comes after the next's."""
    names = TopicNames(settings.kafka.topic_prefix)
    accepted = registers.accepted
    try:
        for e in plan.signups:
            assert e.consent is not None
            outbox.accept_consent(e.consent)
        begin = time.monotonic()
        sold = 0
        for i, e in enumerate(plan.sales):
            if i in plan.mornings:
                dusk = time.monotonic()
                problem = _night(settings, outbox)
                if problem is not None:
                    registers.problems.append(problem)
                    return
                registers.nights.append(time.monotonic() - dusk)
                begin += registers.nights[-1]  # the pace goes on from the morning, no rush to catch up
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
        registers.done.set()


def _decoded(change: ConsentChange) -> ConsentChange:
    """A consent change as the pipeline sees it: through the contract (millisecond times)."""
    return ConsentChange.from_avro(CODEC.decode(CODEC.encode("consent_change", change.to_avro())).value)


@dataclass
class Aggregates:
    """What the aggregator published, checked against the truth's baskets window by window."""

    windows: int = 0  # windows with a close marker
    in_faults: int = 0  # of them, closed while the faults went on
    cells: int = 0  # cell records on purchases.analytics
    late: dict[str, int] = field(default_factory=dict)  # window id -> late baskets its marker counted
    problems: list[str] = field(default_factory=list)
    want: list[Cell] = field(default_factory=list)  # the cells of every window as the truth has them


def _published(
    settings: Settings, k: int, out: Aggregates
) -> tuple[dict[Window, list[Marker]], dict[Window, Counter[Cell]]]:
    """Every close marker on analytics.windows (in log order) and every cell on purchases.analytics, by window."""
    names = TopicNames(settings.kafka.topic_prefix)
    markers: dict[Window, list[Marker]] = {}
    for m in read_all(settings, names.analytics_windows):
        value = m.value()
        if value is None:
            out.problems.append(f"a tombstone for {m.key()!r} on analytics.windows")
            continue
        marker = Marker.from_json(value)
        if m.key() != marker.window_id.encode():
            out.problems.append(f"the marker of {marker.window_id} keyed {m.key()!r}")
        markers.setdefault(marker.window, []).append(marker)
    cells: dict[Window, Counter[Cell]] = {}
    for m in read_all(settings, names.purchases_analytics):
        value = CODEC.decode(m.value(), expect="analytics_cell").value
        cell = Cell.from_avro(value)
        window = Window(cell.key.chain, cell.key.local_date)
        if m.key() != window.id.encode() or value["k"] != k:
            out.problems.append(f"cell {cell.key} keyed {m.key()!r}, k {value['k']}")
        cells.setdefault(window, Counter())[cell] += 1
        out.cells += 1
    return markers, cells


def _check_aggregates(
    settings: Settings, baskets: list[AnalyticsBasket], faults_over: datetime, lost: Counter[str], double: Counter[str]
) -> Aggregates:
    """Each window closed once, its marker counting each of its baskets once (counted + late), and its cells
    on purchases.analytics release() of its baskets, each once. A late basket's window is reported, not
    compared: which of its baskets the aggregator dropped is not on record."""
    k = settings.aggregate.k
    truth: dict[Window, list[AnalyticsBasket]] = {}
    for b in baskets:
        truth.setdefault(window_of(b), []).append(b)
    out = Aggregates()
    markers, cells = _published(settings, k, out)
    for w in sorted(truth.keys() | markers.keys() | cells.keys()):
        want, got, mine = truth.get(w, []), cells.get(w, Counter()), markers.get(w, [])
        # A late basket rewrites its window's marker (the same close); a second close would be a marker of
        # another moment.
        closes, should = len({(x.partition, x.closed_at) for x in mine}), 1 if want else 0
        lost["window closes"] += max(0, should - closes)
        double["window closes"] += max(0, closes - should)
        newest = mine[-1] if mine else None
        counted = newest.sale_baskets + newest.refund_baskets + newest.late_baskets if newest is not None else 0
        lost["baskets in close markers"] += max(0, len(want) - counted)
        double["baskets in close markers"] += max(0, counted - len(want))
        if newest is not None:
            out.windows += 1
            out.in_faults += newest.closed_at < faults_over
        if newest is not None and newest.late_baskets:
            out.late[w.id] = newest.late_baskets
            double["cells published twice"] += sum(n - 1 for n in Counter(c.key for c in got.elements()).values())
            continue
        released = release(want, k)
        out.want.extend(released.cells)
        expected = Counter(released.cells)
        lost["purchases.analytics cells"] += sum((expected - got).values())
        double["purchases.analytics cells"] += sum((got - expected).values())
        if newest is not None and want:
            (t,) = released.totals
            marked = (newest.sale_baskets, newest.sale_cents, newest.refund_baskets, newest.refund_cents, newest.cells)
            if marked != (t.sale_baskets, t.sale_cents, t.refund_baskets, t.refund_cents, len(released.cells)):
                out.problems.append(f"marker of {w.id}: {newest}, the truth {t} and {len(released.cells)} cells")
            if newest.k != k:
                out.problems.append(f"marker of {w.id} says k {newest.k}, the aggregator's is {k}")
    return out


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
    plan = _plan()
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
    aggregate_env = {
        **env,
        "RECEIPTFLOW_ANALYTICS_GRACE_SECONDS": str(ANALYTICS_GRACE),
        "RECEIPTFLOW_ANALYTICS_IDLE_CLOSE_SECONDS": str(ANALYTICS_IDLE_CLOSE),
    }
    workers = {
        "router": Worker(
            "router",
            [*py, "process", "--role", "router", "--instance", "0", "--loglevel", "info"],
            # Small transactions, so that kills land inside them.
            {**env, "RECEIPTFLOW_PROCESSOR_BATCH_MAX": "50"},
            logs / "router.log",
        ),
        "profiles": Worker("profiles", [*py, "process", "--role", "profiles"], env, logs / "profiles.log"),
        # A stable name: a restarted aggregator takes its partitions back at once and aborts what its
        # killed self left open (the same transactional id).
        "aggregate": Worker(
            "aggregate", [*py, "aggregate", "run", "--instance", "chaos"], aggregate_env, logs / "aggregate.log"
        ),
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
    registers = Registers()
    accepted = registers.accepted
    seller = threading.Thread(target=_sell, args=(settings, outbox, plan, registers), daemon=True)
    stop_kills = threading.Event()
    rng = random.Random(SEED)

    def killer() -> None:
        # Random moments (seeded): every 1.5-4 s one of the three, if it has run for at least a second
        # (else the next of them that has).
        while not stop_kills.wait(rng.uniform(1.5, 4.0)):
            first = rng.randrange(len(KILLED))
            any(supervisor.kill(role, min_age=1.0) for role in KILLED[first:] + KILLED[:first])

    def enough_kills() -> bool:
        k = supervisor.kills
        return k["router"] + k["sink"] >= MIN_KILLS and k["aggregate"] >= MIN_AGGREGATOR_KILLS

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

        assert registers.done.wait(RUN_DEADLINE), "the registers did not finish selling"
        seller.join(10)
        assert not registers.problems, f"{registers.problems}\n{_log_tails(workers)}"
        what = f"{MIN_KILLS} kills of the router and the sink, {MIN_AGGREGATOR_KILLS} of the aggregator"
        _wait(enough_kills, 120, what, workers)
        stop_kills.set()
        chaos.join(10)
        faults_over = datetime.now(UTC)
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
        # The aggregator to the end of its input: stop the supervised one, run it once more until idle.
        # With no fault left to make a quiet spell, this run closes what is still open by the idle rule
        # after a few seconds (the last day's windows, unless the supervised one had closed them).
        supervisor.terminate("aggregate")
        last = subprocess.run(
            [*py, "aggregate", "run", "--instance", "chaos", "--idle-exit", str(2 * LAST_IDLE_CLOSE)],
            env={**aggregate_env, "RECEIPTFLOW_ANALYTICS_IDLE_CLOSE_SECONDS": str(LAST_IDLE_CLOSE)},
            capture_output=True,
            text=True,
            timeout=remaining(),
            check=False,
        )
        assert last.returncode == 0, last.stderr[-3000:]
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

    # Each output topic, read committed: each receipt once.
    customer = Counter(
        Purchase.from_avro(CODEC.decode(m.value(), expect="purchase").value).receipt_id
        for m in read_all(settings, names.purchases_customer)
    )
    lost["purchases.customer"] = len(set(valid) - set(customer))
    double["purchases.customer"] = sum(n - 1 for n in customer.values()) + len(set(customer) - set(valid))
    marketing = [
        Purchase.from_avro(CODEC.decode(m.value(), expect="purchase").value)
        for m in read_all(settings, names.purchases_marketing)
    ]
    marketed = Counter(p.receipt_id for p in marketing)
    double["purchases.marketing"] = sum(n - 1 for n in marketed.values()) + len(set(marketed) - set(valid))
    # The router's baskets, read committed: each receipt with lines once. The truth's are routed here
    # with the install's analytics key (the same ids).
    policy, pseudonyms, now = load_policy(), BasketPseudonymiser(analytics_key(settings)), datetime.now(UTC)
    routed = [process(c, policy, None, now, pseudonyms).analytics for c in valid.values()]
    truth_baskets = [b for b in routed if b is not None]
    want_baskets = {b.basket_id for b in truth_baskets}
    assert len(want_baskets) == len(truth_baskets) == sum(1 for c in valid.values() if c.lines)
    baskets = Counter(
        AnalyticsBasket.from_avro(CODEC.decode(m.value(), expect="analytics_basket").value).basket_id
        for m in read_all(settings, names.analytics_baskets)
    )
    lost["purchases.baskets"] = len(want_baskets - set(baskets))
    double["purchases.baskets"] = sum(n - 1 for n in baskets.values()) + len(set(baskets) - want_baskets)
    # The aggregates: every window closed once, each of its baskets counted once, its cells as the truth's.
    aggregates = _check_aggregates(settings, truth_baskets, faults_over, lost, double)

    # Every accepted receipt in the warehouse exactly once, and every cell of the truth (the whole table
    # is compared with the truth below).
    with open_sink(settings) as sink:
        stored = Counter(str(r) for (r,) in sink.warehouse.query("SELECT receipt_id FROM receipts"))
        stored_cells = Counter(Cell.from_avro(c) for c in _warehouse_cells(sink))
    lost["warehouse"] = len(set(valid) - set(stored))
    double["warehouse"] = sum(n - 1 for n in stored.values()) + len(set(stored) - set(valid))
    if not aggregates.late:  # else the truth's cells are not known (asserted below)
        lost["warehouse cells"] = sum((Counter(aggregates.want) - stored_cells).values())
        double["warehouse cells"] = sum((stored_cells - Counter(aggregates.want)).values())

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
    letters = [asdict(d) for d in opened_letters(settings)]
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
    aggregate_keys = ("purchases.baskets", "window closes", "baskets in close markers", "purchases.analytics cells",
                      "cells published twice", "warehouse cells")  # fmt: skip
    summary = (
        f"chaos: {duration:.0f}s; kills {kills} (router {k['router']}, aggregator {k['aggregate']}, "
        f"sink {k['sink']}), restarts {restarts} "
        f"({', '.join(f'{role} {n}' for role, n in sorted(r.items()))}{'; other exits ' + other if other else ''}), "
        f"redis killed 1 for {REDIS_DOWN:.0f}s, broker killed 1 for {BROKER_DOWN:.0f}s (sold "
        f"{outage.get('accepted', 0):.0f} into the outbox meanwhile, pending {outage.get('pending_before', 0):.0f}"
        f"->{outage.get('pending_after', 0):.0f}); receipts {len(valid)}, duplicates {len(truth.duplicates)}, "
        f"corrupt records {len(truth.bad)} on checkouts + {len(corrupt_consents)} on consents, flips {flips}; "
        f"dead letters {len(letters)} (repeats: profiles {repeats['profiles']}, sink {repeats['sink']}); "
        f"marketing {len(marketed)}; nights {', '.join(f'{n:.0f}s' for n in registers.nights)}, baskets "
        f"{sum(baskets.values())} in {aggregates.windows} windows ({aggregates.in_faults} closed during the faults, "
        f"late baskets {sum(aggregates.late.values())}), cells {aggregates.cells} (aggregates: lost "
        f"{sum(lost[x] for x in aggregate_keys)}, double-counted {sum(double[x] for x in aggregate_keys)}); "
        f"lost = {sum(lost.values())}, double-counted = {sum(double.values())}, leaked = {sum(leaked.values())}"
    )
    with capsys.disabled():  # on the terminal in any run, not only with -s
        print("\n" + summary)
        for line in [*dlq_problems, *aggregates.problems, *evidence[:25]]:
            print("  " + line)
    assert enough_kills(), dict(k)
    assert outage["accepted"] > 300 and outage["pending_after"] > outage["pending_before"], outage
    assert not +lost and not +double, (dict(+lost), dict(+double))
    assert not aggregates.late, (
        f"late baskets {aggregates.late}: none are expected in this run (each night the registers wait until "
        f"the day is routed, and the idle rule waits {ANALYTICS_IDLE_CLOSE}s, longer than the faults' quiet "
        "spells), and these windows' cells could not be checked against the truth"
    )
    assert not aggregates.problems, aggregates.problems
    assert aggregates.in_faults > 0, "no window closed while the faults went on: the kills met no close"
    assert not +leaked, f"{dict(+leaked)}:\n" + "\n".join(evidence[:25])
    assert not dlq_problems, dlq_problems
    # And every table of the warehouse equal to the truth: items, groups, baskets, consent audit.
    consents = [e.consent for e in [*plan.signups, *plan.sales] if e.consent is not None]
    sent = Sent(truth, list(valid.values()), consents, len(truth.duplicates), cells=aggregates.want)
    _assert_equal_to_the_truth(settings, sent)
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
