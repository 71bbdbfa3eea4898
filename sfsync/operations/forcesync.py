"""``sfsync sync <Object> <id>`` / ``--all``: push a record (or every record) through the pipeline now.

The operator's "Force Sync" after fixing a record: re-read it from its **source** and hand it to the running
pipeline exactly where a change of that side enters it, so the processor decides it like any other change
(mapping, filters, linking, the object's conflict policy) and the sinks write it:

- **from Salesforce** (an sfid, or ``--from salesforce``): the record is read over REST (one describe, one
  query; ``--all``: one query call per page, ``nextRecordsUrl``) and sent to ``changes.inbound`` as a
  ``snapshot`` envelope carrying every mapped field, empty ones included: PostgreSQL gets Salesforce's values;
- **from PostgreSQL** (a local key, or ``--from local``): the row is captured into the outbox exactly as the
  capture trigger writes a change (``update`` listing every outbound column for a linked row, ``insert`` for
  an unlinked one, with the sink's field versions the row holds as ``seen_versions``); the outbox relay sends
  it: Salesforce gets the local values. No Salesforce call.

The side defaults by the id (an sfid: Salesforce; anything else: a local key) and, for ``--all``, by the
object's direction (:func:`default_source`). A side whose fields do not flow to the other side is refused.

Why the operations layer (and not ``producers/``): it is an operator action, called by the CLI and, later,
by the dashboard's "Force Sync" button; the core reaches no role but through ``sfsync/roles.py``. It writes
only where the capture already writes (the inbound topic, the outbox), with core pieces: the Salesforce
client behind the API budget pacer (:class:`~sfsync.salesforce.paced.PacedCalls`), the capture's SQL
shapes, the serde. The envelope is built like the CDC producer's ``snapshot_events`` (SystemModstamp as
commit time, the local key from the link).

Usage errors (:class:`ForceSyncError`, exit 2 in the CLI) name the bad thing: an unmapped object, an id
that matches no record, a Salesforce id of another object, a side the object's mapping does not sync from.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any

from psycopg import sql

from sfsync.config import Direction, ObjectMapping, SfsyncConfig
from sfsync.database.capture import VERSIONS_TABLE, render_notify
from sfsync.database.connect import connect
from sfsync.database.schema import notify_channel
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames
from sfsync.records import FORCE_ORIGIN, ChangeEvent, Operation, Source
from sfsync.salesforce.paced import PacedCalls
from sfsync.salesforce.rest import SalesforceClient
from sfsync.salesforce.soql import soql_string
from sfsync.salesforce.values import SYSTEM_FIELDS, ObjectTypes, canonical_sfid, normalize_sfid, parse_datetime
from sfsync.serde import Serde

ROLE = "force-sync"
APP_NAME = "sfsync-force-sync"
#: local rows captured per transaction by ``--all --from local`` (one outbox insert and one NOTIFY each)
LOCAL_BATCH = 1000
#: ``Sforce-Query-Options: batchSize`` bounds (Salesforce's)
MIN_PAGE, MAX_PAGE = 200, 2000

#: ``progress(advanced, total)``: ``advanced`` more records pushed; ``total`` once known (else ``None``)
Progress = Callable[[int, int | None], None]


class ForceSyncError(Exception):
    """The request names something that is not there (one line saying what): nothing was pushed."""


class SyncSource(StrEnum):
    """The side a force sync reads the record from (its values win the push)."""

    SALESFORCE = "salesforce"
    LOCAL = "local"


@dataclass
class ForceSyncReport:
    """What one ``sfsync sync`` did: records pushed per side, Salesforce API calls made."""

    object: str
    source: SyncSource
    inbound: int = 0  # snapshot envelopes sent to changes.inbound (from Salesforce)
    outbound: int = 0  # outbox rows written (from PostgreSQL)
    api_calls: int = 0
    records: list[str] | None = None  # the single record's sfid / local key (one-record syncs)

    def to_json(self) -> dict[str, Any]:
        return {"object": self.object, "from": self.source.value,
                "pushed": {"salesforce_to_local": self.inbound, "local_to_salesforce": self.outbound},
                "salesforce_calls": self.api_calls, "records": self.records or []}


# ------------------------------------------------------------------ pure decisions


def syncable_sources(mapping: ObjectMapping) -> set[SyncSource]:
    """The sides a push can come from: Salesforce when a field flows to PostgreSQL (``both``/``to_local``),
    PostgreSQL when a field flows to Salesforce (``both``/``to_salesforce``)."""
    out: set[SyncSource] = set()
    for f in mapping.fields:
        if f.direction in (Direction.BOTH, Direction.TO_LOCAL):
            out.add(SyncSource.SALESFORCE)
        if f.direction in (Direction.BOTH, Direction.TO_SALESFORCE):
            out.add(SyncSource.LOCAL)
    return out


def default_source(mapping: ObjectMapping) -> SyncSource:
    """``--all`` without ``--from``: PostgreSQL for an object whose every field is ``to_salesforce``, else
    Salesforce (``both`` objects included: the org is re-read; pass ``--from local`` to push the rows)."""
    return SyncSource.LOCAL if syncable_sources(mapping) == {SyncSource.LOCAL} else SyncSource.SALESFORCE


def check_source(name: str, mapping: ObjectMapping, source: SyncSource) -> None:
    """Refuse a side the mapping syncs nothing from (:class:`ForceSyncError`)."""
    if source not in syncable_sources(mapping):
        where = "to_salesforce" if source is SyncSource.SALESFORCE else "to_local"
        raise ForceSyncError(f"{name}: every mapped field is {where}: nothing flows from "
                             f"{'Salesforce' if source is SyncSource.SALESFORCE else 'PostgreSQL'}")


def as_sfid(value: str) -> str | None:
    """The 18-character Salesforce id ``value`` is, or ``None`` when it is no Salesforce id (15 or 18 letters
    and digits, checksum matching): then it is read as a local key."""
    try:
        return normalize_sfid(value)
    except ValueError:
        return None


def check_prefix(name: str, sfid: str, key_prefix: str | None) -> None:
    """A Salesforce id of another object is refused, naming both prefixes."""
    if key_prefix and sfid[:3] != key_prefix:
        raise ForceSyncError(f"{sfid} is not a {name} id: its prefix is {sfid[:3]}, {name} ids start with "
                             f"{key_prefix}")


def select_soql(name: str, fields: Sequence[str], *, sfid: str | None = None, external: tuple[str, str] | None = None
                ) -> str:
    """The query of one record (by Id, or by ``(external id field, local key)``) or of every record; values
    go through :func:`~sfsync.salesforce.soql.soql_string` (escaped)."""
    soql = f"SELECT {', '.join(fields)} FROM {name}"
    if sfid is not None:
        return f"{soql} WHERE Id = {soql_string(sfid)}"
    if external is not None:
        return f"{soql} WHERE {external[0]} = {soql_string(external[1])}"
    return soql


def read_fields(types: ObjectTypes, mapping: ObjectMapping) -> list[str]:
    """What a force sync reads: system fields, the external id and the mapped fields the describe knows.
    Parent paths (``Owner.Name``) are not read: the CDC producer resolves them with the record's next
    change (docs/runbook.md, "Force sync")."""
    return types.queryable([*SYSTEM_FIELDS, mapping.external_id_field,
                            *(f.field for f in mapping.fields if not f.is_parent_path)])


def snapshot(name: str, mapping: ObjectMapping, types: ObjectTypes, row: Mapping[str, Any], *,
             local_key: str | None, position: str, now: datetime) -> ChangeEvent | None:
    """The ``snapshot`` envelope of one Salesforce record as read over REST: every mapped field (empty ones
    too: the push carries Salesforce's values), commit time its ``SystemModstamp``; the local key of the
    linked row (else the one the external id names). ``None`` for a row without an Id."""
    sfid = canonical_sfid(str(row.get("Id") or "")) or ""
    if not sfid:
        return None
    stamp = row.get("SystemModstamp") or row.get("LastModifiedDate")
    try:
        commit_ts = parse_datetime(stamp) if isinstance(stamp, str) else now
    except ValueError:
        commit_ts = now
    current = types.typed_values(row, skip=("IsDeleted",))
    mapped = {f.field for f in mapping.fields}
    values = {k: v for k, v in current.items() if k in mapped}
    named = current.get(mapping.external_id_field)
    key = local_key or (str(named) if named not in (None, "") else None)
    return ChangeEvent(source=Source.SALESFORCE, object=name, entity=name, operation=Operation.SNAPSHOT,
                       commit_ts=commit_ts, source_position=position, sfid=sfid, local_key=key,
                       changed_fields=sorted(values), values=values, origin=FORCE_ORIGIN)


# ------------------------------------------------------------------ adapters


def _mapping(cfg: SfsyncConfig, name: str) -> ObjectMapping:
    mapping = cfg.objects.get(name)
    if mapping is None:
        raise ForceSyncError(f"unknown object {name!r}; mapped objects: {', '.join(sorted(cfg.objects)) or '(none)'}")
    return mapping


class _Local:
    """The mapped table: lookups between sfid and local key, and capture into the outbox."""

    def __init__(self, cfg: SfsyncConfig, name: str, mapping: ObjectMapping) -> None:
        self.cfg, self.name, self.mapping = cfg, name, mapping
        self.table = sql.Identifier(cfg.postgres.schema_name, mapping.table)
        self.key, self.sfid = sql.Identifier(mapping.local_key), sql.Identifier(mapping.sfid_column)
        self.where = f"{cfg.postgres.schema_name}.{mapping.table}"

    def keys_of(self, sfids: Sequence[str]) -> dict[str, str]:
        """Local key by sfid, for the rows linked to ``sfids``."""
        if not sfids:
            return {}
        query = sql.SQL("SELECT {sfid}::text, {key}::text FROM {t} WHERE {sfid}::text = ANY(%s)").format(
            sfid=self.sfid, key=self.key, t=self.table)
        with connect(self.cfg, APP_NAME, autocommit=True) as conn:
            rows = conn.execute(query, (list(sfids),)).fetchall()
        return {canonical_sfid(s) or s: k for s, k in rows}

    def sfid_of(self, key: str) -> str | None:
        """The sfid of the row with local key ``key`` (``None``: no such row, or not linked)."""
        query = sql.SQL("SELECT {sfid}::text FROM {t} WHERE {key}::text = %s").format(
            sfid=self.sfid, key=self.key, t=self.table)
        with connect(self.cfg, APP_NAME, autocommit=True) as conn:
            row = conn.execute(query, (key,)).fetchone()
        return canonical_sfid(row[0]) if row is not None and row[0] else None

    def has_key(self, key: str) -> bool:
        """Is there a row with local key ``key``?"""
        query = sql.SQL("SELECT 1 FROM {t} WHERE {key}::text = %s").format(key=self.key, t=self.table)
        with connect(self.cfg, APP_NAME, autocommit=True) as conn:
            return conn.execute(query, (key,)).fetchone() is not None

    def all_keys(self) -> list[str]:
        query = sql.SQL("SELECT {key}::text FROM {t} ORDER BY {key}").format(key=self.key, t=self.table)
        with connect(self.cfg, APP_NAME, autocommit=True) as conn:
            return [r[0] for r in conn.execute(query).fetchall()]

    def capture(self, keys: Sequence[str]) -> list[str]:
        """Outbox rows for the rows ``keys``, shaped as the capture trigger writes them (module docstring),
        and the relay's wake-up, in one transaction; the local keys captured."""
        spec_cols = [self.mapping.local_key, self.mapping.sfid_column, *(f.column for f in self.mapping.fields)]
        outbound = [f.column for f in self.mapping.fields if f.direction in (Direction.BOTH, Direction.TO_SALESFORCE)]
        new_row = sql.SQL(" || ").join(
            sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
                sql.SQL("{}, r.{}").format(sql.Literal(c), sql.Identifier(c)) for c in spec_cols[i:i + 50]))
            for i in range(0, len(spec_cols), 50))
        changed = sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.Literal(c) for c in outbound))
        query = sql.SQL(
            """INSERT INTO {outbox} (table_name, local_key, operation, changed_columns, new_values, origin,
                   seen_versions)
SELECT {table}, r.{key}::text, CASE WHEN r.{sfid} IS NULL THEN 'insert' ELSE 'update' END, {changed}, {new_row},
       {origin},
       (SELECT v.versions FROM {versions} v
         WHERE v.direction = 'inbound' AND v.object = {object} AND v.record = r.{sfid}::text)
  FROM {t} r WHERE r.{key}::text = ANY(%s::text[]) ORDER BY r.{key}
RETURNING local_key""").format(
            outbox=sql.Identifier(self.cfg.postgres.schema_name, self.cfg.postgres.outbox_table),
            table=sql.Literal(self.mapping.table), key=self.key, sfid=self.sfid, changed=changed, new_row=new_row,
            versions=sql.Identifier(self.cfg.postgres.schema_name, VERSIONS_TABLE), object=sql.Literal(self.name),
            origin=sql.Literal(FORCE_ORIGIN),
            t=self.table)
        with connect(self.cfg, APP_NAME) as conn, conn.transaction():
            done = [r[0] for r in conn.execute(query, (list(keys),)).fetchall()]
            if done:
                conn.execute(render_notify(notify_channel(self.cfg), self.mapping.table))
        return done


