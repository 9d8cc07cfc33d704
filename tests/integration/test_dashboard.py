"""Every query of the Grafana dashboard returns series from a real Prometheus scraping a running pipeline.

The pipeline runs as it is deployed, one process per role, each with its own exporter: the router,
the analytics aggregator and the profile agent (``process --role all``), the warehouse sink (``sink
run``) and the registers (``simulate``, with repeated deliveries, bad input and consent changes, so
that dead letters, duplicates and consent changes happen; plus one checkout of a chain the policy
does not know). The aggregator runs without grace, and two anonymous checkouts of ``ABC`` (service
stations, open day and night) sold a day ago close yesterday's window and then arrive late to it. A
Prometheus from the Debian package scrapes the three every second under the bundle's job names; each
panel's PromQL (parsed with ``promql-parser`` by the static checks, its Grafana interval variables
replaced) is evaluated through Prometheus's HTTP API while the traffic flows.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.producers.client import RegisterClient
from receiptflow.producers.simulator import Simulator, Traffic
from receiptflow.stack.process import free_port
from receiptflow.topics import create_topics

from ..unit import test_deploy_bundle as bundle
from .support import env_for

SERIES_WITHIN = 240.0
CLOSED = "receiptflow_analytics_windows_closed_total"  # seconds for every query to have series, on a loaded machine
E2E = "receiptflow_checkout_to_output_seconds"
STAGES = {"router", "profiles", "warehouse"}  # the sink reports its stage as "warehouse"


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _unknown_chain_checkout(settings: Settings) -> None:
    codec = Codec()
    traffic = Traffic(Simulator(99, stores=2, customers=5), lambda c: codec.encode("checkout", c.to_avro()))
    emission = next(e for e in traffic.emissions(1, datetime.now(UTC), rate=10.0) if e.checkout is not None)
    assert emission.checkout is not None
    client = RegisterClient(settings)
    client.send(dataclasses.replace(emission.checkout, chain="NEWCHAIN"))
    assert client.flush(60).failed == 0


def _yesterdays_checkout(settings: Settings, n: int) -> None:
    """Checkout ``n`` of chain ABC, anonymous, sold 24 hours ago: its window is yesterday's, which the
    aggregator (no grace) closes as soon as it has read one of today's ABC baskets."""
    sold = datetime.now(UTC) - timedelta(days=1)
    checkout = Simulator(100 + n, stores=6, customers=5).checkout(sold)
    client = RegisterClient(settings)
    client.send(
        dataclasses.replace(checkout, chain="ABC", store_id="ABC-0001", card_id=None, receipt_id=f"ABC-yesterday-{n}")
    )
    assert client.flush(60).failed == 0


def test_every_dashboard_query_returns_series_from_prometheus_scraping_the_pipeline(
    settings: Settings, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus not found: `make setup` installs the Debian prometheus package")
    create_topics(settings)
    ports = {"processor": free_port(), "sink": free_port(), "producer": free_port()}
    commands = {
        "processor": ["process", "--role", "all"],
        "sink": ["sink", "run"],
        "producer": [
            "simulate", "--stores", "6", "--customers", "60", "--rate", "15", "--duration", "600",
            "--dup-rate", "0.05", "--bad-rate", "0.05", "--consent-change-rate", "0.05",
            "--outbox", str(tmp_path / "outbox.sqlite3"),
        ],
    }  # fmt: skip
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": f"receiptflow-{role}", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for role, port in ports.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    # No grace: yesterday's window closes once today's baskets of its chain are read.
    env = {**env_for(settings), "RECEIPTFLOW_ANALYTICS_GRACE_SECONDS": "0"}
    web = free_port()
    procs = []
    try:
        for role, argv in commands.items():
            with (tmp_path / f"{role}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "receiptflow", *argv, "--metrics-port", str(ports[role])],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        with (tmp_path / "prometheus.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{web}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
        _unknown_chain_checkout(settings)
        _yesterdays_checkout(settings, 1)
        late_sent = False
        base = f"http://127.0.0.1:{web}"
        exprs = [(where, bundle.grafana_to_promql(expr)) for where, expr in bundle.dashboard_exprs()]
        assert len(exprs) > 20
        empty = [where for where, _ in exprs]
        deadline = time.monotonic() + SERIES_WITHIN
        while empty and time.monotonic() < deadline:
            for proc, role in zip(procs, [*commands, "prometheus"], strict=True):
                assert proc.poll() is None, f"{role} ended: {(tmp_path / f'{role}.log').read_text()[-2000:]}"
            time.sleep(2)
            try:
                empty = [where for where, expr in exprs if not _query(base, expr)]
                if not late_sent and _query(base, f'{CLOSED}{{chain="ABC"}}'):
                    # Yesterday's window is closed: the next basket of it is late.
                    _yesterdays_checkout(settings, 2)
                    late_sent = True
            except OSError:  # Prometheus still starting
                continue
        assert not empty, f"queries without series: {empty}"
        # The alert on windows that do not close watches the oldest open window's end: today's, tonight
        # (yesterday's closed at once), so later than now and at most a day (and an hour of DST) ahead.
        (oldest,) = _query(base, "receiptflow_analytics_oldest_open_window_end_timestamp_seconds")
        assert 0 < float(oldest["value"][1]) - time.time() <= 25 * 3600, oldest
        # End-to-end latency from every stage, each measured from its checkouts' append time (minutes
        # at most here: a stage that measured from the register's event time or from nothing would not be).
        stages: dict[str, float] = {}
        while set(stages) != STAGES and time.monotonic() < deadline + 60:
            time.sleep(2)
            p99 = _query(base, f"histogram_quantile(0.99, sum by (le, stage) (rate({E2E}_bucket[5m])))")
            stages = {s["metric"]["stage"]: float(s["value"][1]) for s in p99}
        assert set(stages) == STAGES, stages
        assert all(0 <= seconds < 120 for seconds in stages.values()), stages
        # Every scraped process is up under the job the dashboard and the alerts select.
        up = {s["metric"]["job"]: s["value"][1] for s in _query(base, 'up{job=~"receiptflow-.*"}')}
        assert up == {f"receiptflow-{role}": "1" for role in ports}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
