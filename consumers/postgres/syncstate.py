"""Sync state on the record itself (issue 12): the compacted status topic -> ``objects.<Name>.sync_state``
columns of the local row; and the audit of losing changes (issue 11) -> ``<schema>.sfsync_audit``
(:mod:`consumers.postgres.audit`).

Contract:

- :class:`SyncStateFollower` reads ``<prefix>.status`` in its own consumer group
  (``<prefix>-postgres-state-sink``: it commits its own offsets, from the earliest on first start) and
  runs inside the PostgreSQL sink process (:func:`run_postgres_sink`), on a thread of its own: the
  role that already holds the database connection settings, the tables and the origin marker; no new
  role, deployment or readiness surface. It always runs (the audit needs no config); the columns only for
  objects with ``sync_state``.
- Both directions' outcomes land on the row: ``status_column`` = the state's name (``success``,
  ``failed``, ``conflict``, ``filtered``, ``ambiguous``, ``superseded``),
  ``status_at_column`` = the status record's ``updated_ts``, ``error_column`` = its last error (first line
  kept whole, whitespace collapsed, cut to ``error_max_length``; null on success), ``synced_at_column`` =
  the attempt time of a success (unchanged by any other state).
- **Order**: a status is written only when its time is newer than ``status_at_column`` (one ``UPDATE``
  guard), so an older status never replaces a newer one, whatever partition, replica or restart it
  comes from; a batch is collapsed to the newest status per row first (:func:`collapse`). Writing the
  same status again changes nothing: idempotent, at-least-once is enough.
- **Outcomes, not the queue**: a status under an In Queue key (``queued:…``,
  :func:`sfsync.records.queued_status_key`) is never written on the row: the columns show what became of
  the record's last change, ``sfsync queue`` shows what is waiting (:func:`outcomes`).
- **Audit**: each Conflict and Ambiguous status of the batch is appended to ``sfsync_audit`` in the same
  transaction (:func:`consumers.postgres.audit.audit_entries`, idempotent); rows past
  ``operations.audit_retention_days`` are deleted at most hourly, in a batch's transaction.
- The row is found by its local key when the status names one, else by its sfid; a status whose row
  does not exist (yet, or any more) changes nothing (the record's next status will).
- Every write is an sfsync write (``set_config('sfsync.origin', 'sfsync', true)``): the capture trigger
  skips it (it would skip it anyway: sync-state columns are not mapped), so no outbox row, no echo.
- One transaction per consumed batch, one statement per object and match kind; offsets are committed
  after it commits. A database error keeps the batch and retries it after a pause (logged once per
  outage); an undecodable status or a tombstone is skipped.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import psycopg
from confluent_kafka import Consumer, Message
from psycopg import sql
from psycopg.types.json import Jsonb

from consumers.postgres.audit import (
    AuditEntry,
    PruneSchedule,
    audit_entries,
    insert_entries,
    is_queued,
    prune,
    retention_cutoff,
)
from sfsync.config import SfsyncConfig
from sfsync.config.mapping import SyncStateColumns
from sfsync.database.capture import ORIGIN_MARKER, ORIGIN_SETTING
from sfsync.database.connect import connect
from sfsync.health import Health
from sfsync.kafka.clients import commit_messages, make_consumer
from sfsync.kafka.topics import TopicNames
from sfsync.records import RecordStatus, SyncState, utcnow
from sfsync.serde import DecodeError, Serde

log = logging.getLogger("sfsync.sink.postgres.syncstate")

APPLICATION_NAME = "sfsync-postgres-sync-state"
#: the follower's consumer group is ``TopicNames.sink_group(GROUP_NAME)``
GROUP_NAME = "postgres-state"
BATCH = 500


@dataclass(frozen=True, slots=True)
class StateTarget:
    """Where one object's sync state goes."""

    schema: str
    table: str
    local_key: str
    sfid_column: str
    columns: SyncStateColumns


@dataclass(frozen=True, slots=True)
class StateRow:
    """The columns one status sets on one row (found by ``local_key``, else ``sfid``)."""

    object: str
    local_key: str | None
    sfid: str | None
    status: str
    at: datetime
    error: str | None
    synced_at: datetime | None

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.object, "k", self.local_key) if self.local_key else (self.object, "s", self.sfid or "")


def targets(cfg: SfsyncConfig) -> dict[str, StateTarget]:
    """The objects with ``sync_state`` configured."""
    return {
        name: StateTarget(cfg.postgres.schema_name, obj.table, obj.local_key, obj.sfid_column, obj.sync_state)
        for name, obj in cfg.objects.items() if obj.sync_state is not None
    }


_SPACE = re.compile(r"\s+")