class _Inbound:
    """The run's producer of snapshot envelopes to ``changes.inbound``."""

    def __init__(self, cfg: SfsyncConfig) -> None:
        self.topic = TopicNames(cfg.kafka.topic_prefix).changes_inbound
        self._serde = Serde.from_config(cfg.kafka)
        self._producer = make_producer(cfg.kafka, ROLE)

    def send(self, events: Iterable[ChangeEvent]) -> int:
        n = 0
        for ev in events:
            self._producer.produce(self.topic, self._serde.encode(ev, self.topic), key=ev.key.encode())
            n += 1
        return n

    def flush(self) -> None:
        """Raises (``FlushTimeout``, ``DeliveryError``) when the broker did not take every envelope."""
        self._producer.flush(60)


class _Remote:
    """Salesforce reads of one object through the API budget pacer."""

    def __init__(self, cfg: SfsyncConfig, name: str, mapping: ObjectMapping, client: SalesforceClient) -> None:
        self.name, self.mapping = name, mapping
        self.calls = PacedCalls(client, cfg.salesforce.api_budget_share, wait=False)
        self._describe: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        if self._describe is None:
            self._describe = self.calls(lambda: self.calls.client.describe(self.name))
        return self._describe

    @property
    def types(self) -> ObjectTypes:
        return ObjectTypes.from_describe(self.describe())

    @property
    def key_prefix(self) -> str | None:
        prefix = self.describe().get("keyPrefix")
        return str(prefix) if prefix else None

    def pages(self, soql: str, page_size: int | None = None) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """The query's records page by page (``query``, then ``nextRecordsUrl``), one paced call each, with
        the query's ``totalSize``; ``page_size``: ``Sforce-Query-Options: batchSize`` (Salesforce's default
        2000 without it)."""
        client = self.calls.client
        options: dict[str, Any] = {"timeout": client.cfg.request_timeout_s}
        if page_size is not None:
            options["headers"] = {"Sforce-Query-Options": f"batchSize={page_size}"}
        result: Mapping[str, Any] = self.calls(partial(client.call, partial(_query, soql=soql, options=options)))
        while True:
            yield [dict(r) for r in result.get("records", [])], int(result.get("totalSize") or 0)
            url = result.get("nextRecordsUrl")
            if result.get("done", True) or not url:
                return
            result = self.calls(partial(client.call, partial(_query_more, url=str(url), options=options)))


