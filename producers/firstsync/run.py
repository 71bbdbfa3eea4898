"""``sfsync backfill <Object>``: the first sync of two existing datasets, through the running pipeline.

Rows that existed before sfsync's capture trigger, and Salesforce records from before the CDC
subscription, never produced a change: a first sync brings them in. Unlinked records are paired on the
object's ``match_key`` (:mod:`producers.firstsync.matching`) instead of being created twice.

Steps, in this order (each step's writes are idempotent, so running the command again after a crash, or
twice, makes no duplicate):

1. **Read** both sides: every local row (key, sfid, match columns) and every Salesforce record (the mapped
   fields, the external id, the match fields) — one describe and ``ceil(n / 2000)`` query calls. A record is
   already linked when the local row holds its sfid or the Salesforce record holds a local key in the
   external id field. A Salesforce record naming an existing local row whose sfid is empty (a create whose
   link write-back was lost) is re-linked: the sfid is written to the row.
2. **Link** each pair: the local key into the Salesforce record's external id (``PATCH composite/sobjects``,
   200 per call, sfsync-tagged so its CDC echo is recognised), then, for the pairs Salesforce accepted, the
   sfid onto the local row as an sfsync write (no capture). A pair Salesforce refuses stays unlinked and is
   reported with the reason.
3. **Capture** the local side into the outbox, in the same transaction as the links (the relay sends them
   as usual): an ``insert`` row for each local-only row (the pipeline creates it in Salesforce, upserting on
   the external id), an ``update`` row with the non-empty columns for each linked row.
4. **Send** the Salesforce side to ``changes.inbound`` as ``snapshot`` envelopes: every field of each
   Salesforce-only record (the pipeline creates it locally) and the non-empty fields of each linked record,
   only after the links are committed (else the local sink would insert a second row for the sfid).
5. **Report** each ambiguous group: an ``ambiguous`` status per record (``sfsync queue --state ambiguous``)
   listing the candidates; a record that links clears an earlier ``ambiguous`` status.

The processor then decides each linked pair's differing fields by the object's conflict policy, as two
concurrent changes (docs/first-sync.md): empty fields are filled from the other side under every policy.

A crash between steps 3 and 4 leaves linked pairs whose Salesforce values were not sent; the next run sees
them as linked and skips them. Known limit, in docs/first-sync.md.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from psycopg import sql

from producers.firstsync.matching import Ambiguous, Candidate, Plan, plan_first_sync
from producers.salesforce.events import query_fields, snapshot_events
from sfsync.config import ObjectMapping, SfsyncConfig
from sfsync.database.capture import ORIGIN_MARKER, ORIGIN_SETTING, capture_spec, render_backfill_capture, render_notify
from sfsync.database.connect import connect
from sfsync.database.schema import notify_channel
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames
from sfsync.records import ChangeEvent, Direction, RecordStatus, SyncState, record_key, status_key
from sfsync.salesforce.paced import BudgetSpent, PacedCalls
from sfsync.salesforce.rest import SalesforceClient
from sfsync.salesforce.values import ObjectTypes, canonical_sfid
from sfsync.serde import Serde

log = logging.getLogger("sfsync.firstsync")

ROLE = "backfill"
#: records per ``PATCH composite/sobjects`` (the API's limit)
PER_CALL = 200
CHANNEL = "backfill"

Progress = Callable[[str, int, int], None]


class BackfillError(Exception):
    """The first sync cannot go on (the message says why and what was already done)."""


@dataclass
class BackfillReport:
    """What one run found and did."""

    object: str
    plan: Plan
    already_linked_local: int = 0
    already_linked_salesforce: int = 0
    relinked: int = 0
    linked: int = 0
    refused: list[str] = field(default_factory=list)
    created_in_salesforce: int = 0
    created_locally: int = 0
    calls: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "object": self.object, "dry_run": self.dry_run, "plan": self.plan.counts(),
            "already_linked": {"local": self.already_linked_local, "salesforce": self.already_linked_salesforce},
            "relinked": self.relinked, "linked": self.linked, "refused": self.refused,
            "queued_creates": {"salesforce": self.created_in_salesforce, "local": self.created_locally},
            "salesforce_calls": self.calls,
            "ambiguous": [{"match": list(a.match), "local_keys": list(a.local_keys), "sfids": list(a.sfids)}
                          for a in self.plan.ambiguous],
        }


@dataclass(frozen=True, slots=True)
class _Sides:
    """What step 1 read: candidates per side, and what the sends of steps 3-4 need."""

    local: list[Candidate]
    remote: list[Candidate]
    rows: dict[str, dict[str, Any]]  # Salesforce records by Id
    relinks: list[tuple[str, str]]  # (local key, sfid) named by the external id, row without sfid
    linked_local: int
    linked_remote: int


def _soql_fields(types: ObjectTypes, mapping: ObjectMapping) -> list[str]:
    fields = query_fields(types, mapping)
    for key in mapping.match_key or ():
        if key.field not in fields:
            fields.append(key.field)
    return fields


def _read(cfg: SfsyncConfig, name: str, mapping: ObjectMapping, calls: PacedCalls) -> tuple[_Sides, ObjectTypes]:
    types = ObjectTypes.from_describe(calls(lambda: calls.client.describe(name)))
    soql = f"SELECT {', '.join(_soql_fields(types, mapping))} FROM {name}"
    records = calls(lambda: calls.client.query_records(soql))
    keys = mapping.match_key or []
    match_cols = [sql.Identifier(k.column) for k in keys]
    query = sql.SQL("SELECT {key}::text, {sfid}::text{more} FROM {t}").format(
        key=sql.Identifier(mapping.local_key), sfid=sql.Identifier(mapping.sfid_column),
        more=sql.SQL("").join(sql.SQL(", {}").format(c) for c in match_cols),
        t=sql.Identifier(cfg.postgres.schema_name, mapping.table))
    with connect(cfg, "sfsync-backfill", autocommit=True) as conn:
        local_rows = conn.execute(query).fetchall()
    local_sfids = {canonical_sfid(r[1]) or r[1] for r in local_rows if r[1]}
    unlinked_local = {r[0]: r for r in local_rows if not r[1]}
    ext = mapping.external_id_field
    rows: dict[str, dict[str, Any]] = {}
    remote: list[Candidate] = []
    relinks: list[tuple[str, str]] = []
    linked_remote = 0
    for rec in records:
        sfid = canonical_sfid(str(rec.get("Id") or "")) or ""
        if not sfid:
            continue
        rows[sfid] = rec
        named = rec.get(ext)
        if sfid in local_sfids:
            linked_remote += 1
        elif named not in (None, ""):
            if str(named) in unlinked_local:
                relinks.append((str(named), sfid))
            linked_remote += 1  # names a local key: linked from Salesforce's side
        else:
            remote.append(Candidate(sfid, tuple(rec.get(k.field) for k in keys)))
    relinked = {key for key, _ in relinks}
    local = [Candidate(key, tuple(r[2:])) for key, r in sorted(unlinked_local.items()) if key not in relinked]
    return _Sides(local, remote, rows, relinks, len(local_rows) - len(unlinked_local), linked_remote), types


def _write_external_ids(name: str, mapping: ObjectMapping, links: list[tuple[str, str]], calls: PacedCalls,
                        report: BackfillReport) -> list[tuple[str, str]]:
    """Step 2a: the local key into each Salesforce record's external id; the pairs Salesforce took."""
    accepted: list[tuple[str, str]] = []
    for start in range(0, len(links), PER_CALL):
        chunk = links[start:start + PER_CALL]
        body = {"allOrNone": False, "records": [
            {"attributes": {"type": name}, "id": sfid, mapping.external_id_field: key} for key, sfid in chunk]}
        answers: list[dict[str, Any]] = calls(partial(calls.client.restful, "composite/sobjects", "PATCH", json=body))
        for (key, sfid), answer in zip(chunk, answers or [], strict=False):
            if answer.get("success"):
                accepted.append((key, sfid))
            else:
                errors = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in answer.get("errors", []))
                report.refused.append(f"local {key} / {sfid}: {errors or 'refused'}")
        if len(answers or []) < len(chunk):
            for key, sfid in chunk[len(answers or []):]:
                report.refused.append(f"local {key} / {sfid}: no answer from Salesforce")
    return accepted


