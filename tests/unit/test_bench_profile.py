"""The profile summaries' buckets: the router's by the calling line first, the agent's by file only."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from profile_router import AGENT_BUCKETS, ROUTER_BUCKETS, _bucket


def test_a_call_into_c_is_put_in_a_router_bucket_by_the_line_that_makes_it() -> None:
    route = [("run", "receiptflow/processors/router.py", ""), ("step", "receiptflow/processors/route_step.py", "")]
    native = [*route, ("_fast", "receiptflow/processors/route_step.py", "encoded = fast.route(")]
    kafka = [*route, ("_send", "receiptflow/processors/router.py", "self._producer.produce(topic, value)")]
    assert _bucket(native, ROUTER_BUCKETS) == "native extension (receiptflow_fast)"
    assert _bucket(kafka, ROUTER_BUCKETS) == "Kafka client (confluent-kafka calls)"
    assert _bucket(route, ROUTER_BUCKETS) == "other Python (router loop, merge, state, metrics)"


def test_the_agent_buckets_go_by_the_innermost_known_file() -> None:
    frames = [
        ("hand_over", "receiptflow/processors/profile_consumer.py", ""),
        ("execute", "redis/client.py", "fast.route("),  # the router's line rules do not apply here
    ]
    assert _bucket(frames, AGENT_BUCKETS) == "Redis client (commands packed, replies read)"
    assert _bucket([("loop", "receiptflow/cli/process.py", "")], AGENT_BUCKETS) == "other Python"
