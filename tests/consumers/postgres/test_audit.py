"""The audit table and the status follower's handling of In Queue keys (issue 11), against the real broker
and PostgreSQL: statuses are produced to the status topic as the roles write them, the follower runs on a
thread as in the postgres-sink process.

- every Conflict and Ambiguous status is a row of ``sfsync_audit``, once (a redelivery adds nothing), with
  its detail; other states are not;
- ``operations.audit_retention_days``: older statuses are not inserted, older rows are deleted (at most
  hourly);
- a status under an In Queue key (``queued:…``) never reaches the sync-state columns, however new.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumers.postgres.audit import PruneSchedule, audit_entries, retention_cutoff
from consumers.postgres.syncstate import SyncStateFollower, outcomes, write_batch
from sfsync.config import ConfigError, SfsyncConfig, build_config
from sfsync.database import init_schema
from sfsync.database.testing import DEMO_OBJECTS, make_config
from sfsync.devstack.stack import demo_config
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.records import Direction, RecordStatus, SyncState, queued_status_key, utcnow
from sfsync.serde import Serde

ARRIVE_S = 60.0
NOTE = "Title: local value 'LOCAL-1' lost to 'REMOTE' (salesforce_wins, 2026-12-03T07:01:00+00:00)"


def status(state: SyncState, at: datetime, *, key: str = "7", error: str | None = None,
           direction: Direction = Direction.OUTBOUND) -> RecordStatus:
    return RecordStatus(key=f"Contact:local:{key}", object="Contact", direction=direction, state=state,
                        local_key=key, last_error=error, last_attempt_ts=at, updated_ts=at)


# --------------------------------------------------------------------------- pure


def test_only_conflicts_and_ambiguous_matches_are_audited_each_once() -> None:
    t = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)
    first, second = status(SyncState.CONFLICT, t, error=NOTE), status(SyncState.CONFLICT, t + timedelta(seconds=1))
    ambiguous = status(SyncState.AMBIGUOUS, t, key="8", error="2 local, 1 Salesforce candidate(s)")
    entries = audit_entries([
        (first.kafka_key, first), (first.kafka_key, first),  # the same status twice: once
        (second.kafka_key, second),
        (ambiguous.kafka_key, ambiguous),
        (None, status(SyncState.SUCCESS, t)), (None, status(SyncState.FAILED, t, error="boom")),
        (queued_status_key(Direction.OUTBOUND, "Contact:local:7"), status(SyncState.CONFLICT, t)),  # a queued key
        (first.kafka_key, status(SyncState.CONFLICT, t - timedelta(days=2))),  # past the cutoff
    ], cutoff=t - timedelta(days=1))
    assert [(e.status_key, e.state, e.detail, e.updated_ts) for e in entries] == [
        ("outbound:Contact:local:7", "conflict", NOTE, t),
        ("outbound:Contact:local:7", "conflict", None, t + timedelta(seconds=1)),
        ("outbound:Contact:local:8", "ambiguous", "2 local, 1 Salesforce candidate(s)", t)]
    assert entries[0].record_key == "Contact:local:7" and entries[0].local_key == "7" and entries[0].sfid is None


def test_queued_keys_are_not_outcomes() -> None:
    t = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)
    done, queued = status(SyncState.SUCCESS, t), status(SyncState.IN_QUEUE, t + timedelta(minutes=1))
    assert outcomes([(done.kafka_key, done), (queued_status_key(Direction.OUTBOUND, queued.key), queued)]) == [done]


def test_pruning_is_due_first_then_at_most_hourly() -> None:
    now = [100.0]
    schedule = PruneSchedule(clock=lambda: now[0])
    assert schedule.due()
    schedule.done()
    now[0] += 3599
    assert not schedule.due()
    now[0] += 1
    assert schedule.due()
    assert retention_cutoff(datetime(2026, 12, 3, tzinfo=UTC), 90) == datetime(2026, 9, 4, tzinfo=UTC)


def test_retention_is_a_bounded_number_of_days() -> None:
    assert build_config(demo_config()).operations.audit_retention_days == 90
    raw = demo_config()
    raw["operations"] = {"audit_retention_days": 0}
    with pytest.raises(ConfigError) as e:
        build_config(raw)
    assert [p.path for p in e.value.problems] == ["operations.audit_retention_days"]


# --------------------------------------------------------------------------- broker + PostgreSQL


@pytest.fixture
def cfg(postgres_dsn: str, schema: str, kafka_config: dict[str, Any]) -> SfsyncConfig:
    objects = {**DEMO_OBJECTS, "Contact": {**DEMO_OBJECTS["Contact"], "sync_state": {}}}
    init_schema(make_config(postgres_dsn, schema, kafka=kafka_config), demo=True)
    execute(postgres_dsn, f'ALTER TABLE "{schema}".contacts ADD COLUMN sync_status text, ADD COLUMN sync_error '
                          'text, ADD COLUMN synced_at timestamptz, ADD COLUMN sync_status_at timestamptz')
    config = make_config(postgres_dsn, schema, objects, kafka=kafka_config,
                         operations={"audit_retention_days": 30})
    init_schema(config)
    apply_topics(config)
    return config


def execute(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def audit_rows(cfg: SfsyncConfig) -> list[tuple[Any, ...]]:
    return execute(cfg.postgres.dsn.get_secret_value(),
                   f'SELECT status_key, state, detail, updated_ts, object, direction, record_key, local_key '
                   f'FROM "{cfg.postgres.schema_name}".sfsync_audit ORDER BY updated_ts, id')


def produce(cfg: SfsyncConfig, messages: list[tuple[str, RecordStatus]]) -> None:
    names = TopicNames(cfg.kafka.topic_prefix)
    serde = Serde.from_config(cfg.kafka)
    producer = make_producer(cfg.kafka, "test-status")
    for key, s in messages:
        producer.produce(names.status, serde.encode(s, names.status), key.encode())
    producer.flush(30)


def wait_for(predicate: Any, what: str) -> Any:
    import time

    deadline = time.monotonic() + ARRIVE_S
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_follower_audits_every_loss_keeps_retention_and_ignores_queued_keys(cfg: SfsyncConfig) -> None:
    dsn, schema = cfg.postgres.dsn.get_secret_value(), cfg.postgres.schema_name
    (key,) = execute(dsn, f'INSERT INTO "{schema}".contacts (last_name) VALUES (%s) RETURNING id', ("audited",))[0]
    local = str(key)
    now = utcnow()
    # rows already in the table: one past the 30 days of retention (deleted at the first batch), one within
    for days, tag in ((40, "expired"), (10, "kept")):
        execute(dsn, f'INSERT INTO "{schema}".sfsync_audit (object, direction, record_key, state, detail, '
                     'updated_ts, status_key) VALUES (%s, %s, %s, %s, %s, %s, %s)',
                ("Contact", "outbound", f"Contact:local:{tag}", "conflict", tag, now - timedelta(days=days),
                 f"outbound:Contact:local:{tag}"))
    first = status(SyncState.CONFLICT, now - timedelta(seconds=3), key=local, error=NOTE)
    second = status(SyncState.CONFLICT, now - timedelta(seconds=2), key=local, error=NOTE.replace("1", "2", 1))
    ambiguous = status(SyncState.AMBIGUOUS, now - timedelta(seconds=2), key="999", error="ambiguous match")
    old = status(SyncState.CONFLICT, now - timedelta(days=31), key=local, error="past retention")
    queued = status(SyncState.IN_QUEUE, now + timedelta(minutes=5), key=local)  # newer than any outcome
    produce(cfg, [(first.kafka_key, first), (first.kafka_key, first), (second.kafka_key, second),
                  (ambiguous.kafka_key, ambiguous), (old.kafka_key, old),
                  (queued_status_key(Direction.OUTBOUND, queued.key), queued)])

    f = SyncStateFollower(cfg, retry_after=0.5, poll_s=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=f.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: f.audited >= 3, "three audit rows")
        row = wait_for(lambda: execute(dsn, f'SELECT sync_status, sync_error, sync_status_at FROM "{schema}".contacts '
                                            'WHERE id = %s AND sync_status IS NOT NULL', (key,)), "the row's state")
    finally:
        stop.set()
        thread.join(30)
    rows = audit_rows(cfg)
    record = f"Contact:local:{local}"
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("outbound:Contact:local:kept", "conflict", "kept", now - timedelta(days=10)),
        (f"outbound:{record}", "conflict", NOTE, first.updated_ts),
        (f"outbound:{record}", "conflict", NOTE.replace("1", "2", 1), second.updated_ts),
        ("outbound:Contact:local:999", "ambiguous", "ambiguous match", ambiguous.updated_ts),
    ]
    assert rows[1][4:] == ("Contact", "outbound", record, local)
    assert f.pruned == 1
    # the row shows the newest outcome (the second conflict), not the newer In Queue state of the queued key
    assert row[0][0] == "conflict" and row[0][2] == second.updated_ts
    assert row[0][1] == NOTE.replace("1", "2", 1)

    # a redelivery (a restart before the commit) inserts nothing again
    with psycopg.connect(dsn, autocommit=True) as conn:
        again = audit_entries([(first.kafka_key, first), (second.kafka_key, second)])
        done = write_batch(conn, schema, f.targets, [], again)
    assert done.audited == 0 and len(audit_rows(cfg)) == 4
    # writes of the follower are sfsync's: nothing captured
    assert execute(dsn, f'SELECT count(*) FROM "{schema}".sfsync_outbox WHERE local_key = %s AND '
                        'operation = %s', (local, "update"))[0][0] == 0
