"""The audit of losing changes (issue 11): every Conflict and Ambiguous status -> ``<schema>.sfsync_audit``.

Why a table: the status topic is compacted, it keeps a record's *latest* state only, so a record that lost
twice (or lost, then synced) shows one state there once compacted. The table keeps each one.

Contract:

- Written by the status follower of the PostgreSQL sink process
  (:class:`consumers.postgres.syncstate.SyncStateFollower`), in the same transaction as the sync-state
  columns of the same batch, before the batch's offsets are committed: a status is in the table once its
  offset is committed (at least once), and an insert of one already there does nothing (``ON CONFLICT
  (status_key, updated_ts) DO NOTHING``): idempotent under redelivery, replicas and restarts.
- Audited: ``conflict`` (the processor's: the losing field(s), both values, the policy and the time, in
  ``detail`` as the processor wrote them) and ``ambiguous`` (``sfsync backfill``: the candidates). Every
  other state, tombstones and the In Queue keys (``queued:``) are not audit entries.
- Bounded: a status older than ``operations.audit_retention_days`` (by its own ``updated_ts``) is not
  inserted, and rows older than that are deleted at most once an hour (:class:`PruneSchedule`), so a
  re-read of the compacted topic from its beginning never brings back a row retention removed.
- Written as sfsync (``sfsync.origin`` set in the transaction): the table has no capture trigger anyway,
  so nothing becomes an outbound change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from sfsync.database.schema import AUDIT_TABLE
from sfsync.records import QUEUED_PREFIX, RecordStatus, SyncState

#: the states that are audit entries
AUDITED = frozenset({SyncState.CONFLICT, SyncState.AMBIGUOUS})
#: rows past retention are deleted at most this often
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit table, from one status message."""

    status_key: str
    object: str
    direction: str
    record_key: str
    sfid: str | None
    local_key: str | None
    state: str
    detail: str | None
    updated_ts: datetime

    @property
    def identity(self) -> tuple[str, datetime]:
        return self.status_key, self.updated_ts

    def to_json(self) -> dict[str, str | None]:
        return {"status_key": self.status_key, "object": self.object, "direction": self.direction,
                "record_key": self.record_key, "sfid": self.sfid, "local_key": self.local_key,
                "state": self.state, "detail": self.detail, "updated_ts": self.updated_ts.isoformat()}


def is_queued(kafka_key: str | None) -> bool:
    """Is this status message a record's In Queue state (:func:`sfsync.records.queued_status_key`)?"""
    return kafka_key is not None and kafka_key.startswith(QUEUED_PREFIX)


def audit_entries(statuses: Iterable[tuple[str | None, RecordStatus]], *, cutoff: datetime | None = None
                  ) -> list[AuditEntry]:
    """The audit entries of ``(message key, status)`` pairs, in order, each ``(status key, time)`` once;
    ``cutoff``: statuses older than it (past retention) are left out."""
    seen: set[tuple[str, datetime]] = set()
    out: list[AuditEntry] = []
    for kafka_key, status in statuses:
        if status.state not in AUDITED or is_queued(kafka_key):
            continue
        if cutoff is not None and status.updated_ts < cutoff:
            continue
        entry = AuditEntry(
            status_key=kafka_key or status.kafka_key, object=status.object, direction=status.direction.value,
            record_key=status.key, sfid=status.sfid or None, local_key=status.local_key or None,
            state=status.state.value, detail=status.last_error, updated_ts=status.updated_ts)
        if entry.identity not in seen:
            seen.add(entry.identity)
            out.append(entry)
    return out


def insert_statement(schema: str) -> sql.Composed:
    """Insert the entries of the jsonb parameter; one already there (same status key and time) is skipped."""
    return sql.SQL(
        "INSERT INTO {t} (object, direction, record_key, sfid, local_key, state, detail, updated_ts, status_key) "
        "SELECT e ->> 'object', e ->> 'direction', e ->> 'record_key', e ->> 'sfid', e ->> 'local_key', "
        "e ->> 'state', e ->> 'detail', (e ->> 'updated_ts')::timestamptz, e ->> 'status_key' "
        "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS x(e, n) ORDER BY n "
        "ON CONFLICT (status_key, updated_ts) DO NOTHING"
    ).format(t=sql.Identifier(schema, AUDIT_TABLE))


def insert_entries(conn: psycopg.Connection, schema: str, entries: list[AuditEntry]) -> int:
    """Insert ``entries`` on ``conn`` (inside the caller's transaction); the number of new rows."""
    if not entries:
        return 0
    cur = conn.execute(insert_statement(schema), (Jsonb([e.to_json() for e in entries]),))
    return max(cur.rowcount, 0)


def prune(conn: psycopg.Connection, schema: str, cutoff: datetime) -> int:
    """Delete the rows whose status is older than ``cutoff``; the number deleted."""
    cur = conn.execute(sql.SQL("DELETE FROM {} WHERE updated_ts < %s").format(sql.Identifier(schema, AUDIT_TABLE)),
                       (cutoff,))
    return max(cur.rowcount, 0)


def retention_cutoff(now: datetime, days: int) -> datetime:
    """The oldest status time kept."""
    return now - timedelta(days=days)


class PruneSchedule:
    """When the follower deletes expired rows: at its first batch, then at most every ``every_s`` seconds
    (``clock``: monotonic seconds)."""

    def __init__(self, every_s: float = PRUNE_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        return self._last is None or self.clock() - self._last >= self.every_s

    def done(self) -> None:
        self._last = self.clock()
