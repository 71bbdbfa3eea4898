"""A record created in Salesforce is done only once its link (the sfid on the local row) is durable.

Real runner, real Salesforce sink against the emulator, real PostgreSQL, real broker.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from consumers.postgres.sink import PostgresSink
from consumers.runner import SinkRunner
from consumers.salesforce.links import link_back
from consumers.salesforce.sink import SalesforceSink
from sfsync.config import SfsyncConfig, build_config
from sfsync.database.schema import init_schema
from sfsync.devstack.emulator import PASSWORD, USERNAME
from sfsync.devstack.stack import demo_config
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Source, utcnow
from sfsync.serde import Serde

ARRIVE_S = 90.0


def config(kafka_config: dict[str, Any], postgres_dsn: str, schema: str, org: Any) -> SfsyncConfig:
    raw = demo_config()
    raw["kafka"] = kafka_config
    raw["postgres"] = {"dsn": postgres_dsn, "schema": schema, "lock_timeout_ms": 300}
    raw["salesforce"] = {"login_url": org.url, "ca_bundle": str(org.ca_path),
                         "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME,
                                  "password": PASSWORD}}
    raw["sinks"] = {"salesforce": {"batch_size": 10, "linger_ms": 20}}
    cfg = build_config(raw)
    apply_topics(cfg)
    init_schema(cfg, demo=True)
    return cfg


def upserts(org: Any) -> int:
    return sum(n for k, n in org.control.stats()["api_calls"].items() if k.startswith("PATCH composite/sobjects"))


def test_a_failed_link_write_is_repeated_until_the_row_is_linked(kafka_config: dict[str, Any], postgres_dsn: str,
                                                                 schema: str, org: Any) -> None:
    """Failed before the fix: the first attempt created the Contact but could not write its sfid locally
    (the row was locked); the repeated batch's upsert answered created=false, the sink already knew the
    id, so it queued no link: the local row never got its sfid."""
    cfg = config(kafka_config, postgres_dsn, schema, org)
    dsn = cfg.postgres.dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:
        key = str(conn.execute(f'INSERT INTO "{schema}".contacts (last_name) VALUES (%s) RETURNING id',
                               ("Link",)).fetchone()[0])
    topic = TopicNames(cfg.kafka.topic_prefix).apply_salesforce
    command = ApplyCommand(target=ApplyTarget.SALESFORCE, object="Contact", operation=ApplyOperation.UPSERT,
                           local_key=key, values={"LastName": "Link"}, fields=["LastName"], source=Source.POSTGRES,
                           source_event_id="e1", source_commit_ts=utcnow(), source_position="1")
    org.control.reset_stats()
    sink, local = SalesforceSink(cfg), PostgresSink(cfg, retry_after=0.2)
    runner = SinkRunner(cfg, sink, after_write=link_back(sink, local))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    with psycopg.connect(dsn) as user:  # a user's transaction holds the row: the link cannot be written
        user.execute(f'SELECT 1 FROM "{schema}".contacts WHERE id = %s FOR UPDATE', (int(key),))
        thread.start()
        producer = make_producer(cfg.kafka, "test")
        producer.produce(topic, Serde.from_config(cfg.kafka).encode(command, topic), key=command.key)
        producer.flush(30)
        deadline = time.monotonic() + ARRIVE_S
        while upserts(org) < 2 and time.monotonic() < deadline:  # created, then repeated after the failed link
            time.sleep(0.05)
        assert upserts(org) >= 2, org.control.stats()["api_calls"]
    try:
        deadline = time.monotonic() + ARRIVE_S
        linked = None
        while time.monotonic() < deadline and not linked:
            with psycopg.connect(dsn) as conn:
                linked = conn.execute(f'SELECT sfid FROM "{schema}".contacts WHERE id = %s', (int(key),)).fetchone()[0]
            time.sleep(0.1)
        found = org.salesforce().query(f"select Id from Contact where Local_Id__c = '{key}'")["records"]
        assert len(found) == 1 and linked == found[0]["Id"]
    finally:
        stop.set()
        thread.join(60)
        local.close()
