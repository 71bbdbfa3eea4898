"""sfsync.kafka.compacted.read_compacted against a real broker."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kafka_helpers import create_topic, produce

from sfsync.config import KafkaConfig, build_config
from sfsync.kafka.compacted import CompactedReadTimeout, read_compacted


@pytest.fixture
def kafka(kafka_config: dict[str, Any]) -> KafkaConfig:
    return build_config({"kafka": kafka_config}).kafka


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
