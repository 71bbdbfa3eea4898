"""The audit of losing changes and ambiguous matches (``sfsync audit``): read ``<schema>.sfsync_audit``.

Contract:
- The table is appended by the PostgreSQL sink's status follower (``consumers/postgres/audit.py``): one row
  per Conflict status (a change that lost field(s): both values, the policy, the time, in ``detail``) and
  per Ambiguous status (a first-sync match with several candidates), each once, kept for
  ``operations.audit_retention_days``. Unlike the compacted status topic it keeps every loss of a record,
  not only the latest state.
- :func:`read_audit` returns the rows matching an :class:`AuditFilter`, newest first (by the status's time,
  then insertion order), at most ``limit``. ``record`` matches the Salesforce id, the local key or the
  record key (``Contact:003…`` / ``Contact:local:42``), also where the status carried only the key.
  Read-only, one query, no transaction of its own.
- A schema without the table (``sfsync schema init`` not run since the upgrade) raises :class:`AuditError`
  saying so; any other database error propagates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from sfsync.config import SfsyncConfig
from sfsync.database.connect import connect
from sfsync.database.schema import AUDIT_TABLE

__all__ = ["AuditError", "AuditFilter", "AuditRow", "audit_query", "read_audit"]


class AuditError(Exception):
    """The audit cannot be read (e.g. its table does not exist)."""


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit rows to read; ``None`` / empty: no restriction."""

    object: str | None = None
    record: str | None = None
    since: datetime | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if self.since is not None and (self.since.tzinfo is None or self.since.utcoffset() is None):
            raise ValueError("since must be timezone-aware")


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audit entry."""

    id: int
    recorded_at: datetime
    updated_ts: datetime
    object: str
    direction: str
    record_key: str
    sfid: str | None
    local_key: str | None
    state: str
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.updated_ts.isoformat(), "recorded_at": self.recorded_at.isoformat(),
                "object": self.object, "direction": self.direction, "record_key": self.record_key,
                "sfid": self.sfid, "local_key": self.local_key, "state": self.state, "detail": self.detail}


_COLUMNS = ("id", "recorded_at", "updated_ts", "object", "direction", "record_key", "sfid", "local_key", "state",
            "detail")


def audit_query(schema: str, flt: AuditFilter) -> tuple[sql.Composed, list[Any]]:
    """The ``SELECT`` of :func:`read_audit` and its parameters (pure)."""
    where: list[sql.Composable] = []
    params: list[Any] = []
    if flt.object:
        where.append(sql.SQL("object = %s"))
        params.append(flt.object)
    if flt.record:
        where.append(sql.SQL("(sfid = %s OR local_key = %s OR record_key = %s OR record_key = object || ':' || %s "
                             "OR record_key = object || ':local:' || %s)"))
        params += [flt.record] * 5
    if flt.since is not None:
        where.append(sql.SQL("updated_ts >= %s"))
        params.append(flt.since)
    query = sql.SQL("SELECT {cols} FROM {t}{where} ORDER BY updated_ts DESC, id DESC LIMIT %s").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), t=sql.Identifier(schema, AUDIT_TABLE),
        where=sql.SQL(" WHERE ").join([sql.SQL(""), sql.SQL(" AND ").join(where)]) if where else sql.SQL(""))
    params.append(flt.limit)
    return query, params


def read_audit(cfg: SfsyncConfig, flt: AuditFilter | None = None) -> list[AuditRow]:
    """The audit rows matching ``flt``, newest first (module contract)."""
    flt = flt or AuditFilter()
    query, params = audit_query(cfg.postgres.schema_name, flt)
    with connect(cfg, "sfsync-audit", autocommit=True) as conn:
        try:
            rows = conn.execute(query, params).fetchall()
        except psycopg.errors.UndefinedTable:
            raise AuditError(f"{cfg.postgres.schema_name}.{AUDIT_TABLE} does not exist: run `sfsync schema init` "
                             "(it creates it)") from None
    return [AuditRow(*row) for row in rows]
