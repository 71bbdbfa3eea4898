"""Topic helpers shared by the Kafka plumbing tests (on the test path through ``pythonpath = ["tests"]``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from sfsync.config import KafkaConfig
from sfsync.kafka.settings import admin_settings, producer_settings


def create_topic(cfg: KafkaConfig, suffix: str, partitions: int) -> str:
    name = f"{cfg.topic_prefix}.{suffix}"
    admin = AdminClient(admin_settings(cfg))
    new = NewTopic(name, num_partitions=partitions, replication_factor=cfg.replication_factor,
                   config={"cleanup.policy": "compact"})
    admin.create_topics([new])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the metadata shows every partition
        info = admin.list_topics(name, timeout=10).topics.get(name)
        if info is not None and info.error is None and len(info.partitions) == partitions:
            return name
        time.sleep(0.1)
    raise AssertionError(f"topic {name} did not appear")


def produce(cfg: KafkaConfig, topic: str, records: list[tuple[int, bytes | None, bytes | None]]) -> None:
    """(partition, key, value) in order; waits for every acknowledgement."""
    producer = Producer(producer_settings(cfg, "test"))
    failures: list[Any] = []
    for partition, key, value in records:
        producer.produce(topic, value=value, key=key, partition=partition,
                         on_delivery=lambda err, _msg: failures.append(err) if err else None)
    assert producer.flush(30) == 0
    assert failures == []


@contextmanager
def running_broker(tmp_path_factory: pytest.TempPathFactory, docker_available: bool, name: str) -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker, in the conftest's order of preference: the one
    ``SFSYNC_TEST_KAFKA`` names (shared, not started here), a Kafka container, the embedded broker
    (its log in a temporary directory called ``name``)."""
    named = os.environ.get("SFSYNC_TEST_KAFKA")
    if named:
        yield named
        return
    if docker_available:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from sfsync.devstack.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp(name) / "broker.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