def _query(sf: Any, soql: str, options: dict[str, Any]) -> Any:
    return sf.query(soql, **options)


def _query_more(sf: Any, url: str, options: dict[str, Any]) -> Any:
    return sf.query_more(url, identifier_is_url=True, **options)


def _envelopes(name: str, mapping: ObjectMapping, types: ObjectTypes, rows: list[dict[str, Any]],
               local: _Local, position: str) -> list[ChangeEvent]:
    keys = local.keys_of([canonical_sfid(str(r.get("Id") or "")) or "" for r in rows])
    now = datetime.now(UTC)
    out: list[ChangeEvent] = []
    for row in rows:
        sfid = canonical_sfid(str(row.get("Id") or "")) or ""
        ev = snapshot(name, mapping, types, row, local_key=keys.get(sfid), position=position, now=now)
        if ev is not None:
            out.append(ev)
    return out


def _position() -> str:
    return f"force-sync:{uuid.uuid4().hex}:{int(time.time() * 1000)}"


def force_sync_record(cfg: SfsyncConfig, name: str, record_id: str, *, source: SyncSource | None = None,
                      client: SalesforceClient | None = None) -> ForceSyncReport:
    """Push one record (an sfid or a local key) from ``source`` (default: the id's side); module docstring.
    Raises :class:`ForceSyncError`, :class:`~sfsync.salesforce.paced.BudgetSpent`, connection errors."""
    mapping = _mapping(cfg, name)
    record_id = record_id.strip()
    if not record_id:
        raise ForceSyncError("the record id is empty: give a Salesforce id or a local key")
    sfid = as_sfid(record_id)
    local = _Local(cfg, name, mapping)
    own = client is None
    remote: _Remote | None = None
    try:
        if sfid is not None:
            client = client or SalesforceClient(cfg.salesforce)
            remote = _Remote(cfg, name, mapping, client)
            try:
                check_prefix(name, sfid, remote.key_prefix)
            except ForceSyncError:
                if not local.has_key(record_id):
                    raise
                sfid = None  # a local key that looks like a Salesforce id
        chosen = source or (SyncSource.SALESFORCE if sfid is not None else SyncSource.LOCAL)
        check_source(name, mapping, chosen)
        report = ForceSyncReport(name, chosen, records=[record_id])
        if chosen is SyncSource.LOCAL:
            key = record_id if sfid is None else _key_of(local, sfid)
            if not local.capture([key]):
                raise ForceSyncError(f"no {name} row with {mapping.local_key} = {key!r} in {local.where}")
            report.outbound = 1
            report.records = [key]
        else:
            client = client or SalesforceClient(cfg.salesforce)
            remote = remote or _Remote(cfg, name, mapping, client)
            fields = read_fields(remote.types, mapping)
            if sfid is not None:
                soql, what = select_soql(name, fields, sfid=sfid), f"Id = {sfid}"
            else:
                linked = local.sfid_of(record_id)
                if linked is not None:
                    soql, what = select_soql(name, fields, sfid=linked), f"Id = {linked} (linked to {record_id!r})"
                else:
                    ext = mapping.external_id_field
                    soql, what = select_soql(name, fields, external=(ext, record_id)), f"{ext} = {record_id!r}"
            rows = [r for page, _total in remote.pages(soql) for r in page]
            if not rows:
                raise ForceSyncError(f"no {name} with {what} in Salesforce")
            if len(rows) > 1:
                raise ForceSyncError(f"{len(rows)} {name} records with {what} in Salesforce; give the Salesforce id")
            out = _Inbound(cfg)
            events = _envelopes(name, mapping, remote.types, rows, local, _position())
            report.inbound = out.send(events)
            out.flush()
            report.records = [e.sfid or "" for e in events]
        report.api_calls = remote.calls.count if remote is not None else 0
        return report
    finally:
        if own and client is not None:
            client.close()


