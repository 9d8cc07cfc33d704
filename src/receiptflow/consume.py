"""Read any of the project's topics as decoded JSON lines (``receiptflow consume``).

What a downstream team uses to look at the data: a read-committed consumer in its own throw-away
group (nothing is committed), values decoded with the codec, event times as ISO-8601, bytes as
base64. Stops after ``max_records`` or when the end of every partition is reached.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from .codec import Codec
from .config import Settings
from .errors import BrokerError, DecodeError


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def reader(settings: Settings, purpose: str, **extra: Any) -> Consumer:
    """A read-committed consumer in a throw-away group that commits nothing and reports partition ends."""
    return Consumer(
        settings.kafka_config(
            **{
                "group.id": f"receiptflow-{purpose}-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                **extra,
            }
        )
    )


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    """The partition numbers of an existing topic; BrokerError when it does not exist."""
    try:
        md = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        raise BrokerError(f"cannot read metadata of {topic!r}: {exc}") from exc
    if topic not in md.topics or md.topics[topic].error is not None:
        raise BrokerError(f"topic {topic!r} does not exist")
    return sorted(md.topics[topic].partitions)


def consume_json(
    settings: Settings, topic: str, *, from_beginning: bool = True, max_records: int | None = None, idle: float = 5.0
) -> Iterator[str]:
    codec = Codec()
    consumer = reader(settings, "consume", **{"auto.offset.reset": "earliest" if from_beginning else "latest"})
    try:
        partitions = len(partitions_of(consumer, topic))
        consumer.subscribe([topic])
        at_eof: set[int] = set()
        count = 0
        while max_records is None or count < max_records:
            msg = consumer.poll(idle)
            if msg is None:
                break
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition() or 0)
                    if len(at_eof) >= partitions:
                        break
                    continue
                raise BrokerError(f"consume failed: {err}")
            at_eof.discard(msg.partition() or 0)
            try:
                decoded = codec.decode(msg.value())
                doc: dict[str, Any] = {"_schema": decoded.subject, **_jsonable(decoded.value)}
            except DecodeError as exc:
                doc = {"_error": str(exc), "_raw": _jsonable(msg.value())}
            key = msg.key()
            doc = {"_partition": msg.partition(), "_offset": msg.offset(), "_key": key.decode() if key else None, **doc}
            yield json.dumps(doc, ensure_ascii=False, sort_keys=False)
            count += 1
    except KafkaException as exc:
        raise BrokerError(f"consume failed: {exc}") from exc
    finally:
        consumer.close()
