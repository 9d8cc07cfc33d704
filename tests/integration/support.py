"""Helpers shared by integration tests: child-process environments and reading a topic to its end."""

from __future__ import annotations

import os
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Message

from receiptflow.config import Settings


def env_for(settings: Settings) -> dict[str, str]:
    """The environment that makes a child ``python -m receiptflow`` use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTFLOW_")}
    env.update(
        RECEIPTFLOW_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        RECEIPTFLOW_REDIS_URL=settings.redis_url,
        RECEIPTFLOW_DATA_DIR=str(settings.data_dir),
        RECEIPTFLOW_TOPIC_PREFIX=settings.topic_prefix,
        RECEIPTFLOW_TOPIC_PARTITIONS=str(settings.topic_partitions),
        RECEIPTFLOW_PROCESSOR_ID=settings.processor_id,
        RECEIPTFLOW_METRICS_PORT="0",
    )
    for role in ("writer", "marketing", "support"):
        password = getattr(settings, f"redis_{role}_password")
        if password is not None:
            env[f"RECEIPTFLOW_REDIS_{role.upper()}_PASSWORD"] = password.get_secret_value()
    if settings.policy_file is not None:
        env["RECEIPTFLOW_POLICY_FILE"] = str(settings.policy_file)
    if settings.warehouse_url:
        env["RECEIPTFLOW_WAREHOUSE_URL"] = settings.warehouse_url
    if settings.metrics_textfile is not None:
        env["RECEIPTFLOW_METRICS_TEXTFILE"] = str(settings.metrics_textfile)
    if settings.redis_cluster:
        env["RECEIPTFLOW_REDIS_CLUSTER"] = "true"
    if settings.schema_registry_url:
        env["RECEIPTFLOW_SCHEMA_REGISTRY_URL"] = settings.schema_registry_url
    return env


def read_all(settings: Settings, topic: str, timeout: float = 60.0) -> list[Message]:
    """Every record of ``topic`` up to its end at the time of the call (read-committed)."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        partitions = set(md.topics[topic].partitions)
        consumer.subscribe([topic])
        out: list[Message] = []
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while at_eof != partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: reached the end of {sorted(at_eof)} of {sorted(partitions)} only")
            for m in consumer.consume(1000, timeout=0.5):
                err = m.error()
                if err is None:
                    out.append(m)
                    at_eof.discard(m.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(m.partition())
                else:
                    raise RuntimeError(str(err))
        return out
    finally:
        consumer.close()
