"""The outbox relay: pure row conversion, and against the real broker + PostgreSQL (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from producers.postgres.convert import (
    OutboxRow,
    Prepared,
    TableIndex,
    event_key,
    field_value,
    prepare_row,
    queued_status,
    row_to_event,
)
from producers.postgres.relay import OutboxRelay, RelaySettings
from sfsync.config import SfsyncConfig
from sfsync.database import init_schema
from sfsync.database.schema import archive_table_name
from sfsync.database.testing import config_dict, drop_schema_cascade, make_config, new_schema_name
from sfsync.devstack.process import free_port
from sfsync.failures import parse_failure_headers
from sfsync.kafka.compacted import read_compacted
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.records import Alert, AlertKind, ChangeEvent, Direction, Operation, RecordStatus, Source, SyncState
from sfsync.serde import Serde

ROOT = Path(__file__).resolve().parents[3]
TS = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- pure conversion


def test_row_to_event_insert_update_delete_and_unknown_table() -> None:
    cfg = make_config("postgresql://x@127.0.0.1:1/x", "s")
    index = TableIndex.from_config(cfg)
    ins = row_to_event(OutboxRow(
        id=7, table_name="contacts", local_key="42", operation="insert",
        changed_columns=["first_name", "last_name", "email", "phone", "title", "account_id"],
        new_values={"id": 42, "sfid": None, "first_name": "Ada", "last_name": "L", "email": "a@x.io",
                    "phone": None, "title": None, "account_id": 3, "ignored_extra": 1},
        txid=900, committed_at=TS, origin=None), index)
    assert ins.source is Source.POSTGRES and ins.object == "Contact" and ins.entity == "contacts"
    assert ins.operation is Operation.CREATE and ins.local_key == "42" and ins.sfid is None
    assert ins.values == {"first_name": "Ada", "last_name": "L", "email": "a@x.io", "phone": None, "title": None,
                          "account_id": 3}
    assert ins.source_position == "7" and ins.transaction_key == "900" and ins.commit_ts == TS
    assert event_key(ins) == "Contact:local:42"

    upd = row_to_event(OutboxRow(
        id=8, table_name="accounts", local_key="5", operation="update", changed_columns=["name"],
        new_values={"id": 5, "sfid": "001XX", "name": "Acme", "industry": " Tech "}, txid=901, committed_at=TS,
        origin="backfill"), index)
    assert upd.operation is Operation.UPDATE and upd.sfid == "001XX" and upd.changed_fields == ["name"]
    assert upd.values == {"name": "Acme", "industry": " Tech "} and upd.origin == "backfill"
    assert event_key(upd) == "Account:001XX"

    dele = row_to_event(OutboxRow(
        id=9, table_name="cases", local_key="11", operation="delete", changed_columns=[],
        new_values={"id": 11, "sfid": "500A"}, txid=902, committed_at=TS), index)
    assert dele.operation is Operation.DELETE and dele.values == {} and dele.sfid == "500A"
    assert event_key(dele) == "Case:500A"

    unmapped = OutboxRow(id=10, table_name="orders", local_key="1", operation="insert", changed_columns=["x"],
                         new_values={"id": 1, "x": [1, 2]}, txid=903, committed_at=TS)
    other = row_to_event(unmapped, index)
    assert other.object == "orders" and other.entity == "orders" and other.values == {"id": 1, "x": "[1,2]"}

    with pytest.raises(ValueError, match="unknown operation"):
        row_to_event(replace(unmapped, operation="truncate"), index)
    assert field_value(Decimal("1.10")) == Decimal("1.10") and field_value({"a": 1}) == '{"a":1}'
    # the event survives the wire format
    serde = Serde()
    assert serde.decode(serde.encode(ins, "t.changes.outbound"), ChangeEvent, "t.changes.outbound") == ins


def test_typed_columns_are_coerced() -> None:
    cfg = make_config("postgresql://x@127.0.0.1:1/x", "s", {"Thing": {"table": "things", "fields": [
        {"column": "due", "field": "Due__c", "type": "date"},
        {"column": "amount", "field": "Amount__c", "type": "decimal"},
        {"column": "count", "field": "Count__c", "type": "integer"}]}})
    event = row_to_event(OutboxRow(
        id=1, table_name="things", local_key="1", operation="insert", changed_columns=["due"],
        new_values={"id": 1, "sfid": None, "due": "2024-02-29", "amount": Decimal("12.50"), "count": 3},
        txid=1, committed_at=TS), TableIndex.from_config(cfg))
    assert event.values == {"due": datetime(2024, 2, 29).date(), "amount": Decimal("12.50"), "count": 3}


# --------------------------------------------------------------------------- real servers


@pytest.fixture
def cfg(postgres_dsn: str, kafka_config: dict[str, Any]) -> Iterator[SfsyncConfig]:
    schema = new_schema_name()
    config = make_config(postgres_dsn, schema, kafka=kafka_config)
    init_schema(config, demo=True)
    apply_topics(config)
    yield config
    drop_schema_cascade(postgres_dsn, schema)


def consume_all(cfg: SfsyncConfig, expect: int, timeout: float = 30.0) -> list[tuple[str, ChangeEvent]]:
    """Read the outbound topic from the beginning (no group) until ``expect`` messages arrived."""
    topic = TopicNames(cfg.kafka.topic_prefix).changes_outbound
    consumer = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": "unused",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(cfg.kafka.partitions)])
    serde = Serde()
    out: list[tuple[str, ChangeEvent]] = []

    def take(messages: list[Message]) -> None:
        for m in messages:
            assert m.error() is None, m.error()
            key, value = m.key(), m.value()
            assert isinstance(key, bytes) and isinstance(value, bytes)
            out.append((key.decode(), serde.decode(value, ChangeEvent, topic)))

    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            take(consumer.consume(1000, 0.2))
        take(consumer.consume(1000, 0.3))  # anything beyond what we expected (duplicates): let us see them
    finally:
        consumer.close()
    return out


def outbox_ids(cfg: SfsyncConfig) -> list[int]:
    with psycopg.connect(cfg.postgres.dsn.get_secret_value()) as conn:
        rows = conn.execute(f"SELECT id FROM {cfg.postgres.schema_name}.{cfg.postgres.outbox_table} ORDER BY id")
        return [r[0] for r in rows.fetchall()]


def wait_for(cond: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class RelayThread:
    def __init__(self, cfg: SfsyncConfig, settings: RelaySettings, relay: OutboxRelay | None = None) -> None:
        self.stop = threading.Event()
        self.relay = relay or OutboxRelay(cfg, settings)
        self.thread = threading.Thread(target=self.relay.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


FAST = RelaySettings(batch_size=100, poll_interval_s=0.2, standby_check_s=0.1, backoff_s=0.1, max_backoff_s=0.5,
                     flush_timeout_s=10)


def test_rows_reach_kafka_in_order_and_are_deleted_after_the_ack(cfg: SfsyncConfig) -> None:
    schema = cfg.postgres.schema_name
    with psycopg.connect(cfg.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.accounts (name) SELECT 'acct ' || g FROM generate_series(1, 250) g")
        conn.execute(f"UPDATE {schema}.accounts SET phone = '555-' || id WHERE id % 5 = 0")
        conn.execute(f"UPDATE {schema}.accounts SET sfid = '001' || lpad(id::text, 15, '0'), name = name || '!' "
                     "WHERE id <= 10")
        conn.execute(f"DELETE FROM {schema}.accounts WHERE id = 3")
    ids = outbox_ids(cfg)
    assert len(ids) == 250 + 50 + 10 + 1

    relay = RelayThread(cfg, replace(FAST, archive=True, prune_every_s=3600))
    try:
        wait_for(lambda: not outbox_ids(cfg), what="outbox drained")
        got = consume_all(cfg, len(ids))
        # later changes wake the relay through NOTIFY long before the next poll would
        with psycopg.connect(cfg.postgres.dsn.get_secret_value(), autocommit=True) as conn:
            conn.execute(f"INSERT INTO {schema}.accounts (name) VALUES ('late')")
        wait_for(lambda: not outbox_ids(cfg), what="late row relayed")
    finally:
        relay.close()
    positions = [int(e.source_position) for _, e in got]
    assert sorted(set(positions)) == ids  # every row arrived
    assert len(positions) == len(ids)  # and exactly once here (no failure happened)
    by_key: dict[str, list[int]] = {}
    for key, event in got:
        assert key == event_key(event)
        by_key.setdefault(key, []).append(int(event.source_position))
    assert all(p == sorted(p) for p in by_key.values())  # per record, in outbox order
    first = next(e for _, e in got if e.source_position == str(ids[0]))
    assert first.operation is Operation.CREATE and first.values["name"] == "acct 1" and first.local_key == "1"
    linked = [e for k, e in got if k == "Account:001000000000000003"]
    assert [e.operation for e in linked] == [Operation.UPDATE, Operation.DELETE]
    # archive mode: relayed rows were moved, not lost
    with psycopg.connect(cfg.postgres.dsn.get_secret_value()) as conn:
        archived = conn.execute(f"SELECT count(*) FROM {schema}.{archive_table_name('sfsync_outbox')}").fetchone()
    assert archived == (len(ids) + 1,)


def test_nothing_is_deleted_until_the_broker_acknowledges(cfg: SfsyncConfig) -> None:
    schema = cfg.postgres.schema_name
    with psycopg.connect(cfg.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.contacts (last_name) SELECT 'c' || g FROM generate_series(1, 30) g")
    ids = outbox_ids(cfg)
    dead_kafka = cfg.kafka.model_copy(update={
        "bootstrap_servers": f"127.0.0.1:{free_port()}",
        "librdkafka": {"message.timeout.ms": "500", "log_level": "0"}})
    dead = cfg.model_copy(update={"kafka": dead_kafka})
    relay = RelayThread(dead, replace(FAST, flush_timeout_s=2))
    try:
        wait_for(lambda: len(relay.relay.status.errors) >= 2, what="delivery failures")
        assert relay.relay.status.state == "active" and relay.relay.status.relayed == 0
        assert outbox_ids(cfg) == ids
    finally:
        relay.close()
    assert outbox_ids(cfg) == ids
    relay = RelayThread(cfg, FAST)  # the broker is back: everything goes
    try:
        wait_for(lambda: not outbox_ids(cfg), what="outbox drained")
    finally:
        relay.close()
    assert sorted({int(e.source_position) for _, e in consume_all(cfg, len(ids))}) == ids


def test_second_relay_stands_by_and_takes_over(cfg: SfsyncConfig) -> None:
    schema = cfg.postgres.schema_name
    dsn = cfg.postgres.dsn.get_secret_value()
    a = RelayThread(cfg, FAST)
    wait_for(lambda: a.relay.status.state == "active", what="first relay active")
    b = RelayThread(cfg, FAST)
    try:
        wait_for(lambda: b.relay.status.state == "standby", what="second relay standing by")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {schema}.accounts (name) SELECT 'a' || g FROM generate_series(1, 20) g")
            wait_for(lambda: not outbox_ids(cfg), what="first batch relayed")
            # the relay counts a batch after deleting its rows: wait for the count, not only the delete
            wait_for(lambda: a.relay.status.relayed == 20, what="first batch counted")
            assert b.relay.status.relayed == 0
            assert b.relay.status.state == "standby"
            # the active relay's session dies (as when its pod is killed): the standby takes over
            conn.execute("SELECT pg_terminate_backend(%s)", (a.relay.status.backend_pid,))
            wait_for(lambda: b.relay.status.state == "active", what="standby took over")
            wait_for(lambda: a.relay.status.state == "standby", what="old relay back as standby")
            conn.execute(f"INSERT INTO {schema}.accounts (name) SELECT 'b' || g FROM generate_series(1, 20) g")
            wait_for(lambda: not outbox_ids(cfg), what="second batch relayed")
            wait_for(lambda: b.relay.status.relayed == 20, what="second batch counted")
        assert a.relay.status.relayed == 20
    finally:
        a.close()
        b.close()
    assert len({e.source_position for _, e in consume_all(cfg, 40)}) == 40


def read_to_end(cfg: SfsyncConfig, topic: str, timeout: float = 60.0) -> list[Message]:
    """Every message on ``topic`` up to its end now, in partition order (assigned, no group). Hang guard only."""
    consumer = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": "unused",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10, "enable.partition.eof": True})
    partitions = set(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[Message] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while at_end != partitions and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                err = m.error()
                if err is None:
                    out.append(m)
                    at_end.discard(m.partition() or 0)
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition() or 0)
    finally:
        consumer.close()
    assert at_end == partitions, f"{topic}: did not reach the end of every partition"
    return out


def value_of(m: Message) -> bytes:
    value = m.value()
    assert isinstance(value, bytes)
    return value


def headers_of(m: Message) -> list[tuple[str, bytes | None]]:
    raw = m.headers() or []
    assert isinstance(raw, list)
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in raw]


def _alerts(cfg: SfsyncConfig) -> list[Alert]:
    topic = TopicNames(cfg.kafka.topic_prefix).alerts
    return [Serde().decode(value_of(m), Alert, topic) for m in read_to_end(cfg, topic)]


def _with_librdkafka(cfg: SfsyncConfig, **settings: str) -> SfsyncConfig:
    kafka = cfg.kafka.model_copy(update={"librdkafka": {**cfg.kafka.librdkafka, **settings}})
    return cfg.model_copy(update={"kafka": kafka})


LIMIT = 100_000


def test_a_row_too_large_for_the_broker_goes_to_the_dlq_and_the_rest_flows(cfg: SfsyncConfig) -> None:
    """An outbox row whose message is over the producer's limit (``message.max.bytes`` = 100 kB through
    ``kafka.librdkafka``; the embedded broker itself accepts anything) goes to ``<prefix>.dlq.salesforce``
    with the failure headers (stage ``postgres-producer``, class ``MSG_SIZE_TOO_LARGE``, a message naming
    table, key, outbox id, size and limit) and a JSON value that identifies the row but leaves the values
    out (the message says why); one alert on ``<prefix>.alerts``; the rows before and after it in the same
    batch and the rows of later batches reach ``changes.outbound``; the outbox ends empty.

    Failed before the fix: ``produce()`` raised ``KafkaException(MSG_SIZE_TOO_LARGE)``, the relay retried the
    same batch for ever with a fresh producer and the outbox never drained (hang guard of 60 s).
    """
    schema = cfg.postgres.schema_name
    dsn = cfg.postgres.dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.contacts (last_name) VALUES ('before')")
        conn.execute(f"INSERT INTO {schema}.contacts (last_name, title) VALUES ('big', repeat('x', 200000))")
        conn.execute(f"INSERT INTO {schema}.contacts (last_name) VALUES ('after')")
    first = outbox_ids(cfg)
    big_id = first[1]
    relay = RelayThread(_with_librdkafka(cfg, **{"message.max.bytes": str(LIMIT)}), FAST)
    try:
        wait_for(lambda: not outbox_ids(cfg), timeout=60, what="outbox drained past the oversized row")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"UPDATE {schema}.contacts SET phone = '555' WHERE last_name = 'after'")
        wait_for(lambda: not outbox_ids(cfg), timeout=60, what="a later row relayed")
        assert relay.relay.status.state == "active"
    finally:
        relay.close()
    names = TopicNames(cfg.kafka.topic_prefix)
    events = [e for _, e in consume_all(cfg, 3)]
    assert sorted(int(e.source_position) for e in events) == [first[0], first[2], first[2] + 1]
    dead = read_to_end(cfg, names.dlq("salesforce"))
    assert len(dead) == 1
    info = parse_failure_headers(headers_of(dead[0]))
    assert (info.kind, info.error_class, info.stage, info.attempt) == ("permanent", "MSG_SIZE_TOO_LARGE",
                                                                       "postgres-producer", 1)
    for part in (f"outbox row {big_id}", "table contacts", "key Contact:local:2", f"limit {LIMIT}"):
        assert part in info.message, (part, info.message)
    assert "values are not in this dead letter" in info.message
    assert dsn not in info.message
    assert dead[0].key() == b"Contact:local:2"
    body = json.loads(value_of(dead[0]))
    assert body["outbox_id"] == big_id and body["table"] == "contacts" and body["local_key"] == "2"
    assert body["operation"] == "insert" and body["size"] > LIMIT and body["limit"] == LIMIT
    assert "new_values" not in body and len(value_of(dead[0])) < 10_000
    alerts = _alerts(cfg)
    assert len(alerts) == 1
    assert alerts[0].kind is AlertKind.OTHER and alerts[0].object == "Contact"
    assert alerts[0].details["outbox_id"] == str(big_id) and alerts[0].details["dlq"] == names.dlq("salesforce")


def test_a_row_without_a_key_goes_to_the_dlq_and_the_rest_flows(cfg: SfsyncConfig) -> None:
    """Outbox rows with a NULL and an empty ``local_key`` (and no sfid) cannot be keyed: each goes to
    ``<prefix>.dlq.salesforce`` with class ``MissingRecordKey``, a message naming table and outbox id, the row
    itself as JSON (nothing lost), and one alert each; the rows around them reach ``changes.outbound``.

    Failed before the fix: ``record_key`` raised ``ValueError`` out of the relay's loop: the relay died (and a
    restarted one dies on the same row), the outbox never drained.
    """
    schema = cfg.postgres.schema_name
    outbox = f"{schema}.{cfg.postgres.outbox_table}"
    dsn = cfg.postgres.dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.contacts (last_name) VALUES ('before')")
        conn.execute(f"INSERT INTO {outbox} (table_name, local_key, operation, changed_columns, new_values) VALUES "
                     "('contacts', NULL, 'insert', '{last_name}', '{\"last_name\": \"null key\"}'), "
                     "('contacts', '', 'update', '{last_name}', '{\"last_name\": \"empty key\"}')")
        conn.execute(f"INSERT INTO {schema}.contacts (last_name) VALUES ('after')")
    ids = outbox_ids(cfg)
    relay = RelayThread(cfg, FAST)
    try:
        wait_for(lambda: not outbox_ids(cfg), timeout=60, what="outbox drained past the rows without a key")
        assert relay.relay.status.state == "active"
    finally:
        relay.close()
    names = TopicNames(cfg.kafka.topic_prefix)
    events = consume_all(cfg, 2)
    assert sorted(int(e.source_position) for _, e in events) == [ids[0], ids[3]]
    dead = sorted(read_to_end(cfg, names.dlq("salesforce")), key=lambda m: json.loads(value_of(m))["outbox_id"])
    assert len(dead) == 2
    for message, outbox_id, key, last_name in zip(dead, ids[1:3], (None, ""), ("null key", "empty key"),
                                                  strict=True):
        info = parse_failure_headers(headers_of(message))
        assert (info.kind, info.error_class, info.stage) == ("permanent", "MissingRecordKey", "postgres-producer")
        assert f"outbox row {outbox_id}" in info.message and "table contacts" in info.message
        body = json.loads(value_of(message))
        assert body["outbox_id"] == outbox_id and body["local_key"] == key
        assert body["new_values"] == {"last_name": last_name}
    alerts = _alerts(cfg)
    assert sorted(a.details["outbox_id"] for a in alerts) == sorted(str(i) for i in ids[1:3])


class GatedRelay(OutboxRelay):
    """A relay whose first send waits at a gate, with its batch read: "mid-batch", on demand."""

    def __init__(self, cfg: SfsyncConfig, settings: RelaySettings) -> None:
        super().__init__(cfg, settings)
        self.at_gate = threading.Event()
        self.gate = threading.Event()

    def _send(self, *args: Any, **kwargs: Any) -> Any:
        if not self.gate.is_set():
            self.at_gate.set()
            self.gate.wait(120)
        return super()._send(*args, **kwargs)


SESSION = "sfsync.relay.session"


def test_a_terminated_relay_stops_sending_once_the_standby_took_over(cfg: SfsyncConfig) -> None:
    """``pg_terminate_backend`` of the active relay's session while it holds a batch, with a standby running:
    the standby takes over and relays everything; the old relay, resuming its batch, finds its lock gone and
    sends nothing. On the topic every outbox row arrived, each outbox id always with the same event id, and
    from the first message of the new relay on (per partition) no message of the old one.

    Failed before the fix: the old relay produced its stale batch after the standby had relayed the same
    rows (and later ones), with new random event ids: each outbox id of that batch arrived with two different
    event ids.
    """
    schema = cfg.postgres.schema_name
    dsn = cfg.postgres.dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.accounts (name) SELECT 'a' || g FROM generate_series(1, 50) g")
        gated = GatedRelay(cfg, FAST)
        a = RelayThread(cfg, FAST, gated)
        b: RelayThread | None = None
        try:
            wait_for(gated.at_gate.is_set, timeout=60, what="first relay active with its batch read")
            old_session = getattr(gated.status, "session", None)  # (no such field before the fix)
            b = RelayThread(cfg, FAST)
            wait_for(lambda: b is not None and b.relay.status.state == "standby", timeout=60, what="standby")
            conn.execute("SELECT pg_terminate_backend(%s)", (gated.status.backend_pid,))
            wait_for(lambda: b is not None and b.relay.status.state == "active", timeout=60, what="takeover")
            wait_for(lambda: not outbox_ids(cfg), timeout=60, what="new relay relayed the batch")
            conn.execute(f"INSERT INTO {schema}.accounts (name) SELECT 'b' || g FROM generate_series(1, 10) g")
            wait_for(lambda: not outbox_ids(cfg), timeout=60, what="new relay relayed later rows")
            gated.gate.set()  # the old relay resumes the batch it read before its session was terminated
            wait_for(lambda: gated.status.state == "standby", timeout=60, what="old relay back to standby")
            conn.execute(f"INSERT INTO {schema}.accounts (name) SELECT 'c' || g FROM generate_series(1, 5) g")
            wait_for(lambda: not outbox_ids(cfg), timeout=60, what="new relay still relaying")
            new_session = getattr(b.relay.status, "session", None)
        finally:
            gated.gate.set()
            a.close()
            if b is not None:
                b.close()
    messages = read_to_end(cfg, TopicNames(cfg.kafka.topic_prefix).changes_outbound)
    serde = Serde()
    topic = TopicNames(cfg.kafka.topic_prefix).changes_outbound
    event_ids: dict[str, set[str]] = {}
    senders: dict[int, list[str]] = {}
    for m in messages:
        event = serde.decode(value_of(m), ChangeEvent, topic)
        event_ids.setdefault(event.source_position, set()).add(event.event_id)
        session = dict(headers_of(m)).get(SESSION)
        senders.setdefault(m.partition() or 0, []).append(session.decode() if session else "")
    assert len(event_ids) == 65  # every row arrived
    assert {p: ids for p, ids in event_ids.items() if len(ids) > 1} == {}  # one event id per outbox id
    assert len({i for ids in event_ids.values() for i in ids}) == 65
    assert old_session and new_session and old_session != new_session
    for partition, sessions in senders.items():
        assert new_session in sessions, partition
        after_takeover = sessions[sessions.index(new_session):]
        assert old_session not in after_takeover, partition
    assert gated.status.relayed == 0 and b.relay.status.relayed == 65


class UnlockingRelay(OutboxRelay):
    """A relay whose advisory lock vanishes, its session alive (as after a pooler's reset), before its first
    send."""

    def __init__(self, cfg: SfsyncConfig, settings: RelaySettings) -> None:
        super().__init__(cfg, settings)
        self.first_session: str | None = None

    def _send(self, conn: psycopg.Connection, *args: Any, **kwargs: Any) -> Any:
        if self.first_session is None:
            self.first_session = self.status.session
            conn.execute("SELECT pg_advisory_unlock_all()")
        return super()._send(conn, *args, **kwargs)


def test_a_relay_whose_lock_is_gone_sends_nothing_until_it_holds_it_again(cfg: SfsyncConfig) -> None:
    """The lock check reads ``pg_locks`` for the relay's own session: with the lock released under a live
    session, the relay sends nothing from that session, goes back to standby, takes the lock again on a new
    session and relays the batch from there: every row once, every message from the new session.
    """
    schema = cfg.postgres.schema_name
    with psycopg.connect(cfg.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.accounts (name) SELECT 'u' || g FROM generate_series(1, 20) g")
    relay = UnlockingRelay(cfg, FAST)
    thread = RelayThread(cfg, FAST, relay)
    try:
        wait_for(lambda: not outbox_ids(cfg), timeout=60, what="outbox drained by the relay's next session")
    finally:
        thread.close()
    assert relay.status.lock_losses == 1 and relay.status.takeovers == 2
    assert any("relay lock lost" in e and "no longer holds the advisory lock" in e for e in relay.status.errors)
    messages = read_to_end(cfg, TopicNames(cfg.kafka.topic_prefix).changes_outbound)
    assert len(messages) == 20
    sessions = {(dict(headers_of(m))[SESSION] or b"").decode() for m in messages}
    assert relay.first_session is not None and sessions == {relay.status.session}
    assert relay.first_session not in sessions


def _spawn_relay(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("SFSYNC_CONFIG", None)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "producers.postgres", "--config", str(config_file), "--batch-size", "50",
             "--poll-interval", "0.2"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )


def test_kill_9_mid_stream_loses_nothing(cfg: SfsyncConfig, tmp_path: Path) -> None:
    schema = cfg.postgres.schema_name
    dsn = cfg.postgres.dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.accounts (name) SELECT 'k' || g FROM generate_series(1, 3000) g")
    ids = outbox_ids(cfg)
    config_file = tmp_path / "sfsync.yaml"
    config_file.write_text(yaml.safe_dump(config_dict(cfg)))
    proc = _spawn_relay(config_file, tmp_path / "relay.log")
    try:
        wait_for(lambda: len(outbox_ids(cfg)) < len(ids) - 200, what="relay under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = outbox_ids(cfg)
    assert 0 < len(left) < len(ids), "the kill should land mid-stream"
    assert left == ids[-len(left):]  # what remains is exactly the unsent tail, in order
    proc = _spawn_relay(config_file, tmp_path / "relay.log")
    try:
        wait_for(lambda: not outbox_ids(cfg), what="restarted relay drained the outbox")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    got = consume_all(cfg, len(ids))
    assert sorted({int(e.source_position) for _, e in got}) == ids  # every row at least once
    assert len(got) - len(ids) <= 50  # at most the batch in flight at the kill came twice


def test_numbers_and_ids_leave_the_outbox_exact(postgres_dsn: str, kafka_config: dict[str, Any]) -> None:
    """Values of a numeric column keep every digit from the row to the broker (jsonb numbers parsed as
    Decimal / int, carried as Avro decimal text / bigint), and a 15-character sfid leaves as the 18-character
    id (issue 10, item 11). The numbers were exact before the fix already; the sfid was not."""
    schema = new_schema_name()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.things (id bigserial PRIMARY KEY, sfid text UNIQUE, amount numeric, "
                     "big numeric, plain numeric, label text)")
    cfg = make_config(postgres_dsn, schema, {"Thing__c": {"table": "things", "fields": [
        {"column": "amount", "field": "Amount__c"}, {"column": "big", "field": "Big__c"},
        {"column": "plain", "field": "Plain__c", "type": "decimal"}, {"column": "label", "field": "Name"}]}},
        kafka=kafka_config)
    try:
        init_schema(cfg)
        apply_topics(cfg)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {schema}.things (sfid, amount, big, plain, label) VALUES (%s, %s, %s, %s, %s)",
                         ("a0X8d00000003D7", Decimal("12345678901234567.891"), 2**60 + 1, Decimal("-0.10"), "x"))
        relay = RelayThread(cfg, FAST)
        try:
            ((key, event),) = consume_all(cfg, 1)
        finally:
            relay.close()
    finally:
        drop_schema_cascade(postgres_dsn, schema)
    assert key == "Thing__c:a0X8d00000003D7EAI" and event.sfid == "a0X8d00000003D7EAI"
    assert event.values == {"amount": Decimal("12345678901234567.891"), "big": 2**60 + 1, "plain": Decimal("-0.10"),
                            "label": "x"}
    assert type(event.values["big"]) is int


def test_queued_status_of_a_mapped_row_and_none_for_an_unmapped_table() -> None:
    cfg = make_config("postgresql://x@127.0.0.1:1/x", "s")
    index = TableIndex.from_config(cfg)
    serde = Serde()
    row = OutboxRow(id=7, table_name="accounts", local_key="5", operation="update", changed_columns=["name"],
                    new_values={"id": 5, "sfid": "001000000000001", "name": "Acme"}, txid=1, committed_at=TS)
    prepared = prepare_row(row, index, serde, "t.changes.outbound", "src", 1_000_000)
    assert isinstance(prepared, Prepared)
    status = queued_status(prepared, TS)
    assert status == RecordStatus(key="Account:001000000000001AAA", object="Account", direction=Direction.OUTBOUND,
                                  state=SyncState.IN_QUEUE, sfid="001000000000001AAA", local_key="5",
                                  last_attempt_ts=None, updated_ts=TS)
    unmapped = prepare_row(replace(row, table_name="orders"), index, serde, "t.changes.outbound", "src", 1_000_000)
    assert isinstance(unmapped, Prepared) and queued_status(unmapped, TS) is None


def _statuses(cfg: SfsyncConfig) -> tuple[list[Message], dict[str, RecordStatus | None]]:
    topic = TopicNames(cfg.kafka.topic_prefix).status
    raw = read_to_end(cfg, topic)
    latest = read_compacted(cfg.kafka, topic, key=bytes.decode,
                            decode=lambda v: Serde().decode(v, RecordStatus, topic), timeout=30)
    return raw, latest


def test_every_sent_change_writes_its_records_in_queue_state_once_per_batch(cfg: SfsyncConfig) -> None:
    """Each change the relay sends puts its record's In Queue state on the status topic (key
    ``queued:outbound:<record key>``, direction outbound, no attempt yet, ``updated_ts`` of the send); a record
    changed several times in one batch gets one status message for that batch."""
    schema = cfg.postgres.schema_name
    with psycopg.connect(cfg.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.contacts (last_name) SELECT 'c' || g FROM generate_series(1, 3) g")
        conn.execute(f"UPDATE {schema}.contacts SET title = 'x' WHERE id = 2")
        conn.execute(f"INSERT INTO {schema}.accounts (name, sfid) VALUES ('linked', '001000000000009AAA')")
    before = datetime.now(UTC)
    relay = RelayThread(cfg, FAST)
    try:
        wait_for(lambda: not outbox_ids(cfg), what="outbox drained")
    finally:
        relay.close()
    after = datetime.now(UTC)
    assert relay.relay.status.batches == 1 and relay.relay.status.queued_lost == 0
    raw, latest = _statuses(cfg)
    keys = ["queued:outbound:Contact:local:1", "queued:outbound:Contact:local:2", "queued:outbound:Contact:local:3",
            "queued:outbound:Account:001000000000009AAA"]
    assert sorted(m.key().decode() for m in raw) == sorted(keys)  # type: ignore[union-attr]
    assert sorted(latest) == sorted(keys)
    for key, status in latest.items():
        assert status is not None and status.state is SyncState.IN_QUEUE and status.direction is Direction.OUTBOUND
        assert key == f"queued:outbound:{status.key}" and status.failure_count == 0 and status.last_error is None
        assert status.last_attempt_ts is None and before <= status.updated_ts <= after
    contact = latest["queued:outbound:Contact:local:2"]
    assert contact is not None and (contact.object, contact.local_key, contact.sfid) == ("Contact", "2", None)
    account = latest["queued:outbound:Account:001000000000009AAA"]
    assert account is not None and (account.object, account.sfid) == ("Account", "001000000000009AAA")
    assert len({s.updated_ts for s in latest.values() if s is not None}) == 1  # one time per batch
