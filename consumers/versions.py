"""Per-field versions checked at the target: no retry, replay or replica writes an older value over a newer one.

Why versions and not per-record ordering: commands carry only the fields that changed, fail and
retry independently (retry tiers are other topics, read by whichever member owns them), and a
sink can restart or lose its partitions at any moment. Ordering every later command of a record
behind a pending retry would need a durable queue per record that follows the retry through its
tiers; a version per field, kept durably next to the data, needs only a compare. It gives:

- a retry never drops a field it alone carries (its other fields may be older than what was
  written since: only those are dropped);
- a field is never overwritten by an older version, whoever writes it (restart, second replica,
  a retry that reached another member, a record whose key changed from local to sfid form);
- a delete is not undone by an older upsert, and an older delete does not remove a newer record;
- a command already written (its version is stored) is not written again when it is delivered again
  (a replay after a crash): what happened to the record since, a user's change on the target among it,
  stays. A write that failed stored no version, so its retry is written.

A command's version is ``(source commit time in µs, source position)``: the outbox id for changes
from PostgreSQL (one sequence, in commit order per row), the replay id for Salesforce CDC (monotonic
per channel); the commit time orders a catch-up snapshot (position ``catchup:…``) against events.

:func:`screen` and :func:`advance` are the pure rules; :class:`VersionGuard` is the thin adapter
that keeps the versions in PostgreSQL (``<postgres.schema>.sfsync_field_versions``, created by
``sfsync schema init``) and holds the records' rows locked while a batch is written, so two sink
members can never interleave check and write of one record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from consumers.base import CredentialsRefused, SinkUnavailable
from sfsync.config import SfsyncConfig
from sfsync.config.credentials import postgres_credentials_refused, process_source
from sfsync.database.connect import connect
from sfsync.database.schema import VERSIONS_TABLE
from sfsync.failures import Failure
from sfsync.records import ApplyCommand, ApplyOperation, Direction, write_version

Version = tuple[int, int]
#: the version of the record's delete, kept beside its fields' versions
DELETED = "__deleted__"
RecordId = tuple[str, str]


def command_version(command: ApplyCommand) -> Version:
    return write_version(command.source_commit_ts, command.source_position)


def record_id(command: ApplyCommand, direction: Direction) -> RecordId | None:
    """The record's identity that never changes for this sink: its sfid for inbound commands (they come from
    Salesforce), its local key for outbound ones (they come from PostgreSQL). ``None``: not known."""
    key = command.sfid if direction is Direction.INBOUND else command.local_key
    return (command.object, key) if key else None


def screen(command: ApplyCommand, stored: Mapping[str, Version]) -> ApplyCommand | None:
    """The part of ``command`` that is newer than what was written; ``None`` when nothing is left."""
    version = command_version(command)
    if command.operation is ApplyOperation.DELETE:
        newest = max(stored.values(), default=None)
        return command if newest is None or version > newest else None
    deleted = stored.get(DELETED)
    if deleted is not None and version < deleted:
        return None  # an upsert older than the record's delete must not bring it back
    keep = {f: v for f, v in command.values.items() if f not in stored or version > stored[f]}
    if len(keep) == len(command.values):
        return command
    if not keep:
        return None
    return replace(command, values=keep, fields=sorted(keep))


def advance(stored: Mapping[str, Version], written: ApplyCommand) -> dict[str, Version]:
    """The versions after ``written`` (a screened command) was written."""
    version = command_version(written)
    out = dict(stored)
    names = [DELETED] if written.operation is ApplyOperation.DELETE else list(written.values)
    for name in names:
        if name not in out or version > out[name]:
            out[name] = version
    return out



class PostgresRefused(CredentialsRefused):
    """The version store's PostgreSQL refused the login: cause ``credential_failure:postgres``."""

    target = "postgres"

@dataclass
class Screened:
    """A batch after screening: what to write (``None`` = nothing left of that command: superseded)."""

    commands: list[ApplyCommand | None]
    ids: list[RecordId | None]
    stored: dict[RecordId, dict[str, Version]]
    superseded: int = 0

    def to_write(self) -> tuple[list[int], list[ApplyCommand]]:
        """(indexes in the batch, commands) of what the sink must write."""
        kept = [(i, c) for i, c in enumerate(self.commands) if c is not None]
        return [i for i, _ in kept], [c for _, c in kept]

    def record(self, results: list[Failure | None]) -> dict[RecordId, dict[str, Version]]:
        """The new versions of every record whose command was written (``results`` per batch index)."""
        changed: dict[RecordId, dict[str, Version]] = {}
        for command, rid, result in zip(self.commands, self.ids, results, strict=True):
            if command is None or rid is None or result is not None:
                continue
            changed[rid] = advance(changed.get(rid, self.stored.get(rid, {})), command)
        return changed