def trim_error(error: str | None, limit: int) -> str | None:
    """The error as one line (whitespace collapsed), at most ``limit`` characters (an ellipsis marks a cut)."""
    if error is None:
        return None
    text = _SPACE.sub(" ", error).strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def state_row(status: RecordStatus, target: StateTarget) -> StateRow | None:
    """What ``status`` writes on its row; ``None`` when it names no row (neither local key nor sfid)."""
    if not status.local_key and not status.sfid:
        return None
    success = status.state is SyncState.SUCCESS
    return StateRow(
        object=status.object, local_key=status.local_key or None, sfid=status.sfid or None,
        status=status.state.value, at=status.updated_ts,
        error=None if success else trim_error(status.last_error, target.columns.error_max_length),
        synced_at=(status.last_attempt_ts or status.updated_ts) if success else None,
    )


def collapse(statuses: Iterable[RecordStatus], by_object: Mapping[str, StateTarget]) -> list[StateRow]:
    """The newest row write per row identity (objects without ``sync_state`` dropped), in first-seen order:
    one ``UPDATE ... FROM`` must not name a row twice (PostgreSQL would apply an arbitrary one)."""
    newest: dict[tuple[str, str, str], StateRow] = {}
    for status in statuses:
        target = by_object.get(status.object)
        row = state_row(status, target) if target is not None else None
        if row is None:
            continue
        seen = newest.get(row.identity)
        if seen is None or row.at > seen.at:
            newest[row.identity] = row
    return list(newest.values())


def outcomes(statuses: Iterable[tuple[str | None, RecordStatus]]) -> list[RecordStatus]:
    """The statuses the sync-state columns show, from ``(message key, status)`` pairs: the In Queue keys
    (``queued:…``) are left out: the columns show outcomes, not the queue."""
    return [status for key, status in statuses if not is_queued(key)]


def row_json(row: StateRow) -> dict[str, object]:
    return {"k": row.local_key, "s": row.sfid, "status": row.status, "at": row.at.isoformat(),
            "error": row.error, "synced": row.synced_at.isoformat() if row.synced_at else None}


def update_statement(target: StateTarget, by_key: bool) -> sql.Composed:
    """``UPDATE`` the sync-state columns of the rows named in the jsonb parameter (by local key, converted by
    the key column's own input function, or by sfid), only where the shown state is older."""
    c = target.columns
    t = sql.Identifier(target.schema, target.table)
    at = sql.Identifier(c.status_at_column)
    sets: list[sql.Composable] = [
        sql.SQL("{} = s.status").format(sql.Identifier(c.status_column)),
        sql.SQL("{} = s.at").format(at),
    ]
    if c.error_column:
        sets.append(sql.SQL("{} = s.error").format(sql.Identifier(c.error_column)))
    if c.synced_at_column:
        sets.append(sql.SQL("{c} = COALESCE(s.synced, t.{c})").format(c=sql.Identifier(c.synced_at_column)))
    k = sql.Identifier(target.local_key)
    match = (sql.SQL("t.{k} = (jsonb_populate_record(NULL::{t}, jsonb_build_object({kl}, s.k))).{k}").format(
        k=k, t=t, kl=sql.Literal(target.local_key)) if by_key
        else sql.SQL("t.{} = s.s").format(sql.Identifier(target.sfid_column)))
    return sql.SQL(
        "UPDATE {t} AS t SET {sets} FROM (SELECT e ->> 'k' AS k, e ->> 's' AS s, e ->> 'status' AS status, "
        "(e ->> 'at')::timestamptz AS at, e ->> 'error' AS error, (e ->> 'synced')::timestamptz AS synced "
        "FROM jsonb_array_elements(%s::jsonb) AS e) AS s "
        "WHERE {match} AND (t.{at} IS NULL OR t.{at} < s.at)"
    ).format(t=t, sets=sql.SQL(", ").join(sets), match=match, at=at)


