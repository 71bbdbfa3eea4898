"""A retry never drops a field it alone carries, and never overwrites a newer value — through the real
runner, real sinks (PostgreSQL, the emulator over HTTPS), real broker; across a sink restart too.

Each scenario: a newer command of a record is written first (Title "new", version 2), then an older
command of the same record arrives from a retry tier (Title "old" and Phone "1", version 1), as after
a transient failure. Afterwards the record must hold Title "new" (never overwritten by the older
version) and Phone "1" (carried only by the retry, never dropped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumers.postgres.sink import PostgresSink
from consumers.runner import SinkRunner
from consumers.salesforce.sink import SalesforceSink
from sfsync.config import SfsyncConfig, build_config
from sfsync.database.schema import init_schema
from sfsync.devstack.emulator import PASSWORD, USERNAME
from sfsync.devstack.stack import demo_config
from sfsync.failures import H_NOT_BEFORE
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Source
from sfsync.serde import Serde

ARRIVE_S = 90.0  # how long to wait for something to arrive at all (a hang guard, not a speed check)
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def cfg(kafka_config: dict[str, Any], postgres_dsn: str, schema: str, org: Any) -> SfsyncConfig:
    raw = demo_config()
    raw["kafka"] = kafka_config
    raw["postgres"] = {"dsn": postgres_dsn, "schema": schema}
    raw["salesforce"] = {"login_url": org.url, "ca_bundle": str(org.ca_path),
                         "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME,
                                  "password": PASSWORD}}
    raw["retry"] = {"tiers": [{"name": "r1", "delay_ms": 0}], "max_attempts": 5}
    raw["sinks"] = {"postgres": {"batch_size": 50, "linger_ms": 20}, "salesforce": {"batch_size": 50, "linger_ms": 20}}
    config = build_config(raw)
    apply_topics(config)
    init_schema(config, demo=True)
    return config


def command(target: ApplyTarget, version: int, values: dict[str, Any], *, sfid: str | None = None,
            local_key: str | None = None, attempt: int = 0) -> ApplyCommand:
    return ApplyCommand(
        target=target, object="Contact", operation=ApplyOperation.UPSERT, sfid=sfid, local_key=local_key,
        values=values, fields=sorted(values),
        source=Source.SALESFORCE if target is ApplyTarget.LOCAL else Source.POSTGRES,
        source_event_id=f"e{version}", source_commit_ts=T0 + timedelta(seconds=version),
        source_position=str(version), attempt=attempt)


def send(cfg: SfsyncConfig, topic: str, cmd: ApplyCommand, retry: bool = False) -> None:
    producer = make_producer(cfg.kafka, "test")
    headers: list[tuple[str, str | bytes | None]] = [(H_NOT_BEFORE, b"0")] if retry else []
    producer.produce(topic, Serde.from_config(cfg.kafka).encode(cmd, topic), key=cmd.key, headers=headers)
    producer.flush(30)


@contextmanager
def running(cfg: SfsyncConfig, make_sink: Callable[[], Any]) -> Iterator[SinkRunner]:
    stop = threading.Event()
    runner = SinkRunner(cfg, make_sink())
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive()


def wait_until(what: str, fn: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + ARRIVE_S
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"never arrived: {what} (last: {fn()!r})")


def local_contact(cfg: SfsyncConfig, sfid: str) -> tuple[str | None, str | None] | None:
    with psycopg.connect(cfg.postgres.dsn.get_secret_value()) as conn:
        return conn.execute(f'SELECT title, phone FROM "{cfg.postgres.schema_name}".contacts WHERE sfid = %s',
                            (sfid,)).fetchone()


def sf_contact(org: Any, local_key: str) -> dict[str, Any] | None:
    found = org.salesforce().query(f"select Title, Phone, LastName from Contact where Local_Id__c = '{local_key}'")
    return found["records"][0] if found["records"] else None


@pytest.mark.parametrize("restart", [False, True], ids=["same-run", "after-restart"])
def test_postgres_sink_retry_keeps_its_own_fields_and_loses_to_newer(cfg: SfsyncConfig, restart: bool) -> None:
    """Failed before the fix: same-run, the runner dropped the older retry whole (Phone never arrived);
    after a restart its in-memory guard was empty and Title went back to "old"."""
    names = TopicNames(cfg.kafka.topic_prefix)
    sfid = "003000000000001AAA"
    newer = command(ApplyTarget.LOCAL, 2, {"title": "new", "last_name": "L"}, sfid=sfid)
    older = command(ApplyTarget.LOCAL, 1, {"title": "old", "phone": "1", "last_name": "L"}, sfid=sfid, attempt=1)
    with running(cfg, lambda: PostgresSink(cfg)):
        send(cfg, names.apply_local, newer)
        wait_until("the newer command", lambda: local_contact(cfg, sfid) == ("new", None))
        if not restart:
            send(cfg, names.retry("postgres", "r1"), older, retry=True)
            wait_until("the field only the retry carries", lambda: (local_contact(cfg, sfid) or ("", ""))[1] == "1")
    if restart:
        with running(cfg, lambda: PostgresSink(cfg)):
            send(cfg, names.retry("postgres", "r1"), older, retry=True)
            wait_until("the field only the retry carries", lambda: (local_contact(cfg, sfid) or ("", ""))[1] == "1")
    assert local_contact(cfg, sfid) == ("new", "1")


@pytest.mark.parametrize("restart", [False, True], ids=["same-run", "after-restart"])
def test_salesforce_sink_retry_keeps_its_own_fields_and_loses_to_newer(cfg: SfsyncConfig, org: Any,
                                                                      restart: bool) -> None:
    """Failed before the fix, as for the PostgreSQL sink: the retry's Phone was dropped, or (after a
    restart) its Title overwrote the newer one in Salesforce."""
    names = TopicNames(cfg.kafka.topic_prefix)
    newer = command(ApplyTarget.SALESFORCE, 2, {"Title": "new", "LastName": "L"}, local_key="41")
    older = command(ApplyTarget.SALESFORCE, 1, {"Title": "old", "Phone": "1", "LastName": "L"}, local_key="41",
                    attempt=1)
    with running(cfg, lambda: SalesforceSink(cfg)):
        send(cfg, names.apply_salesforce, newer)
        wait_until("the newer command", lambda: (sf_contact(org, "41") or {}).get("Title") == "new")
        if not restart:
            send(cfg, names.retry("salesforce", "r1"), older, retry=True)
            wait_until("the field only the retry carries", lambda: (sf_contact(org, "41") or {}).get("Phone") == "1")
    if restart:
        with running(cfg, lambda: SalesforceSink(cfg)):
            send(cfg, names.retry("salesforce", "r1"), older, retry=True)
            wait_until("the field only the retry carries", lambda: (sf_contact(org, "41") or {}).get("Phone") == "1")
    got = sf_contact(org, "41")
    assert got is not None and (got["Title"], got["Phone"]) == ("new", "1")


def test_a_retry_in_the_topic_of_a_renamed_tier_still_arrives(cfg: SfsyncConfig) -> None:
    """Failed before the fix: the runner subscribed to the retry topics of the configured tiers only, so
    after a tier was renamed (``retry.tiers``) whatever waited in the old tier's topic was stranded."""
    from confluent_kafka.admin import AdminClient, NewTopic

    names = TopicNames(cfg.kafka.topic_prefix)
    old_tier = names.retry("postgres", "renamed_away")
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    admin.create_topics([NewTopic(old_tier, cfg.kafka.partitions, 1)])[old_tier].result(30)
    sfid = "003000000000009AAA"
    stranded = command(ApplyTarget.LOCAL, 1, {"title": "waited", "last_name": "L"}, sfid=sfid, attempt=1)
    send(cfg, old_tier, stranded, retry=True)
    with running(cfg, lambda: PostgresSink(cfg)):
        wait_until("the retry from the old tier's topic", lambda: local_contact(cfg, sfid) == ("waited", None))
