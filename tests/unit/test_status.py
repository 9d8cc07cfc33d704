"""``receiptflow status``'s pieces that need no broker: where the processes are, and what their /readyz says."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from receiptflow.config import Settings
from receiptflow.errors import ConfigError
from receiptflow.health import Readiness, serve
from receiptflow.metrics import Metrics
from receiptflow.stack.process import free_port
from receiptflow.status import endpoints, process_state

pytestmark = pytest.mark.unit


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_endpoints_default_to_the_processor_and_sink_ports_on_this_machine() -> None:
    assert endpoints(_settings(metrics_port=9200)) == {"processor": "127.0.0.1:9200", "sink": "127.0.0.1:9201"}
    assert endpoints(_settings(metrics_port=0)) == {}
    given = _settings(status_endpoints="router-0=r0.router:9108, sink=10.0.0.5:9109,")
    assert endpoints(given) == {"router-0": "r0.router:9108", "sink": "10.0.0.5:9109"}
    with pytest.raises(ConfigError, match="'router' is not name=host:port"):
        endpoints(_settings(status_endpoints="router"))


def test_process_state_is_ready_not_ready_with_the_failing_checks_or_unreachable() -> None:
    readiness = Readiness("sink", ("partitions_assigned", "state_restored"))
    exporter = serve(Metrics(CollectorRegistry(), roles=("sink",)), readiness, free_port())
    assert exporter is not None
    address = f"127.0.0.1:{exporter.port}"
    try:
        state = process_state("sink", address)
        assert (state.state, state.failing) == ("not ready", ["partitions_assigned", "state_restored"])
        readiness.mark("partitions_assigned")
        assert process_state("sink", address).failing == ["state_restored"]
        readiness.mark("state_restored")
        assert process_state("sink", address).state == "ready"
    finally:
        exporter.close()
    assert process_state("sink", address, timeout=1).state == "unreachable"
