"""The one shape of a long-running Kafka worker (router, sink): readiness, heartbeat and idleness."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from receiptflow.health import PARTITIONS_ASSIGNED, STATE_RESTORED
from receiptflow.metrics import Metrics
from receiptflow.worker_loop import KafkaWorker, Rebalance

pytestmark = pytest.mark.unit

PARTITIONS = [TopicPartition("t", 0), TopicPartition("t", 1)]


class Member:
    """A consumer stand-in: the group's callbacks are called by the test; positions 5, ends 8."""

    def __init__(self) -> None:
        self.topics: list[str] = []
        self.on_assign: Rebalance | None = None
        self.on_revoke: Rebalance | None = None
        self.assigned: list[TopicPartition] = []

    def subscribe(
        self, topics: list[str], on_assign: Rebalance | None = None, on_revoke: Rebalance | None = None
    ) -> None:
        self.topics, self.on_assign, self.on_revoke = topics, on_assign, on_revoke

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 5) for tp in partitions]

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return partitions

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return 0, 8


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Worker(KafkaWorker):
    """Turns as scripted: each turn advances the clock by a second and says whether it had work."""

    def __init__(self, work: list[bool], clock: Clock, **kwargs: Any) -> None:
        super().__init__("worker", "group", Member(), metrics=Metrics(CollectorRegistry()), clock=clock, **kwargs)
        self.work, self.clock, self.turns = work, clock, 0
        self.seen_in_assign: dict[str, bool] = {}
        self.holds = True

    def turn(self) -> bool:
        self.turns += 1
        self.clock.now += 1
        member = self.consumer
        assert isinstance(member, Member)
        if self.turns == 2 and member.on_assign is not None:
            member.on_assign(member, PARTITIONS)  # assigned during the second consume
        return self.work[self.turns - 1] if self.turns <= len(self.work) else False

    def assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.seen_in_assign = self.readiness.checks()

    def idle_counts(self) -> bool:
        return self.holds and super().idle_counts()


def test_partitions_count_as_assigned_once_the_worker_has_taken_them_and_not_after_an_eager_revoke() -> None:
    worker = Worker([], Clock())
    member = worker.consumer
    assert isinstance(member, Member)
    member.subscribe(["t"], on_assign=worker.on_assign, on_revoke=worker.on_revoke)
    worker.on_assign(member, PARTITIONS)
    assert worker.seen_in_assign[PARTITIONS_ASSIGNED] is False  # not while it positions and restores
    assert worker.readiness.checks() == {PARTITIONS_ASSIGNED: True, STATE_RESTORED: False}
    worker.on_revoke(member, PARTITIONS[:1])
    assert worker.readiness.checks()[PARTITIONS_ASSIGNED] is False
    worker.on_assign(member, PARTITIONS[:1])
    worker.incremental = True  # a cooperative revoke takes only part: the rest stays assigned
    worker.on_revoke(member, PARTITIONS[:1])
    assert worker.readiness.checks()[PARTITIONS_ASSIGNED] is True


def test_idleness_counts_from_the_later_of_the_last_work_and_the_assignment() -> None:
    clock = Clock()
    # Turn 1 before any assignment (joining is not idleness), 2 assigned, 3 work, then nothing.
    worker = Worker([False, False, True], clock)
    assert worker.loop(["t"], threading.Event(), max_idle=3.0) is True
    assert worker.turns == 6  # work at turn 3 (t=103), idle 3 s at turn 6 (t=106)
    member = worker.consumer
    assert isinstance(member, Member) and member.topics == ["t"]


def test_no_idle_exit_without_max_idle_nor_while_the_worker_says_idleness_does_not_count() -> None:
    stop = threading.Event()
    clock = Clock()
    worker = Worker([], clock)
    worker.holds = False
    original = worker.turn

    def turn() -> bool:
        if worker.turns == 20:
            stop.set()
        return original()

    worker.turn = turn  # type: ignore[method-assign]
    assert worker.loop(["t"], stop, max_idle=1.0) is False
    assert worker.turns == 21
    assert not worker.idle_over(None)


def test_the_heartbeat_reports_the_lag_of_the_assigned_partitions() -> None:
    worker = Worker([], Clock())
    member = worker.consumer
    assert isinstance(member, Member)
    member.assigned = PARTITIONS
    worker.heartbeat()
    samples = {
        s.labels["partition"]: s.value
        for metric in worker.metrics.consumer_lag.collect()
        for s in metric.samples
        if s.labels.get("group") == "group"
    }
    assert samples == {"0": 3, "1": 3}
