"""Writing a few records that must not be lost, and returning only once the broker has every one.

For the records a command writes before it changes anything else, or in place of something it
deletes (``erase``'s erased-cards record and consents tombstone): an idempotent producer with
``acks=all``, so a record is acknowledged once every in-sync replica has it, and a failure is a
:class:`~receiptflow.errors.BrokerError` that says which records and which topic.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException, Producer

from .config import Settings
from .errors import BrokerError


def produce_acknowledged(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[bytes, bytes | None]],
    *,
    what: str,
    timeout: float = 30.0,
) -> None:
    """Write ``records`` (key, value; a None value is a tombstone) to ``topic`` and wait for every ack.

    ``what`` names the records in the error raised when one is not acknowledged within ``timeout``
    seconds or cannot be written at all.
    """
    failed: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    try:
        producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
        for key, value in records:
            producer.produce(topic, key=key, value=value, on_delivery=report)
            producer.poll(0)
        if producer.flush(timeout) or failed:
            raise BrokerError(f"{what} on {topic} was not acknowledged: {failed or 'timeout'}")
    except KafkaException as exc:
        raise BrokerError(f"cannot write {what} to {topic}: {exc}") from exc