def _link_and_capture(cfg: SfsyncConfig, mapping: ObjectMapping, name: str, pairs: list[tuple[str, str]],
                      local_only: list[str]) -> set[str]:
    """Steps 2b and 3 in one transaction: sfids onto the rows (as an sfsync write), outbox rows for the linked
    and the local-only rows; the local keys that were linked."""
    t = sql.Identifier(cfg.postgres.schema_name, mapping.table)
    key, sfid = sql.Identifier(mapping.local_key), sql.Identifier(mapping.sfid_column)
    spec = capture_spec(cfg.postgres.schema_name, mapping, object_name=name)
    with connect(cfg, "sfsync-backfill") as conn, conn.transaction():
        conn.execute("SELECT set_config(%s, %s, true)", (ORIGIN_SETTING, ORIGIN_MARKER))
        linked: set[str] = set()
        if pairs:
            done = conn.execute(sql.SQL(
                "UPDATE {t} AS r SET {sfid} = v.sfid FROM unnest(%s::text[], %s::text[]) AS v(k, sfid) "
                "WHERE r.{key}::text = v.k AND r.{sfid} IS NULL RETURNING r.{key}::text").format(
                    t=t, sfid=sfid, key=key), ([k for k, _ in pairs], [s for _, s in pairs])).fetchall()
            linked = {r[0] for r in done}
        outbox = cfg.postgres.outbox_table
        if linked:
            conn.execute(render_backfill_capture(spec, outbox, linked=True), {"keys": sorted(linked)})
        if local_only:
            conn.execute(render_backfill_capture(spec, outbox, linked=False), {"keys": local_only})
        if linked or local_only:
            conn.execute(render_notify(notify_channel(cfg), mapping.table))
    return linked


