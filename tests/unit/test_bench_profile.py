"""The profile summaries' buckets: the router's by the calling line first, the agent's by file only."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from profile_router import AGENT_BUCKETS, ROUTER_BUCKETS, _bucket, _short


def test_a_call_into_c_is_put_in_a_router_bucket_by_the_line_that_makes_it() -> None:
    route = [
        ("run", "receiptflow/processors/router/worker.py", ""),
        ("step", "receiptflow/processors/router/step.py", ""),
    ]
    native = [*route, ("_fast", "receiptflow/processors/router/step.py", "encoded = fast.route(")]
    kafka = [*route, ("_send", "receiptflow/processors/router/worker.py", "self._producer.produce(topic, value)")]
    assert _bucket(native, ROUTER_BUCKETS) == "native extension (receiptflow_fast)"
    assert _bucket(kafka, ROUTER_BUCKETS) == "Kafka client (confluent-kafka calls)"
    assert _bucket(route, ROUTER_BUCKETS) == "other Python (router loop, merge, state, metrics)"


def test_the_agent_buckets_go_by_the_innermost_known_file() -> None:
    frames = [
        ("hand_over", "receiptflow/processors/profiles/consumer.py", ""),
        ("execute", "redis/client.py", "fast.route("),  # the router's line rules do not apply here
    ]
    assert _bucket(frames, AGENT_BUCKETS) == "Redis client (commands packed, replies read)"
    assert _bucket([("loop", "receiptflow/cli/process.py", "")], AGENT_BUCKETS) == "other Python"


def test_frames_of_the_mapped_folders_are_named_by_their_package() -> None:
    assert _short("/home/dev/receiptflow/processors/router/route.py") == "receiptflow/processors/router/route.py"
    assert _short("/srv/checkout/processors/router/route.py") == "receiptflow/processors/router/route.py"
    frames = [("route", "receiptflow/processors/router/route.py", "")]
    assert _bucket(frames, ROUTER_BUCKETS) == "pure core (models, validation, policy, route)"
    store = [("apply", "receiptflow/processors/profiles/store.py", "")]
    assert _bucket(store, AGENT_BUCKETS) == "profile rules and store (pure fold, keys, scripts)"
