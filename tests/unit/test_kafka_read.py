"""The shared read-to-the-end loop on a scripted consumer: where each partition ends and what errors do."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from receiptflow.errors import BrokerError
from receiptflow.kafka_read import ReadToEnd

pytestmark = pytest.mark.unit


class Scripted:
    """Hands out the given batches, one per ``consume()``, then nothing."""

    def __init__(self, *batches: list[Message]) -> None:
        self.batches = list(batches)
        self.assigned: list[TopicPartition] | None = None
        self.calls = 0

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self.calls += 1
        return self.batches.pop(0) if self.batches else []


def rec(partition: int, offset: int, topic: str = "t") -> Message:
    return Message(topic=topic, partition=partition, offset=offset, value=f"{partition}@{offset}".encode())


def eof(partition: int, topic: str = "t") -> Message:
    return Message(topic=topic, partition=partition, error=KafkaError(KafkaError._PARTITION_EOF))


def err(code: int, partition: int | None = 0, fatal: bool = False) -> Message:
    if partition is None:  # an error of the client, not of a partition (e.g. a lost connection)
        return Message(error=KafkaError(code, fatal=fatal))
    return Message(topic="t", partition=partition, error=KafkaError(code, fatal=fatal))


def offsets(messages: list[Message]) -> list[tuple[int, int]]:
    return [(m.partition() or 0, m.offset() or 0) for m in messages]


def test_each_partition_ends_at_its_eof_and_later_records_are_left_out() -> None:
    consumer = Scripted([rec(0, 5), rec(1, 0), eof(0)], [rec(0, 6), rec(1, 1), eof(1)])
    reading = ReadToEnd(consumer, [TopicPartition("t", 0, 5), TopicPartition("t", 1, 0)], what="test")
    assert offsets(list(reading.records())) == [(0, 5), (1, 0), (1, 1)]
    assert consumer.assigned is not None and [tp.offset for tp in consumer.assigned] == [5, 0]
    assert reading.pending == set()


def test_a_stop_offset_ends_a_partition_without_waiting_for_its_eof() -> None:
    # Partition 0 ends with the record just before its stop (no EOF ever comes for it); partition
    # 1's last offset before the stop is a transaction marker, so the first record past it ends it.
    consumer = Scripted([rec(0, 0), rec(0, 1), rec(1, 0)], [rec(1, 3), rec(1, 4)])
    reading = ReadToEnd(
        consumer,
        [TopicPartition("t", 0, 0), TopicPartition("t", 1, 0)],
        what="test",
        stops={("t", 0): 2, ("t", 1): 3},
        stop_when_idle=True,  # a partition left pending would end the read here instead
    )
    assert [offsets(b) for b in reading.batches(10, 0.1)] == [[(0, 0), (0, 1), (1, 0)], []]
    assert reading.pending == set() and consumer.calls == 2


def test_batches_include_calls_that_brought_nothing_usable() -> None:
    consumer = Scripted([], [rec(0, 0)], [eof(0)])
    batches = list(ReadToEnd(consumer, [TopicPartition("t", 0, 0)], what="test").batches(10, 0.01))
    assert [offsets(b) for b in batches] == [[], [(0, 0)], []]


def test_nothing_to_read_assigns_nothing() -> None:
    consumer = Scripted([rec(0, 0)])
    assert list(ReadToEnd(consumer, [], what="test").records()) == []
    assert consumer.assigned is None and consumer.calls == 0


def test_an_error_is_raised_with_what_was_being_read() -> None:
    consumer = Scripted([rec(0, 0), err(KafkaError._TRANSPORT)])
    with pytest.raises(BrokerError, match=r"^state restore failed: "):
        list(ReadToEnd(consumer, [TopicPartition("t", 0, 0)], what="state restore").records())


def test_transient_errors_can_be_skipped_but_fatal_ones_not() -> None:
    consumer = Scripted([err(KafkaError._TRANSPORT), rec(0, 0), eof(0)])
    assert offsets(list(ReadToEnd(consumer, [TopicPartition("t", 0, 0)], what="r", skip_transient=True).records())) == [
        (0, 0)
    ]
    consumer = Scripted([err(KafkaError._FENCED, fatal=True)])
    with pytest.raises(BrokerError, match=r"^replay failed: "):
        list(ReadToEnd(consumer, [TopicPartition("t", 0, 0)], what="replay", skip_transient=True).records())


def test_only_pending_ignores_errors_of_no_partition_or_of_an_ended_one() -> None:
    consumer = Scripted(
        [eof(1), err(KafkaError._TRANSPORT, partition=None), err(KafkaError._TRANSPORT, partition=1)],
        [rec(0, 0), eof(0)],
    )
    reading = ReadToEnd(consumer, [TopicPartition("t", 0, 0), TopicPartition("t", 1, 0)], what="r", only_pending=True)
    assert offsets(list(reading.records())) == [(0, 0)]


def test_nothing_arriving_stops_quietly_or_fails_as_asked() -> None:
    consumer = Scripted([rec(0, 0)])
    idle = ReadToEnd(consumer, [TopicPartition("t", 0, 0)], what="r", stop_when_idle=True)
    assert offsets(list(idle.records(1, 0.01))) == [(0, 0)]
    assert idle.pending == {("t", 0)}
    stalled = ReadToEnd(Scripted([rec(0, 0)]), [TopicPartition("t", 0, 0)], what="state restore", stall=0.0)
    with pytest.raises(BrokerError, match=r"^state restore got nothing for 0 s before the end of \[\('t', 0\)\]"):
        list(stalled.records(1, 0.01))
