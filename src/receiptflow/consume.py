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
from itertools import islice
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from .config import Settings
from .errors import BrokerError, DecodeError
from .kafka_read import ReadToEnd
from .registry import codec_for


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
    codec = codec_for(settings)
    consumer = reader(settings, "consume")
    try:
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        partitions = [TopicPartition(topic, p, start) for p in partitions_of(consumer, topic)]
        # One record per call, as it is printed; nothing for ``idle`` seconds ends the read early.
        records = ReadToEnd(consumer, partitions, what="consume", stop_when_idle=True).records(1, idle)
        # islice stops after ``max_records`` without asking for one more.
        for msg in islice(records, None if max_records is None else max(max_records, 0)):
            try:
                decoded = codec.decode(msg.value())
                doc: dict[str, Any] = {"_schema": decoded.subject, **_jsonable(decoded.value)}
            except DecodeError as exc:
                doc = {"_error": str(exc), "_raw": _jsonable(msg.value())}
            key = msg.key()
            doc = {"_partition": msg.partition(), "_offset": msg.offset(), "_key": key.decode() if key else None, **doc}
            yield json.dumps(doc, ensure_ascii=False, sort_keys=False)
    except KafkaException as exc:
        raise BrokerError(f"consume failed: {exc}") from exc
    finally:
        consumer.close()
