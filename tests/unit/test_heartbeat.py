"""The heartbeat line: its words, when it is due, and the counts it reads from the metrics."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from receiptflow.heartbeat import Heartbeat, counter_total, heartbeat_line
from receiptflow.lag import LagGauge
from receiptflow.metrics import Metrics


def test_the_line_says_records_rate_and_lag() -> None:
    assert heartbeat_line("router", 120_345, 108_045, 30.0, 0) == (
        "router: 120,345 records, 410/s over the last 30 s, lag 0"
    )
    assert heartbeat_line("sink", 5, 5, 30.0, None) == "sink: 5 records, 0/s over the last 30 s, lag unknown"
    assert heartbeat_line("sink", 7, 0, 0.0, 1_234) == "sink: 7 records, 0/s over the last 0 s, lag 1,234"


def test_a_line_every_thirty_seconds_with_the_rate_since_the_last(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    count = [1_000]
    beat = Heartbeat("profiles", lambda: count[0], clock=lambda: now[0])
    now[0], count[0] = 129.9, 2_000
    assert beat.beat(3) is None  # not due yet
    now[0], count[0] = 130.0, 4_000
    with caplog.at_level(logging.INFO, logger="receiptflow.heartbeat"):
        line = beat.beat(3)
    assert line == "profiles: 4,000 records, 100/s over the last 30 s, lag 3"
    assert [r.getMessage() for r in caplog.records] == [line]
    now[0], count[0] = 160.0, 4_300
    assert beat.beat(0) == "profiles: 4,300 records, 10/s over the last 30 s, lag 0"


def test_records_are_the_counter_summed_over_its_labels() -> None:
    metrics = Metrics(CollectorRegistry())
    total = counter_total(metrics.consumed_total)
    assert total() == 0
    metrics.consumed_total.labels("checkouts").inc(40)
    metrics.consumed_total.labels("consents").inc(2)
    assert total() == 42


def test_the_lag_report_feeds_the_heartbeat_the_summed_lag(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    now = [0.0]
    gauge = LagGauge(metrics, "group", Heartbeat("router", counter_total(metrics.consumed_total), clock=lambda: now[0]))
    metrics.consumed_total.labels("checkouts").inc(90)
    with caplog.at_level(logging.INFO, logger="receiptflow.heartbeat"):
        gauge.update({("checkouts", 0): 5})  # not due: no line
        now[0] = 30.0
        gauge.update({("checkouts", 0): 5, ("checkouts", 1): 7})
    assert [r.getMessage() for r in caplog.records] == ["router: 90 records, 3/s over the last 30 s, lag 12"]
