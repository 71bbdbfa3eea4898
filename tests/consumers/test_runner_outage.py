"""Nothing a paused sink receives is lost: a second replica joins and leaves while the target is down.

Real runner and PostgreSQL sink, real broker, a real network outage (a TCP proxy in front of PostgreSQL
that the test cuts and restores).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from netproxy import TcpProxy
from sink_member import SinkMember, account_upsert

from sfsync.config import build_config
from sfsync.database.schema import init_schema
from sfsync.devstack.stack import demo_config
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.serde import Serde

ARRIVE_S = 120.0
N = 60


@pytest.fixture
def proxy(postgres_dsn: str) -> Iterator[TcpProxy]:
    url = urlsplit(postgres_dsn)
    p = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    yield p
    p.close()


def wait(what: str, fn: Any) -> None:
    deadline = time.monotonic() + ARRIVE_S
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_partitions_moving_during_an_outage_lose_nothing(kafka_config: dict[str, Any], postgres_dsn: str,
                                                         schema: str, proxy: TcpProxy) -> None:
    """Failed before the fix: partitions that moved to the paused member were not paused, its
    keep-alive polls returned their messages, which were thrown away and later committed past."""
    raw = demo_config()
    raw["kafka"] = {**kafka_config, "partitions": 6}
    raw["postgres"] = {"dsn": proxy.route(postgres_dsn), "schema": schema}
    raw["sinks"] = {"postgres": {"batch_size": 5, "linger_ms": 10}}
    cfg = build_config(raw)
    apply_topics(cfg)
    init_schema(cfg, demo=True)
    topic = TopicNames(cfg.kafka.topic_prefix).apply_local
    producer = make_producer(cfg.kafka, "test")
    serde = Serde.from_config(cfg.kafka)

    def send(first: int) -> None:
        for i in range(first, first + N):
            command = account_upsert(i)
            producer.produce(topic, serde.encode(command, topic), key=command.key)
        producer.flush(30)

    a = SinkMember(cfg)  # both reach PostgreSQL through the proxy
    b = SinkMember(cfg)
    wait("the two members share the partitions", lambda: a.owned() + b.owned() == 6 and b.owned() > 0)
    proxy.cut()
    send(0)
    wait("both members paused on the outage", lambda: a.runner.stats.unavailable > 0 and b.runner.stats.unavailable > 0)
    b.leave()  # its partitions move to A, which is waiting out the outage and never paused them
    wait("member A owns every partition", lambda: a.owned() == 6)
    send(N)  # what A's keep-alive polls now receive must not be lost
    time.sleep(1.0)
    proxy.restore()
    try:
        def landed() -> int:
            with psycopg.connect(postgres_dsn) as conn:
                return int(conn.execute(f'SELECT count(*) FROM "{schema}".accounts').fetchone()[0])

        deadline = time.monotonic() + ARRIVE_S
        while landed() < 2 * N and time.monotonic() < deadline:
            time.sleep(0.2)
        assert landed() == 2 * N
    finally:
        a.leave()