def _only(event: ChangeEvent, fields: set[str], *, non_empty: bool, local_key: str | None = None) -> ChangeEvent:
    """The envelope with only the mapped ``fields`` (and, with ``non_empty``, only those holding a value)."""
    values = {k: v for k, v in event.values.items() if k in fields and not (non_empty and v in (None, ""))}
    return replace(event, values=values, changed_fields=sorted(values), local_key=local_key or event.local_key)


class _Out:
    """The run's one producer and serde: change envelopes and statuses (``None``: a tombstone)."""

    def __init__(self, cfg: SfsyncConfig) -> None:
        self.names = TopicNames(cfg.kafka.topic_prefix)
        self._serde = Serde.from_config(cfg.kafka)
        self._producer = make_producer(cfg.kafka, ROLE)

    def send(self, topic: str, key: str, record: ChangeEvent | RecordStatus | None) -> None:
        value = None if record is None else self._serde.encode(record, topic)
        self._producer.produce(topic, value, key=key.encode())

    def flush(self) -> None:
        """Raises (``FlushTimeout``, ``DeliveryError``) when the broker did not take every message: the
        backfill can be run again (its writes are idempotent)."""
        self._producer.flush(60)


def _send_snapshots(out: _Out, name: str, mapping: ObjectMapping, types: ObjectTypes, sides: _Sides,
                    linked: dict[str, str], salesforce_only: list[str], run_id: str) -> int:
    """Step 4: ``snapshot`` envelopes of the linked (non-empty fields, with their local key) and the
    Salesforce-only records; the number sent."""
    position = f"backfill:{run_id}"
    now_ms = int(time.time() * 1000)
    mapped = {f.field for f in mapping.fields}
    events: list[ChangeEvent] = []
    by_sfid = {sfid: key for key, sfid in linked.items()}
    wanted = [*sorted(by_sfid), *salesforce_only]
    for ev in snapshot_events(name, [sides.rows[s] for s in wanted], types, channel=CHANNEL, position=position,
                              fallback_ms=now_ms, external_id_field=mapping.external_id_field):
        if ev.sfid in by_sfid:
            events.append(_only(ev, mapped, non_empty=True, local_key=by_sfid[ev.sfid]))
        else:
            events.append(_only(ev, mapped, non_empty=False))
    for ev in events:
        out.send(out.names.changes_inbound, ev.key, ev)
    out.flush()
    return len(events)


