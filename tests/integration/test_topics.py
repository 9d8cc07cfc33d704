"""Topic provisioning against the real broker: a created topic can be written as soon as ``create_topics`` returns.

The metadata names a new partition's leader before that broker serves the partition; records written
in between can be lost (see ``receiptflow.topics._wait_for_leaders``). So every partition's leader is
asked once, right after the call, and each must answer for its partition.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from receiptflow.config import Settings
from receiptflow.topics import CATALOGUE, TopicNames, create_topics

MakeSettings = Callable[..., Settings]


def test_every_partition_is_served_by_its_leader_when_create_topics_returns(make_settings: MakeSettings) -> None:
    settings = make_settings()
    names = TopicNames(settings.kafka.topic_prefix)
    result = create_topics(settings)
    assert result.created == sorted(names.physical(s.name) for s in CATALOGUE)
    admin = AdminClient(settings.kafka_config())
    metadata = admin.list_topics(timeout=10)
    partitions = [TopicPartition(t, p) for t in result.created for p in metadata.topics[t].partitions]
    assert len(partitions) == sum(s.partitions or settings.kafka.topic_partitions for s in CATALOGUE)
    refused: dict[str, str] = {}
    for tp, answer in admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=10).items():
        try:
            assert answer.result().offset == 0
        except KafkaException as exc:
            refused[f"{tp.topic} [{tp.partition}]"] = exc.args[0].name()
    assert refused == {}, f"{len(refused)} of {len(partitions)} partitions not served yet: {refused}"