def _key_of(local: _Local, sfid: str) -> str:
    keys = local.keys_of([sfid])
    if sfid not in keys:
        raise ForceSyncError(f"no {local.name} row with {local.mapping.sfid_column} = {sfid} in {local.where}")
    return keys[sfid]


def force_sync_all(cfg: SfsyncConfig, name: str, *, source: SyncSource | None = None,
                   progress: Progress = lambda _n, _t: None, page_size: int | None = None,
                   client: SalesforceClient | None = None) -> ForceSyncReport:
    """Push every record of ``name`` from ``source`` (default :func:`default_source`): every Salesforce record
    as a snapshot, page by page (one describe, one call per page), or every local row into the outbox in
    transactions of :data:`LOCAL_BATCH` rows. ``progress`` is told each page / batch; ``page_size``: records
    per query page (200..2000, Salesforce's default 2000)."""
    if page_size is not None and not MIN_PAGE <= page_size <= MAX_PAGE:
        raise ForceSyncError(f"page size {page_size}: Salesforce pages hold {MIN_PAGE} to {MAX_PAGE} records")
    mapping = _mapping(cfg, name)
    chosen = source or default_source(mapping)
    check_source(name, mapping, chosen)
    report = ForceSyncReport(name, chosen)
    local = _Local(cfg, name, mapping)
    if chosen is SyncSource.LOCAL:
        keys = local.all_keys()
        progress(0, len(keys))
        for start in range(0, len(keys), LOCAL_BATCH):
            chunk = keys[start:start + LOCAL_BATCH]
            report.outbound += len(local.capture(chunk))
            progress(len(chunk), None)
        return report
    own = client is None
    client = client or SalesforceClient(cfg.salesforce)
    try:
        remote = _Remote(cfg, name, mapping, client)
        types = remote.types
        out = _Inbound(cfg)
        position = _position()
        told = False
        for rows, total in remote.pages(select_soql(name, read_fields(types, mapping)), page_size):
            if not told:
                progress(0, total)
                told = True
            report.inbound += out.send(_envelopes(name, mapping, types, rows, local, position))
            progress(len(rows), None)
        out.flush()
        report.api_calls = remote.calls.count
        return report
    finally:
        if own:
            client.close()
