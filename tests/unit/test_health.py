"""The exporter of the long-running processes: per-role metrics, /healthz, /readyz, lag series."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from receiptflow import lag
from receiptflow.config import Settings
from receiptflow.errors import ConfigError
from receiptflow.health import (
    CONSUMER_CHECKS,
    PARTITIONS_ASSIGNED,
    STATE_RESTORED,
    BrokerProbe,
    Readiness,
    exporter_port,
    process_readiness,
    serve,
    serving,
)
from receiptflow.lag import LagGauge, PartitionLag
from receiptflow.metrics import DEFINITIONS, ROLES, Metrics
from receiptflow.stack.process import free_port

pytestmark = pytest.mark.unit


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_readyz_is_503_until_every_check_holds_then_200_and_503_again_when_one_fails() -> None:
    router = Readiness("router", CONSUMER_CHECKS)
    broker = {"up": True}
    # The real broker probe asks a broker (the integration tests); here a function stands in for it.
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    readiness = process_readiness("process --role router", settings, [router], broker=lambda: broker["up"])
    exporter = serve(Metrics(CollectorRegistry(), roles=("router",)), readiness, free_port())
    assert exporter is not None
    base = f"http://127.0.0.1:{exporter.port}"
    try:
        status, body = _get(base + "/readyz")
        answer = json.loads(body)
        assert status == 503 and answer["ready"] is False
        assert answer["checks"] == {
            "router.partitions_assigned": False,
            "router.state_restored": False,
            "broker_reachable": True,
        }
        router.mark(PARTITIONS_ASSIGNED)
        assert _get(base + "/readyz")[0] == 503
        router.mark(STATE_RESTORED)
        status, body = _get(base + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        broker["up"] = False
        assert _get(base + "/readyz")[0] == 503
        broker["up"] = True
        router.mark(PARTITIONS_ASSIGNED, False)  # a rebalance began
        assert _get(base + "/readyz")[0] == 503
        # Alive all along.
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body) == {"alive": True, "role": "process --role router"}
    finally:
        exporter.close()


def test_a_probe_that_raises_means_not_ready_never_a_server_error() -> None:
    def broken() -> bool:
        raise RuntimeError("no metadata")

    readiness = Readiness("sink", (), {"broker_reachable": broken})
    assert readiness.checks() == {"broker_reachable": False}
    with pytest.raises(KeyError):
        readiness.mark("no_such_check")


def test_the_broker_probe_answers_false_for_a_broker_that_is_not_there() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        probe = BrokerProbe(Settings(_env_file=None, kafka={"bootstrap_servers": f"127.0.0.1:{port}"}))  # type: ignore[call-arg]
        assert probe() is False


def test_metrics_serves_only_the_roles_metrics_plus_process_and_platform_collectors() -> None:
    metrics = Metrics(CollectorRegistry(), roles=("sink",))
    metrics.warehouse_rows_total.labels("receipts").inc(3)
    metrics.profile_updates_total.inc()  # shared code may touch another role's metric: never served
    exporter = serve(metrics, Readiness("sink"), free_port())
    assert exporter is not None
    try:
        status, text = _get(f"http://127.0.0.1:{exporter.port}/metrics")
        assert status == 200
        families = _families(text)
        assert 'receiptflow_warehouse_rows_total{table="receipts"} 3.0' in text
        assert "receiptflow_consumer_lag_records" in families
        assert "receiptflow_profile_updates_total" not in families
        assert "receiptflow_transactions_total" not in families
        assert {"process_resident_memory_bytes", "process_start_time_seconds", "python_info"} <= families
        status, text = _get(f"http://127.0.0.1:{exporter.port}/nothing")
        assert status == 404 and "/readyz" in text
    finally:
        exporter.close()


def test_each_role_exports_its_own_metrics_and_every_metric_has_a_role() -> None:
    by_role: dict[str, set[str]] = {}
    for role in ROLES:
        names = {f.name for f in Metrics(CollectorRegistry(), roles=(role,)).registry.collect()}
        by_role[role] = names
    assert "receiptflow_produce_errors" in by_role["producer"]  # counters collect without _total
    assert "receiptflow_outbox_depth_records" in by_role["producer"]
    assert "receiptflow_store_checkouts" in by_role["router"]
    assert "receiptflow_profile_updates" in by_role["profiles"] and "receiptflow_profile_updates" not in by_role["sink"]
    assert "receiptflow_produce_errors" not in by_role["router"] | by_role["profiles"] | by_role["sink"]
    assert "receiptflow_analytics_late_baskets" in by_role["aggregate"]
    assert "receiptflow_analytics_open_windows" not in by_role["router"] | by_role["sink"]
    everything = {f.name for f in Metrics(CollectorRegistry()).registry.collect()}
    assert everything == set().union(*by_role.values())
    assert all(d.roles for d in DEFINITIONS)
    with pytest.raises(ValueError, match="unknown metric roles"):
        Metrics(roles=("routr",))


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.name)
def test_metric_names_follow_the_prometheus_conventions(definition: Any) -> None:
    name = definition.name
    assert name.startswith("receiptflow_")
    if definition.kind is Counter:
        assert name.endswith("_total")
    else:
        assert definition.kind in (Gauge, Histogram)
        # The unit of a count of things is the thing, in the plural (open windows are no records).
        assert name.endswith(("_seconds", "_records", "_bytes", "_windows")), f"{name}: no unit suffix"


def test_serve_refuses_a_port_in_use_in_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics port 127.0.0.1:{port} is in use"):
            serve(Metrics(CollectorRegistry()), Readiness("x"), port)
    assert serve(Metrics(CollectorRegistry()), Readiness("x"), 0) is None


def test_lag_series_follow_the_assignment() -> None:
    metrics = Metrics(CollectorRegistry(), roles=("router",))
    gauge = LagGauge(metrics, "receiptflow-processor")

    def series() -> dict[tuple[str, str], float]:
        return {
            (s.labels["topic"], s.labels["partition"]): s.value
            for f in metrics.registry.collect()
            if f.name == "receiptflow_consumer_lag_records"
            for s in f.samples
        }

    gauge.update({("checkouts", 0): 5, ("checkouts", 1): 0, ("consents", 0): -2})
    assert series() == {("checkouts", "0"): 5, ("checkouts", "1"): 0, ("consents", "0"): 0}
    gauge.update({("checkouts", 1): 7})  # partitions 0 went to another worker in a rebalance
    assert series() == {("checkouts", "1"): 7}


def test_partition_lag_counts_every_record_when_nothing_is_committed() -> None:
    assert PartitionLag("g", "checkouts", 0, None, 12).lag == 12
    assert PartitionLag("g", "checkouts", 0, 10, 12).lag == 2
    assert PartitionLag("g", "checkouts", 0, 15, 12).lag == 0


def test_every_long_running_command_is_served_the_same_way_while_it_runs() -> None:
    settings = Settings(_env_file=None, metrics={"port": 9100})  # type: ignore[call-arg]
    # The processor on metrics_port, the sink on the next one, the simulator on the one after.
    assert [exporter_port(settings, None, offset) for offset in (0, 1, 2)] == [9100, 9101, 9102]
    assert exporter_port(settings, 0, 1) == 0 and exporter_port(settings, 9200, 1) == 9200  # --metrics-port
    assert exporter_port(settings.model_copy(update={"metrics": {"port": 0}}), None, 1) == 0  # off stays off
    port = free_port()
    with serving("process --role all", settings, ("router", "profiles"), port=port) as served:
        assert set(served.readiness) == {"router", "profiles"}
        assert served.readiness["router"].checks() == dict.fromkeys(CONSUMER_CHECKS, False)
        assert served.exporter is not None and served.exporter.port == port
        served.metrics.consumed_total.labels("checkouts").inc()
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and 'receiptflow_consumed_total{topic="checkouts"} 1.0' in text
        assert "receiptflow_warehouse_rows_total" not in text  # the sink's, not this command's
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body)["role"] == "process --role all"
    with pytest.raises(urllib.error.URLError):
        _get(f"http://127.0.0.1:{port}/healthz")  # stopped with the command
    with serving("simulate", settings, ("producer",), port=0) as served:
        assert served.readiness == {} and served.exporter is None  # no consumer, no server on port 0


def test_partition_lag_counts_from_the_first_unread_record_past_the_committed_offset() -> None:
    # Read to the end of a transactional partition: the commit marker after the last record is no lag.
    assert PartitionLag("g", "purchases.customer", 0, 41, 42, unread=42).lag == 0
    # Markers (or aborted records) before the next record are none either; those after it still count.
    assert PartitionLag("g", "purchases.customer", 0, 10, 42, unread=12).lag == 30


def test_first_unread_answers_each_group_from_one_look_at_the_lowest_committed_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[dict[tuple[str, int], int]] = []

    def probe(
        _settings: object, starts: dict[tuple[str, int], int], ends: object, timeout: float
    ) -> dict[tuple[str, int], int]:
        asked.append(dict(starts))
        return {("t", 0): 42, ("t", 1): 7}  # partition 1's first unread record is at 7; 2 did not answer

    monkeypatch.setattr(lag, "_probe", probe)
    starts = [(("t", 0), 41), (("t", 0), 40), (("t", 1), 5), (("t", 1), 9), (("t", 2), 3)]
    found = lag.first_unread(Settings(), starts, {("t", 0): 42, ("t", 1): 20, ("t", 2): 8}, 1.0)
    assert asked == [{("t", 0): 40, ("t", 1): 5, ("t", 2): 3}]
    # Past 9 of partition 1 it cannot tell (the record at 7 is before it): that group's committed offset counts.
    assert found == {(("t", 0), 41): 42, (("t", 0), 40): 42, (("t", 1), 5): 7}
