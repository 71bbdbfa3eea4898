"""True partition ends on the real embedded broker, whose ListOffsets answer can be short (docs/kafka.md)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka_helpers import create_topic, produce

from sfsync.config import KafkaConfig, build_config
from sfsync.kafka.ends import partition_ends


@pytest.fixture
def kafka(kafka_config: dict[str, Any]) -> KafkaConfig:
    return build_config({"kafka": kafka_config}).kafka


def listoffsets_end(cfg: KafkaConfig, topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": cfg.bootstrap_servers, "group.id": "ends-test"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)[1]
    finally:
        consumer.close()


def test_the_true_end_of_each_partition(kafka: KafkaConfig) -> None:
    topic = create_topic(kafka, "ends", 3)
    produce(kafka, topic, [(0, b"k", b"v" * 100)] * 500)  # partition 0: one or a few batches of 500
    produce(kafka, topic, [(1, b"k", b"v")] * 3)  # partition 1: three; partition 2 stays empty
    reported = {(topic, p): listoffsets_end(kafka, topic, p) for p in range(3)}
    ends = partition_ends(kafka, reported)
    assert ends == {(topic, 0): 500, (topic, 1): 3, (topic, 2): 0}
    assert all(ends[tp] >= reported[tp] for tp in reported)  # never below the broker's answer
