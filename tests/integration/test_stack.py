"""The embedded stack against real processes: status, idempotent up, clean down, and acknowledged
records surviving a SIGKILL of the broker.

These tests start a broker and Redis of their own (``own_stack``: own data dir, free ports), not the
session servers, because they stop and kill them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from receiptflow.config import Settings
from receiptflow.redis_auth import RedisRole
from receiptflow.stack import ComponentStatus, EmbeddedRedis, Stack
from receiptflow.stack.process import cmdline, is_alive, iter_pids, process_cwd

from .conftest import RedisServer


def _processes_of(data_dir: Path) -> list[int]:
    """Live processes whose command line or working directory points into ``data_dir``."""
    marker = str(data_dir.resolve())
    return [
        pid
        for pid in iter_pids()
        if is_alive(pid) and (marker in cmdline(pid) or (process_cwd(pid) or "").startswith(marker))
    ]


def _states(statuses: list[ComponentStatus]) -> dict[str, str]:
    return {s.name: s.state for s in statuses}


def test_status_up_twice_and_down_leaves_no_process(own_stack: Stack) -> None:
    data_dir = own_stack.settings.local.data_dir
    before = _states(own_stack.status())
    assert before["kafka"] == "stopped" and before["redis"] == "stopped"

    first = {s.name: s for s in own_stack.up()}
    assert first["kafka"].state == "running" and first["redis"].state == "running"
    assert first["duckdb"].state == "file"
    assert own_stack.kafka.ready() and own_stack.redis.ready()
    assert (data_dir / "kafka" / "logs" / "server.log").stat().st_size > 0, "the broker logs to its file"

    second = {s.name: s for s in own_stack.up()}
    assert second["kafka"].state == "running" and second["kafka"].pid == first["kafka"].pid
    assert second["redis"].state == "running" and second["redis"].pid == first["redis"].pid
    assert own_stack.kafka.ready() and own_stack.redis.ready()

    status = {s.name: s for s in own_stack.status()}
    assert status["kafka"].state == "running" and status["kafka"].pid == first["kafka"].pid
    assert status["redis"].state == "running" and status["redis"].pid == first["redis"].pid
    pids = [first["kafka"].pid, first["redis"].pid]
    assert all(pid is not None and pid in _processes_of(data_dir) for pid in pids)

    down = _states(own_stack.down())
    assert down["kafka"] == "stopped" and down["redis"] == "stopped"
    assert not any(is_alive(pid) for pid in pids if pid is not None)
    assert _processes_of(data_dir) == []
    assert not list((data_dir / "run").glob("*.pid"))
    after = _states(own_stack.status())
    assert after["kafka"] == "stopped" and after["redis"] == "stopped"
    assert _states(own_stack.down())["kafka"] == "stopped"  # down twice is harmless too


def _read_values(conf: dict[str, object], topic: str, partitions: int, expected: int) -> set[bytes]:
    consumer = Consumer(
        {
            **conf,
            "group.id": f"verify-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    seen: set[bytes] = set()
    at_eof: set[int] = set()
    try:
        consumer.subscribe([topic])
        for _ in range(240):  # bounded: at most ~2 min of 0.5 s polls
            messages: list[Message] = consumer.consume(1000, timeout=0.5)
            for m in messages:
                err = m.error()
                if err is None:
                    seen.add(m.value() or b"")
                    at_eof.discard(m.partition() or 0)
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(m.partition() or 0)
            if len(at_eof) == partitions and len(seen) >= expected:
                break
    finally:
        consumer.close()
    return seen


@pytest.mark.slow  # two broker starts, one of them after a crash (~20 s)
def test_acknowledged_records_survive_a_broker_sigkill(own_stack: Stack) -> None:
    up = _states(own_stack.up())
    assert up["kafka"] == "running"
    conf = own_stack.settings.kafka_config()
    topic = f"durability-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(conf)  # keep a reference: the future fails if the client is destroyed first
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)

    acked: list[bytes] = []
    failed: list[str] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            acked.append(msg.value() or b"")
        else:
            failed.append(str(err))

    producer = Producer({**conf, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    n = 3000
    sent = [f"receipt-{i}-{uuid.uuid4().hex}".encode() for i in range(n)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=str(i % 50).encode(), value=value, on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failed == []
    assert sorted(acked) == sorted(sent), "every record must be acknowledged before the crash"
    del producer, admin  # no client keeps reconnecting to the killed broker

    pid = own_stack.kafka.kill()  # SIGKILL: no controlled shutdown, no final flush
    assert not is_alive(pid)
    crashed = {s.name: s for s in own_stack.status()}
    assert crashed["kafka"].state == "stopped" and crashed["kafka"].pid is None
    assert crashed["redis"].state == "running"
    assert not (own_stack.settings.local.data_dir / "run" / "kafka.pid").exists(), "the stale PID file is removed"

    restarted = {s.name: s for s in own_stack.up()}
    assert restarted["kafka"].state == "running"
    assert restarted["kafka"].pid not in (None, pid)
    assert restarted["redis"].pid == crashed["redis"].pid, "up() leaves the running Redis alone"

    seen = _read_values(conf, topic, 3, n)
    missing = set(acked) - seen
    assert not missing, f"{len(missing)} of {n} acknowledged records are missing after the SIGKILL"
    assert seen == set(acked)


def test_a_redis_that_already_answers_is_used_as_external(redis_server: RedisServer, tmp_path: Path) -> None:
    # Answering means answering the profile writer's login (given, as production gives it).
    settings = Settings(
        **redis_server.role_settings(), redis={"url": redis_server.url}, local={"data_dir": tmp_path / "data"}
    )
    server = EmbeddedRedis(settings)
    assert server.up().state == "external"
    assert server.status().state == "external"
    assert server.down().state == "external"  # never signalled: we did not start it
    client = redis.Redis.from_url(redis_server.role_url(RedisRole.WRITER))
    try:
        assert client.ping()
    finally:
        client.close()
    assert not (tmp_path / "data" / "run" / "redis.pid").exists()
    assert not (tmp_path / "data" / "redis").exists()
