"""What the Python peers share: the router's per-record step built for a peer, and a consumed record in
the shape that step reads, for the peers that are no confluent-kafka loop.

:class:`~receiptflow.processors.router.step.RouteStep` reads ``confluent_kafka.Message``'s methods;
quixstreams and faust hand over the same facts as plain values. The inputs are ``LogAppendTime``
topics, so the timestamp is the broker's append time. A rejected record's dead letter is sealed by
the peer as the router's loop seals it (:func:`peer_outputs`: the dead-letter vault, in Redis).
"""

from __future__ import annotations

from datetime import datetime

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from receiptflow.config import Settings
from receiptflow.dlq_write import LetterSealer
from receiptflow.models import ConsentState
from receiptflow.policy import load_policy
from receiptflow.processors.router.pseudonym import BasketPseudonymiser
from receiptflow.processors.router.step import Output, RouteStep, StepResult
from receiptflow.registry import codec_for
from receiptflow.secrets import analytics_key
from receiptflow.topics import TopicNames


def peer_step(settings: Settings, out_prefix: str, worker: str) -> RouteStep:
    """The router's step reading ``settings``' input topics and writing ``out_prefix``'s outputs."""
    names = TopicNames(out_prefix)
    names.consents = TopicNames(
        settings.kafka.topic_prefix
    ).consents  # the step tells consents apart by the input's name
    return RouteStep(
        names,
        load_policy(settings.privacy.policy_file),
        codec_for(settings),
        BasketPseudonymiser(analytics_key(settings)),
        ConsentState(
            settings.privacy.default_product_data_marketing, settings.privacy.default_electronic_marketing, known=False
        ),
        worker,
    )


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


def peer_letters(settings: Settings, worker: str) -> LetterSealer:
    """What seals a peer's dead letters (its worker name as processor and consumer group)."""
    return LetterSealer(settings, worker, worker, codec=codec_for(settings))


def peer_outputs(step: RouteStep, result: StepResult, letters: LetterSealer, now: datetime) -> list[Output]:
    """The step's records and, for a rejected input, its sealed dead letter (as the router writes them)."""
    if result.letter is None:
        return result.outputs
    key, value = letters.encoded(result.letter, now)
    return [*result.outputs, Output(step.names.checkouts_dlq, key, value)]
