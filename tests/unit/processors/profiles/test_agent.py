"""The profile agents' faust consumer: what it is built with (nothing connects here); how a batch of
``consents`` records is read (the valid changes, and the records to dead-letter)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.consent_codec import WrittenConsent
from receiptflow.models import ConsentChange
from receiptflow.processors.profiles.agent import create_app, decode_consents

CODEC = Codec()
CHANGE = ConsentChange("6390000000001", datetime(2026, 5, 1, 12, tzinfo=UTC), False, True, "app")


def _worker_consumer(settings: Settings) -> Any:
    async def build() -> Any:
        app = create_app(settings)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        await consumer.stop()  # built, never started: closes its client
        return consumer

    return asyncio.run(build())


def test_the_agents_read_only_committed_records(tmp_path: Path) -> None:
    consumer = _worker_consumer(Settings(local={"data_dir": tmp_path}))
    assert consumer._isolation_level == "read_committed"


@pytest.mark.parametrize("wait_ms", [20, 100, 750])
def test_the_fetch_waits_on_the_broker_as_long_as_the_setting_says(tmp_path: Path, wait_ms: int) -> None:
    # faust builds its consumer with a 1.5 s wait. One fetch per broker at a time means a fetch for
    # the idle consents topic alone holds back every purchase behind it for that long.
    consumer = _worker_consumer(Settings(local={"data_dir": tmp_path}, profiles={"fetch_wait_ms": wait_ms}))
    assert consumer._fetch_max_wait_ms == wait_ms


def test_the_default_wait_is_short_beside_the_latency_target(tmp_path: Path) -> None:
    # The target is 250 ms from checkout to profile at p99; a wait of its size would use it all up.
    consumer = _worker_consumer(Settings(local={"data_dir": tmp_path}))
    assert consumer._fetch_max_wait_ms <= 100


def test_the_profile_agent_keeps_the_valid_changes_of_a_batch_and_rejects_the_bad_ones() -> None:
    written = int(CHANGE.event_time.timestamp() * 1000) + 1234  # the append time (ms)

    def message(offset: int, value: bytes | None, appended_ms: int = written) -> SimpleNamespace:
        # faust gives the timestamp in seconds (the broker's ms / 1000.0)
        return SimpleNamespace(
            topic="consents",
            partition=2,
            offset=offset,
            key=b"6390000000001",
            value=value,
            timestamp=appended_ms / 1000,
        )

    good = CODEC.encode("consent_change", CHANGE.to_avro())
    # Judged at its append time: dated more than the clock drift after it, the same change is refused.
    early = written - 11 * 60_000
    batch = [message(7, b"garbage"), message(8, good), message(9, None), message(10, good, early)]
    changes, rejected = decode_consents(CODEC, batch)
    assert changes == [WrittenConsent(CHANGE, written, offset=8)]
    assert [(r.topic, r.partition, r.offset, r.value, r.error.reason) for r in rejected] == [
        ("consents", 2, 7, b"garbage", "undecodable"),
        ("consents", 2, 10, good, "future_event_time"),
    ]


def test_the_agents_subscribe_no_topic_outside_the_catalogue(tmp_path: Path) -> None:
    # faust's leader election would add a topic of its own (<app id>-__assignor-__leader), which the
    # catalogue does not create: the broker would answer "not found" on every metadata refresh.
    async def subscribed() -> set[str]:
        app: Any = create_app(Settings(local={"data_dir": tmp_path}))
        await app._leader_assignor.on_start()  # where faust adds that topic
        return {name for topic in app.topics for name in topic.topics}

    topics = asyncio.run(subscribed())
    assert topics and not [t for t in topics if "__assignor" in t], topics