def _update_rows(conn: psycopg.Connection, by_object: Mapping[str, StateTarget], rows: list[StateRow]) -> int:
    changed = 0
    groups: dict[tuple[str, bool], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((row.object, row.local_key is not None), []).append(row_json(row))
    for (name, by_key), docs in groups.items():
        cur = conn.execute(update_statement(by_object[name], by_key), (Jsonb(docs),))
        changed += max(cur.rowcount, 0)
    return changed


def write_rows(conn: psycopg.Connection, by_object: Mapping[str, StateTarget], rows: list[StateRow]) -> int:
    """Write ``rows`` in one sfsync transaction (origin marker set); the number of rows changed."""
    with conn.transaction():
        conn.execute("SELECT set_config(%s, %s, true)", (ORIGIN_SETTING, ORIGIN_MARKER))
        return _update_rows(conn, by_object, rows)


@dataclass(frozen=True, slots=True)
class Written:
    """What one batch's transaction did."""

    rows: int
    audited: int
    pruned: int


def write_batch(conn: psycopg.Connection, schema: str, by_object: Mapping[str, StateTarget], rows: list[StateRow],
                entries: list[AuditEntry], prune_before: datetime | None = None) -> Written:
    """One sfsync transaction (origin marker set): the sync-state ``rows``, the audit ``entries``, and, when
    ``prune_before`` is given, the deletion of audit rows older than it."""
    with conn.transaction():
        conn.execute("SELECT set_config(%s, %s, true)", (ORIGIN_SETTING, ORIGIN_MARKER))
        changed = _update_rows(conn, by_object, rows)
        audited = insert_entries(conn, schema, entries)
        pruned = prune(conn, schema, prune_before) if prune_before is not None else 0
    return Written(changed, audited, pruned)


class SyncStateFollower:
    """Follows the status topic: keeps the ``sync_state`` columns current and appends the audit (module
    contract)."""

    def __init__(self, cfg: SfsyncConfig, *, retry_after: float = 2.0, poll_s: float = 0.5,
                 schedule: PruneSchedule | None = None) -> None:
        self.cfg = cfg
        self.targets = targets(cfg)
        self.names = TopicNames(cfg.kafka.topic_prefix)
        self.serde = Serde.from_config(cfg.kafka)
        self.retry_after = retry_after
        self.poll_s = poll_s
        self.schedule = schedule or PruneSchedule()
        self.written = 0
        self.audited = 0
        self.pruned = 0
        self._conn: psycopg.Connection | None = None

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: consume, write, commit."""
        consumer: Consumer = make_consumer(self.cfg.kafka, self.names.sink_group(GROUP_NAME), GROUP_NAME)
        try:
            consumer.subscribe([self.names.status])
            while not stop.is_set():
                messages = [m for m in consumer.consume(BATCH, self.poll_s) if m.error() is None]
                if (messages or self.schedule.due()) and self._write_until_done(messages, stop) and messages:
                    commit_messages(consumer, messages)
        finally:
            consumer.close()
            self.close()

    def _decode(self, messages: list[Message]) -> list[tuple[str | None, RecordStatus]]:
        """``(message key, status)`` of each outcome message. Skipped: tombstones, undecodable ones, and In
        Queue states before they are decoded (neither the columns nor the audit take them; they are about half
        the status topic's records, and decoding every status took a sixth of the postgres-sink's CPU)."""
        found: list[tuple[str | None, RecordStatus]] = []
        for m in messages:
            raw = m.value()
            raw_key = m.key()
            key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else raw_key
            if raw is None or is_queued(key):
                continue
            try:
                status = self.serde.decode(raw, RecordStatus, self.names.status)
            except DecodeError as e:
                log.warning("status at %s[%s]@%s skipped: %s", m.topic(), m.partition(), m.offset(), e)
                continue
            found.append((key, status))
        return found

    def _write_until_done(self, messages: list[Message], stop: threading.Event) -> bool:
        """Write the batch (and prune, when due) until it is written or ``stop``; True when written."""
        decoded = self._decode(messages)
        rows = collapse(outcomes(decoded), self.targets)
        days = self.cfg.operations.audit_retention_days
        entries = audit_entries(decoded, cutoff=retention_cutoff(utcnow(), days))
        pruning = self.schedule.due()
        if not rows and not entries and not pruning:
            return True
        down = False
        while not stop.is_set():
            try:
                done = write_batch(self._connection(), self.cfg.postgres.schema_name, self.targets, rows, entries,
                                   retention_cutoff(utcnow(), days) if pruning else None)
                self.written += done.rows
                self.audited += done.audited
                self.pruned += done.pruned
                if pruning:
                    self.schedule.done()
                    if done.pruned:
                        log.info("audit: %d row(s) older than %d day(s) deleted", done.pruned, days)
                if down:
                    log.info("sync-state columns and audit written again")
                return True
            except psycopg.Error as e:
                self.close()
                if not down:
                    log.warning("sync-state columns / audit not written (retried every %.0f s): SQLSTATE %s %s",
                                self.retry_after, e.sqlstate or "-", type(e).__name__)
                down = True
                stop.wait(self.retry_after)
        return False

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.cfg, APPLICATION_NAME, autocommit=True, connect_timeout=5)
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def run_postgres_sink(cfg: SfsyncConfig, stop: threading.Event, health: Health) -> None:
    """The ``postgres-sink`` role: the sink runner, plus the status follower (sync-state columns, audit) on
    a thread of its own (it stops with the role)."""
    from consumers.postgres.sink import PostgresSink
    from consumers.runner import SinkRunner

    follower = SyncStateFollower(cfg)
    done = threading.Event()

    def follow() -> None:
        while not done.is_set():
            try:
                follower.run(done)
            except Exception:  # the follower must never take the sink down; it starts again
                log.exception("status follower failed; restarting in %.0f s", follower.retry_after)
                done.wait(follower.retry_after)

    thread = threading.Thread(target=follow, name="sync-state", daemon=True)
    thread.start()
    try:
        SinkRunner(cfg, PostgresSink(cfg), health=health).run(stop)
    finally:
        done.set()
        thread.join(30)