def screen_batch(batch: list[ApplyCommand], direction: Direction,
                 stored: Mapping[RecordId, Mapping[str, Version]]) -> Screened:
    """Screen each command against the stored versions and the batch's earlier commands (pure)."""
    running: dict[RecordId, dict[str, Version]] = {rid: dict(v) for rid, v in stored.items()}
    out: list[ApplyCommand | None] = []
    ids: list[RecordId | None] = []
    superseded = 0
    for command in batch:
        rid = record_id(command, direction)
        ids.append(rid)
        if rid is None:
            out.append(command)
            continue
        kept = screen(command, running.get(rid, {}))
        if kept is None:
            superseded += 1
        else:
            running[rid] = advance(running.get(rid, {}), kept)
        out.append(kept)
    return Screened(out, ids, {rid: dict(v) for rid, v in stored.items()}, superseded)


class VersionGuard:
    """Keeps field versions in PostgreSQL; :meth:`batch` screens a batch and holds its records locked."""

    def __init__(self, cfg: SfsyncConfig, direction: Direction, connect_timeout: int = 5,
                 retry_after: float = 2.0) -> None:
        self.cfg = cfg
        self.direction = direction
        self.table = sql.Identifier(cfg.postgres.schema_name, VERSIONS_TABLE)
        self.connect_timeout = connect_timeout
        self.retry_after = retry_after
        self._conn: psycopg.Connection | None = None

    @contextmanager
    def batch(self, batch: list[ApplyCommand]) -> Iterator[Screened]:
        """Lock the batch's records, yield the screened batch; the caller saves versions with :meth:`save`
        before the block ends. Any database error raises :class:`SinkUnavailable` (nothing is written)."""
        try:
            conn = self._connection()
            with conn.transaction():
                ids = sorted({rid for c in batch if (rid := record_id(c, self.direction)) is not None})
                stored = self._lock(conn, ids)
                yield screen_batch(batch, self.direction, stored)
        except psycopg.Error as e:
            self.close()
            if postgres_credentials_refused(e.sqlstate, str(e)):
                source = process_source()
                if source is not None and source.renew(self.cfg, "postgres"):
                    raise SinkUnavailable("field version store: credentials renewed, retrying",
                                          retry_after=0.0) from None
                raise PostgresRefused("PostgreSQL refused sfsync's credentials (field version store)",
                                       retry_when=source.changed if source is not None else None) from None
            raise SinkUnavailable(f"field version store unavailable: {type(e).__name__}: {e}".strip(),
                                  retry_after=self.retry_after) from None

    def save(self, versions: Mapping[RecordId, Mapping[str, Version]]) -> None:
        if not versions or self._conn is None:
            return
        rows = [[obj, rec, Jsonb({k: list(v) for k, v in vs.items()})] for (obj, rec), vs in versions.items()]
        with self._conn.cursor() as cur:
            cur.executemany(sql.SQL("UPDATE {t} SET versions = %s WHERE direction = %s AND object = %s "
                                    "AND record = %s").format(t=self.table),
                            [(doc, self.direction.value, obj, rec) for obj, rec, doc in rows])

    def _lock(self, conn: psycopg.Connection, ids: list[RecordId]) -> dict[RecordId, dict[str, Version]]:
        if not ids:
            return {}
        objects, records = [o for o, _ in ids], [r for _, r in ids]
        conn.execute(sql.SQL(
            "INSERT INTO {t} (direction, object, record) SELECT %s, o, r FROM unnest(%s::text[], %s::text[]) "
            "AS x(o, r) ORDER BY o, r ON CONFLICT DO NOTHING").format(t=self.table),
            (self.direction.value, objects, records))
        rows = conn.execute(sql.SQL(
            "SELECT object, record, versions FROM {t} WHERE direction = %s AND (object, record) IN "
            "(SELECT o, r FROM unnest(%s::text[], %s::text[]) AS x(o, r)) ORDER BY object, record FOR UPDATE"
        ).format(t=self.table), (self.direction.value, objects, records)).fetchall()
        return {(o, r): {k: (int(v[0]), int(v[1])) for k, v in doc.items()} for o, r, doc in rows}

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.cfg, "sfsync-versions", autocommit=True, connect_timeout=self.connect_timeout)
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
