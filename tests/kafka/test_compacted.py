"""sfsync.kafka.compacted.read_compacted against a real broker."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from sfsync.config import KafkaConfig, build_config
from sfsync.kafka.compacted import CompactedReadTimeout, read_compacted
from sfsync.kafka.settings import admin_settings, producer_settings


@pytest.fixture
def kafka(kafka_config: dict[str, Any]) -> KafkaConfig:
    return build_config({"kafka": kafka_config}).kafka


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


def test_latest_value_per_key_across_partitions(kafka: KafkaConfig) -> None:
    topic = create_topic(kafka, "state", 4)  # partition 3 stays empty
    produce(kafka, topic, [
        (0, b"a", b"a1"), (1, b"b", b"b1"), (2, b"c", b"c1"),
        (0, b"a", b"a2"),             # overwrite
        (1, b"d", b"d1"), (1, b"d", None),  # written, then deleted by a tombstone
        (2, b"e", None),               # tombstone for a key never written
        (0, None, b"no key"),          # ignored
        (2, b"c", b"c2"), (0, b"a", b"a3"),
        *[(i % 3, f"k{i}".encode(), f"v{i}".encode()) for i in range(30)],
    ])
    got: dict[bytes, bytes] = read_compacted(kafka, topic, timeout=30)
    assert got == {b"a": b"a3", b"b": b"b1", b"c": b"c2", **{f"k{i}".encode(): f"v{i}".encode() for i in range(30)}}

    # a tombstone written later deletes; a re-write after a tombstone brings the key back
    produce(kafka, topic, [(1, b"b", None), (1, b"d", b"d2")])
    got = read_compacted(kafka, topic, timeout=30)
    assert b"b" not in got and got[b"d"] == b"d2"


def test_key_and_value_decoding(kafka: KafkaConfig) -> None:
    topic = create_topic(kafka, "decoded", 2)
    produce(kafka, topic, [
        (0, b"mine:x", json.dumps({"n": 1}).encode()),
        (1, b"mine:y", json.dumps({"n": 2}).encode()),
        (0, b"mine:x", b"not json"),         # undecodable: skipped, x keeps {"n": 1}
        (1, b"other:y", json.dumps({"n": 9}).encode()),  # foreign key: ignored
        (1, b"other:y", None),
        (0, b"other:x", None),               # foreign tombstone: ignored
    ])

    def key(raw: bytes) -> str | None:
        text = raw.decode()
        return text.removeprefix("mine:") if text.startswith("mine:") else None

    got = read_compacted(kafka, topic, key=key, decode=json.loads, skip=ValueError, timeout=30)
    assert got == {"x": {"n": 1}, "y": {"n": 2}}
    with pytest.raises(ValueError):  # not in ``skip``: the decode error surfaces
        read_compacted(kafka, topic, key=key, decode=json.loads, timeout=30)


def test_empty_and_missing_topics(kafka: KafkaConfig) -> None:
    topic = create_topic(kafka, "empty", 3)
    assert read_compacted(kafka, topic, timeout=30) == {}  # an empty topic is read to its end, not timed out
    missing = f"{kafka.topic_prefix}.nowhere"
    assert read_compacted(kafka, missing, timeout=10, missing_ok=True) == {}
    with pytest.raises(LookupError, match=f"topic {missing} does not exist"):
        read_compacted(kafka, missing, timeout=10)


def test_the_read_is_bounded_by_the_timeout(kafka: KafkaConfig) -> None:
    topic = create_topic(kafka, "slow", 2)
    produce(kafka, topic, [(1, f"k{i}".encode(), b"v") for i in range(20)])

    def slow(raw: bytes) -> bytes:
        time.sleep(0.3)
        return raw

    with pytest.raises(CompactedReadTimeout, match=rf"could not read {topic} to its end within 2.0 s "
                       r"\(partitions not finished: 1\)"):
        read_compacted(kafka, topic, decode=slow, timeout=2.0)
    assert isinstance(CompactedReadTimeout("x"), TimeoutError)
