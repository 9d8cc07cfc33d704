"""``receiptflow status`` against the real broker and a real router process.

The router's group lag is exact on ``checkouts`` (registers' records, no transaction markers): it is
0 once the router has routed everything, rises by exactly the checkouts sent while the router is
stopped (whose ``/readyz`` is then unreachable), and falls back to 0 after it restarts. The sink's
group reads the router's transactional output: once it has read everything its lag is 0 too, though
its committed offsets stop short of each partition's end by the trailing commit marker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator, Traffic
from receiptflow.sinks import DEFAULT_GROUP
from receiptflow.stack.process import free_port
from receiptflow.topics import TopicNames, create_topics

from .support import env_for

CODEC = Codec()


def _send(settings: Settings, count: int, seed: int) -> None:
    sim = Simulator(seed, stores=5, customers=50)
    traffic = Traffic(sim, lambda c: CODEC.encode("checkout", c.to_avro()))
    client = RegisterClient(settings)
    sent = 0
    for e in traffic.emissions(count, datetime.now(UTC), rate=1000.0):
        if e.checkout is not None:
            client.send(e.checkout)
            sent += 1
    assert sent == count
    assert client.flush(60).failed == 0


def _router(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "process", "--role", "router", "--metrics-port", str(port)],
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _status(settings: Settings, port: int) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "receiptflow",
            "status",
            "--json",
            "--sample",
            "1",
            "--endpoint",
            f"router=127.0.0.1:{port}",
        ],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _router_view(answer: dict[str, Any], settings: Settings) -> tuple[int, str]:
    group = next(g for g in answer["groups"] if g["group"] == settings.router.id)
    (process,) = answer["processes"]
    return group["lag"], process["state"]


def _until(check: Callable[[], tuple[int, str]], wanted: tuple[int, str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    seen = check()
    while seen != wanted:
        assert time.monotonic() < deadline, f"status shows {seen}, wanted {wanted}"
        time.sleep(1)
        seen = check()


def test_status_shows_the_router_lag_rise_while_it_is_stopped_and_fall_after_it_restarts(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    port = free_port()
    log = tmp_path / "router.log"
    view = lambda: _router_view(_status(settings, port), settings)  # noqa: E731

    router = _router(settings, port, log)
    try:
        _send(settings, 40, seed=1)
        _until(view, (0, "ready"))
    finally:
        _stop(router)

    _send(settings, 60, seed=2)
    answer = _status(settings, port)
    assert _router_view(answer, settings) == (60, "unreachable")
    group = next(g for g in answer["groups"] if g["group"] == settings.router.id)
    # Every partition of both inputs, each with its committed offset, end and lag.
    assert {(p["topic"], p["partition"]) for p in group["partitions"]} == {
        (t, p) for t in (names.checkouts, names.consents) for p in range(settings.kafka.topic_partitions)
    }
    assert sum(p["end"] - (p["committed"] or 0) for p in group["partitions"]) == 60
    # Nothing was written or committed while the offsets were sampled.
    assert answer["written_per_second"] == dict.fromkeys(answer["written_per_second"], 0.0)
    assert names.checkouts in answer["written_per_second"] and group["committed_per_second"] == 0.0

    router = _router(settings, port, log)
    try:
        _until(view, (0, "ready"))
        # The human view renders the same figures.
        text = subprocess.run(
            [
                sys.executable,
                "-m",
                "receiptflow",
                "status",
                "--partitions",
                "--sample",
                "0",
                "--endpoint",
                f"router=127.0.0.1:{port}",
            ],
            env=env_for(settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        assert settings.router.id in text and "ready" in text and "Lag per partition" in text
    finally:
        _stop(router)


def _sink_lag(settings: Settings, port: int) -> tuple[int, str]:
    group = next(g for g in _status(settings, port)["groups"] if g["group"] == DEFAULT_GROUP)
    return group["lag"], "sink"


def test_a_group_that_has_read_a_transactional_topic_to_its_end_shows_no_lag(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    port = free_port()
    router = _router(settings, port, tmp_path / "router.log")
    try:
        _send(settings, 30, seed=3)
        _until(lambda: _router_view(_status(settings, port), settings), (0, "ready"))
    finally:
        _stop(router)
    # The sink reads the router's output (one transaction after another) to its end, then exits.
    sink = subprocess.run(
        [sys.executable, "-m", "receiptflow", "sink", "run", "--idle-exit", "5", "--metrics-port", "0"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert sink.returncode == 0, sink.stderr[-3000:]
    _until(lambda: _sink_lag(settings, port), (0, "sink"), timeout=30)
    group = next(g for g in _status(settings, port)["groups"] if g["group"] == DEFAULT_GROUP)
    written = [p for p in group["partitions"] if p["topic"] == names.purchases_customer and p["end"] > 0]
    assert written, group
    # What was read is committed; the commit marker after it takes one more offset, and is no lag.
    assert all(p["committed"] == p["end"] - 1 and p["lag"] == 0 for p in written), written
