"""The embedded stack: idempotent up, clean down, and acknowledged records surviving a broker SIGKILL.

These tests start their own broker and Redis (own data dir, free ports) so they can kill them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from receiptflow.config import Settings
from receiptflow.stack import Stack, free_port
from receiptflow.stack.process import cmdline, is_alive


@pytest.fixture
def own_stack(tmp_path: Path) -> Stack:
    settings = Settings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        data_dir=tmp_path / "data",
        kafka_heap="512m",
    )
    stack = Stack(settings)
    yield stack
    stack.down()


def _our_processes(data_dir: Path) -> list[int]:
    marker = str(data_dir.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and marker in cmdline(int(entry.name)) and is_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def test_up_twice_is_harmless_and_down_leaves_nothing(own_stack: Stack) -> None:
    first = {s.name: s for s in own_stack.up()}
    assert first["kafka"].state == "running" and first["redis"].state == "running"
    second = {s.name: s for s in own_stack.up()}
    assert second["kafka"].pid == first["kafka"].pid
    assert second["redis"].pid == first["redis"].pid
    assert own_stack.kafka.ready() and own_stack.redis.ready()
    status = {s.name: s.state for s in own_stack.status()}
    assert status["kafka"] == "running" and status["redis"] == "running"

    pids = [first["kafka"].pid, first["redis"].pid]
    own_stack.down()
    assert all(pid is not None and not is_alive(pid) for pid in pids)
    assert _our_processes(own_stack.settings.data_dir) == []
    assert {s.name: s.state for s in own_stack.status()}["kafka"] == "stopped"
    assert not (own_stack.settings.data_dir / "run" / "kafka.pid").exists()


def test_stale_pid_file_is_ignored(own_stack: Stack) -> None:
    run = own_stack.settings.data_dir / "run"
    run.mkdir(parents=True)
    (run / "redis.pid").write_text(f"{os.getpid()}\n")  # alive, but not a redis-server of ours
    assert own_stack.redis.pid() is None
    assert not (run / "redis.pid").exists()


def test_acknowledged_records_survive_broker_sigkill(own_stack: Stack) -> None:
    own_stack.up()
    conf = own_stack.settings.kafka_config()
    topic = f"durability-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    acked: list[bytes] = []
    failed: list[str] = []

    def report(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is None:
            acked.append(msg.value())
        else:
            failed.append(str(err))

    producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    n = 2000
    for i in range(n):
        producer.produce(topic, key=str(i % 50).encode(), value=f"receipt-{i}".encode(), on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert (len(acked), failed) == (n, [])
    del producer, admin  # no client keeps reconnecting to the killed broker

    pid = own_stack.kafka.pid()
    assert pid is not None
    own_stack.kafka.kill()  # SIGKILL: no clean shutdown, no final flush
    assert not is_alive(pid)

    restarted = own_stack.kafka.up()
    assert restarted.state == "running", restarted
    assert restarted.pid != pid

    consumer = Consumer(
        {
            **conf,
            "group.id": f"verify-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: set[bytes] = set()
    for _ in range(120):
        for m in consumer.consume(1000, timeout=0.5):
            if m.error() is None:
                seen.add(m.value())
        if len(seen) >= n:
            break
    consumer.close()
    missing = set(acked) - seen
    assert not missing, f"{len(missing)} of {n} acknowledged records missing after the SIGKILL"
    assert seen == set(acked)
