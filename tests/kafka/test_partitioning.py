"""One key, one partition number, in every keyed topic and whoever writes it (issue 14): the CDC producer and
the relay (confluent-kafka, :func:`sfsync.kafka.clients.make_producer`) and the processor (faust's aiokafka
producer) agree, so a record's changes from both sides meet in one processor partition and its commands go
to the same partition number of every apply topic."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaError, Message
from kafka_helpers import create_topic

from sfsync.config import KafkaConfig, build_config
from sfsync.kafka.clients import make_producer

KEYS = [f"Contact:003{i:015d}".encode() for i in range(150)] + [f"Account:local:{i}".encode() for i in range(150)]


@pytest.fixture
def kafka(kafka_config: dict[str, Any]) -> KafkaConfig:
    return build_config({"kafka": kafka_config, "salesforce": {"auth": {"username": "u", "password": "p"}},
                         "objects": {}}).kafka


def written_partitions(cfg: KafkaConfig, topic: str) -> dict[bytes, int]:
    """Where sfsync's confluent-kafka producer puts each key (no explicit partition)."""
    producer = make_producer(cfg, "partitioning-test")
    got: dict[bytes, int] = {}
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            got[msg.key() or b""] = msg.partition() or 0

    for key in KEYS:
        producer.produce(topic, value=b"v", key=key, on_delivery=delivered)
    producer.flush(30)
    assert errors == [] and len(got) == len(KEYS)
    return got


def test_every_producer_puts_a_key_on_the_same_partition_number(kafka: KafkaConfig) -> None:
    inbound = written_partitions(kafka, create_topic(kafka, "changes-in", 3))
    outbound = written_partitions(kafka, create_topic(kafka, "changes-out", 3))
    assert inbound == outbound
    aiokafka = DefaultPartitioner()  # what faust's producer uses for the apply topics
    assert {key: aiokafka(key, [0, 1, 2], [0, 1, 2]) for key in KEYS} == inbound
    assert len(set(inbound.values())) == 3  # the keys spread: a constant answer would pass the rest


def test_the_partitioner_cannot_be_overridden() -> None:
    with pytest.raises(Exception, match="'partitioner' cannot be overridden"):
        build_config({"kafka": {"librdkafka": {"partitioner": "consistent_random"}},
                      "salesforce": {"auth": {"username": "u", "password": "p"}}, "objects": {}})
