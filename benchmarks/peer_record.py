"""A consumed record in the shape the router's per-record step reads, for the peers that are no confluent-kafka loop.

:class:`~receiptflow.processors.route_step.RouteStep` reads ``confluent_kafka.Message``'s methods;
quixstreams and faust hand over the same facts as plain values. The inputs are ``LogAppendTime``
topics, so the timestamp is the broker's append time.
"""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME


class Record:
    __slots__ = ("_key", "_offset", "_partition", "_topic", "_ts", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, ts: int):
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._ts = key, value, ts

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_LOG_APPEND_TIME, self._ts
