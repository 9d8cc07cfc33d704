"""End-to-end times observed from record timestamps (metrics.observe_ages, the profile agent's stamps)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from receiptflow.metrics import Metrics, observe_ages
from receiptflow.processors.profiles.agent import stamps_ms

pytestmark = pytest.mark.unit

NOW = 1_700_000_000.0  # seconds since the epoch
NOW_MS = int(NOW * 1000)


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_ages_land_in_their_buckets_and_records_without_a_timestamp_are_skipped() -> None:
    metrics = Metrics(CollectorRegistry(), roles=["sink"])
    child = metrics.checkout_to_output_seconds.labels("warehouse")
    # 0.2 s, 45 s and 20 min old; two records without a timestamp (0, and -1 as librdkafka reports none).
    observed = observe_ages(child, NOW, [NOW_MS - 200, NOW_MS - 45_000, NOW_MS - 1_200_000, 0, -1])
    assert observed == 3
    name = "receiptflow_checkout_to_output_seconds"
    assert _sample(metrics, f"{name}_count", stage="warehouse") == 3
    assert _sample(metrics, f"{name}_sum", stage="warehouse") == pytest.approx(0.2 + 45 + 1200)
    assert _sample(metrics, f"{name}_bucket", stage="warehouse", le="0.1") == 0
    assert _sample(metrics, f"{name}_bucket", stage="warehouse", le="0.25") == 1
    assert _sample(metrics, f"{name}_bucket", stage="warehouse", le="30.0") == 1
    assert _sample(metrics, f"{name}_bucket", stage="warehouse", le="60.0") == 2
    assert _sample(metrics, f"{name}_bucket", stage="warehouse", le="1800.0") == 3


def test_a_timestamp_ahead_of_the_clock_counts_as_no_time_not_a_negative_age() -> None:
    metrics = Metrics(CollectorRegistry(), roles=["router"])
    observe_ages(metrics.checkout_to_output_seconds.labels("router"), NOW, [NOW_MS + 5_000])
    name = "receiptflow_checkout_to_output_seconds"
    assert _sample(metrics, f"{name}_sum", stage="router") == 0
    assert _sample(metrics, f"{name}_bucket", stage="router", le="0.05") == 1


def test_the_profile_agent_reads_faust_timestamps_in_seconds_as_milliseconds() -> None:
    def message(timestamp: float | None) -> SimpleNamespace:
        return SimpleNamespace(timestamp=timestamp)

    assert stamps_ms([message(1_700_000_000.25), message(None), message(1_700_000_001.0)]) == [
        1_700_000_000_250,
        1_700_000_001_000,
    ]
