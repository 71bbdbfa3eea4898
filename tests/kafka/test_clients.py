"""Producer/consumer plumbing against a real broker: round trip, manual commits, delivery failures."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sfsync.config import build_config
from sfsync.devstack.process import free_port
from sfsync.kafka.clients import DeliveryError, commit_messages, make_consumer, make_producer
from sfsync.kafka.settings import consumer_settings, producer_settings, redacted
from sfsync.kafka.topics import TopicNames, apply_topics


def consume(consumer: Any, n: int, timeout: float = 20.0) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for m in consumer.consume(500, 0.2):
            assert m.error() is None, m.error()
            out.append(m)
    return out


def test_round_trip_and_commit_after_work(kafka_config: dict[str, Any]) -> None:
    cfg = build_config({"kafka": kafka_config})
    apply_topics(cfg)
    topic = TopicNames(cfg.kafka.topic_prefix).changes_inbound
    producer = make_producer(cfg.kafka, "test")
    sent = {f"Contact:003{i:015d}": f"value-{i}".encode() for i in range(300)}
    for key, value in sent.items():
        producer.produce(topic, value, key=key, headers=[("trace", b"t")])
    producer.flush(30)

    consumer = make_consumer(cfg.kafka, f"{cfg.kafka.topic_prefix}-g")
    consumer.subscribe([topic])
    got = consume(consumer, 300)
    assert {m.key().decode(): m.value() for m in got} == sent
    assert all(m.headers() == [("trace", b"t")] for m in got)
    # keyed: one record's messages stay in one partition
    first_half = got[:150]
    commit_messages(consumer, first_half)
    consumer.close()

    # A new consumer of the same group resumes after what was committed, not before.
    again = make_consumer(cfg.kafka, f"{cfg.kafka.topic_prefix}-g")
    again.subscribe([topic])
    rest = consume(again, 300 - len(first_half), timeout=15)
    committed_per_partition: dict[int, int] = {}
    for m in first_half:
        committed_per_partition[m.partition()] = max(committed_per_partition.get(m.partition(), -1), m.offset())
    for m in rest:
        assert m.offset() > committed_per_partition.get(m.partition(), -1)
    assert {m.key().decode() for m in rest} | {m.key().decode() for m in first_half} == set(sent)
    again.close()


def test_delivery_failure_is_raised(kafka_config: dict[str, Any]) -> None:
    dead = {**kafka_config, "bootstrap_servers": f"127.0.0.1:{free_port()}",
            "librdkafka": {"message.timeout.ms": "1500", "log_level": "0"}}
    cfg = build_config({"kafka": dead})
    producer = make_producer(cfg.kafka, "test")
    producer.produce("sfsync.nowhere", b"lost?", key="k")
    with pytest.raises(DeliveryError) as info:
        producer.flush(10)
    assert info.value.failures[0][0] == "sfsync.nowhere"
    assert "timed out" in str(info.value).lower()


def test_settings_security_and_redaction() -> None:
    cfg = build_config({"kafka": {
        "bootstrap_servers": "b1:9093,b2:9093", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "svc", "sasl_password": "pw-secret", "ssl_ca_location": "/etc/ca.pem",
        "session_timeout_ms": 6000, "fetch_wait_max_ms": 10,
    }})
    p = producer_settings(cfg.kafka, transactional_id="sfsync-cdc")
    assert p["enable.idempotence"] is True and p["acks"] == "all"
    assert p["transactional.id"] == "sfsync-cdc"
    assert p["security.protocol"] == "SASL_SSL" and p["sasl.mechanism"] == "SCRAM-SHA-512"
    assert p["sasl.username"] == "svc" and p["sasl.password"] == "pw-secret"
    assert p["ssl.ca.location"] == "/etc/ca.pem"
    c = consumer_settings(cfg.kafka, "grp")
    assert c["enable.auto.commit"] is False and c["isolation.level"] == "read_committed"
    assert c["session.timeout.ms"] == 6000 and c["fetch.wait.max.ms"] == 10
    assert "pw-secret" not in str(redacted(p)) and redacted(p)["sasl.password"] == "***"