def _statuses(out: _Out, name: str, mapping: ObjectMapping, ambiguous: list[Ambiguous],
              linked_local: Iterable[str]) -> None:
    """Step 5: an ``ambiguous`` status per candidate of each group (both directions' views: the local rows'
    outbound, the Salesforce records' inbound); tombstones for earlier ones of rows that are linked now."""
    fields = [k.field for k in mapping.match_key or ()]
    now = datetime.now(UTC)
    for group in ambiguous:
        detail = group.describe(fields)
        for key in group.local_keys:
            status = RecordStatus(key=record_key(name, local_key=key), object=name,
                                  direction=Direction.OUTBOUND, state=SyncState.AMBIGUOUS, local_key=key,
                                  last_error=detail, last_attempt_ts=now)
            out.send(out.names.status, status.kafka_key, status)
        for sfid in group.sfids:
            status = RecordStatus(key=record_key(name, sfid=sfid), object=name, direction=Direction.INBOUND,
                                  state=SyncState.AMBIGUOUS, sfid=sfid, last_error=detail, last_attempt_ts=now)
            out.send(out.names.status, status.kafka_key, status)
    for key in linked_local:
        out.send(out.names.status, status_key(Direction.OUTBOUND, record_key(name, local_key=key)), None)
    out.flush()


def backfill(cfg: SfsyncConfig, name: str, *, dry_run: bool = False,
             client: SalesforceClient | None = None) -> BackfillReport:
    """Run the first sync of object ``name`` (see the module docstring); raises :class:`BackfillError`."""
    mapping = cfg.objects.get(name)
    if mapping is None:
        raise BackfillError(f"{name} is not a mapped object (mapped: {', '.join(sorted(cfg.objects)) or 'none'})")
    own = client is None
    client = client or SalesforceClient(cfg.salesforce)
    calls = PacedCalls(client, cfg.salesforce.api_budget_share, wait=False)
    try:
        sides, types = _read(cfg, name, mapping, calls)
        plan = plan_first_sync(sides.local, sides.remote)
        report = BackfillReport(name, plan, sides.linked_local, sides.linked_remote, dry_run=dry_run)
        if dry_run:
            report.relinked = len(sides.relinks)
            report.calls = calls.count
            return report
        accepted = _write_external_ids(name, mapping, [(x.local_key, x.sfid) for x in plan.links], calls, report)
        pairs = [*sides.relinks, *accepted]
        linked_keys = _link_and_capture(cfg, mapping, name, pairs, plan.local_only)
        linked = {k: s for k, s in pairs if k in linked_keys}
        for key, sfid in pairs:
            if key not in linked_keys:
                report.refused.append(f"local {key} / {sfid}: the row is gone or was linked meanwhile; not linked")
        report.relinked = sum(1 for k, _ in sides.relinks if k in linked_keys)
        report.linked = len(linked) - report.relinked
        report.created_in_salesforce = len(plan.local_only)
        report.created_locally = len(plan.salesforce_only)
        out = _Out(cfg)
        _send_snapshots(out, name, mapping, types, sides, linked, plan.salesforce_only, uuid.uuid4().hex)
        _statuses(out, name, mapping, plan.ambiguous, linked_keys)
        report.calls = calls.count
        log.info("backfill %s: %s", name, report.to_json())
        return report
    except BudgetSpent as e:
        raise BackfillError(f"{e}; run the backfill again later") from None
    finally:
        if own:
            client.close()


