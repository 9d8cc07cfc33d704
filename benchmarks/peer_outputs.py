"""Output equality of two processors: read their output topics, decode them, compare them as multisets.

A peer (Kafka Streams, ...) and the router read the same input and write to topics of their own;
they agree when, per output (customer, marketing, analytics, dlq), the same records came out the same
number of times: order across partitions and transactions is not part of the contract, nor are the
fields that legitimately differ between two processes (:data:`IGNORED`, each with its reason).

:func:`compare` is pure (decoded records in, a list of differences out, empty when equal);
:func:`read_outputs` reads and decodes the topics (read-committed, to their end).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from receiptflow.codec import Codec
from receiptflow.config import Settings

# Fields left out of the comparison, per output, and why they may differ.
IGNORED: dict[str, dict[str, str]] = {
    "customer": {"processed_at": "each processor stamps its own processing time"},
    "marketing": {"processed_at": "each processor stamps its own processing time"},
    "analytics": {},
    "dlq": {
        "failed_at": "each processor stamps the time it rejected the record",
        "processor": "names the rejecting worker (its transactional or application id)",
        "message": "human-readable text in each implementation's words; reason and field are compared",
    },
}
SUBJECTS = {"customer": "purchase", "marketing": "purchase", "analytics": "analytics_basket", "dlq": "dead_letter"}
# How many differing records a report shows per output and side.
SHOWN = 3


def canonical(key: bytes | None, value: Mapping[str, Any], ignored: Iterable[str] = ()) -> str:
    """One record as a stable string: its key and its fields (less ``ignored``), sorted JSON."""
    skip = set(ignored)
    body = {k: v for k, v in value.items() if k not in skip}
    return json.dumps({"key": _plain(key), "value": _plain(body)}, sort_keys=True, separators=(",", ":"))


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def multiset(output: str, records: Iterable[tuple[bytes | None, Mapping[str, Any]]]) -> Counter[str]:
    """The decoded records of one output as a multiset of canonical strings (its ignored fields left out)."""
    return Counter(canonical(k, v, IGNORED[output]) for k, v in records)


def compare(
    expected: Mapping[str, Counter[str]], got: Mapping[str, Counter[str]], names: tuple[str, str] = ("router", "peer")
) -> list[str]:
    """What differs between two processors' outputs, one line per output that differs (empty: equal)."""
    problems = []
    for output in sorted(set(expected) | set(got)):
        a, b = expected.get(output, Counter()), got.get(output, Counter())
        only_a, only_b = a - b, b - a
        if not only_a and not only_b:
            continue
        line = (
            f"{output}: {a.total()} records from {names[0]}, {b.total()} from {names[1]}; "
            f"{only_a.total()} only from {names[0]}, {only_b.total()} only from {names[1]}"
        )
        for name, only in ((names[0], only_a), (names[1], only_b)):
            for record in sorted(only)[:SHOWN]:
                line += f"\n  only {name}: {record}"
        problems.append(line)
    return problems


def read_topic(settings: Settings, topic: str, timeout: float = 60.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every committed record of ``topic`` (key, value), partition by partition."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"peer-equality-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[tuple[bytes | None, bytes | None]] = []
        pending = set(ends)
        while pending:
            for msg in consumer.consume(5000, 1.0):
                err = msg.error()
                p = msg.partition() or 0
                if err is not None:
                    pending.discard(p)  # end of partition (the last stable offset under read-committed)
                    continue
                out.append((msg.key(), msg.value()))
                if (msg.offset() or 0) + 1 >= ends[p]:
                    pending.discard(p)
        return out
    finally:
        consumer.close()


def read_outputs(settings: Settings, topics: Mapping[str, str], codec: Codec | None = None) -> dict[str, Counter[str]]:
    """Each output (``{"customer": topic, ...}``) read, decoded and made a multiset."""
    codec = codec or Codec()
    result = {}
    for output, topic in topics.items():
        records = []
        for key, value in read_topic(settings, topic):
            assert value is not None, f"{topic}: a record without a value"
            records.append((key, codec.decode(value, expect=SUBJECTS[output]).value))
        result[output] = multiset(output, records)
    return result
