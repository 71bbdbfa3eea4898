"""Outbox rows -> change events. Pure functions, no I/O.

An outbox row (written by the capture trigger, see :mod:`sfsync.database.capture`)
becomes one :class:`~sfsync.records.ChangeEvent`:

==================  ===========================================================
ChangeEvent         from the outbox row
==================  ===========================================================
source              ``postgres``
object              the mapped object of ``table_name`` (the table name itself
                    when the relay's config does not map it: lossless, the
                    processor maps by ``entity`` or skips it)
entity              ``table_name``
operation           insert -> create, update -> update, delete -> delete
local_key           ``local_key`` (the row's key as text)
sfid                the sfid column's value in ``new_values`` when set, in its
                    18-character form (a user may have stored the 15-character
                    one; a value that is no Salesforce id is kept as it is, and
                    Salesforce refuses it with MALFORMED_ID)
changed_fields      ``changed_columns``
values              mapped columns from ``new_values`` (never the key/sfid columns)
commit_ts           ``committed_at``
source_position     ``id`` as text
transaction_key     ``txid`` as text
origin              ``origin``
event_id            :func:`outbox_event_id`: UUIDv5 of the outbox's identity
                    (database, table, table oid) and ``id``: the same row gets
                    the same id however often, by whichever relay, it is sent
==================  ===========================================================

:func:`prepare_row` is the relay's decision per row: a message ready to send
(:class:`Prepared`) or a permanent refusal (:class:`Refused`: no record key,
not convertible, not encodable, over the message limit) that the relay
dead-letters with :func:`row_dead_letter` instead of blocking the outbox.

:func:`queued_status` is the record's **In Queue** state the relay writes with
each change it sends (under ``queued_status_key``, :mod:`sfsync.records`);
``None`` for a row of a table the relay's config does not map (its key is not
the record's key the sinks write the outcome under).

Kafka key (:func:`event_key`): ``record_key(object, sfid, local_key)`` — the
``{object}:{sfid}`` form once the row is linked, ``{object}:local:{key}``
before. A record therefore changes key (and possibly partition) once, when
the Salesforce sink writes its new id back; every change made before that
carries the local form, every change after it the sfid form, which is what
the inbound direction uses for the same record. See docs/postgres.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from producers.deadletters import SIZE_ERROR, DeadLetter, build_dead_letter, message_size, too_large
from sfsync.coercion import CoercionError, coerce
from sfsync.config import ObjectMapping, SfsyncConfig
from sfsync.failures import Failure, FailureKind, Origin
from sfsync.records import (
    ChangeEvent,
    Direction,
    FieldPyValue,
    Operation,
    RecordStatus,
    Source,
    SyncState,
    record_key,
)
from sfsync.salesforce.values import canonical_sfid, dumps_exact
from sfsync.serde import EncodeError, Serde

OPERATIONS: dict[str, Operation] = {
    "insert": Operation.CREATE,
    "update": Operation.UPDATE,
    "delete": Operation.DELETE,
}


STAGE = "postgres-producer"
_EVENT_NS = uuid.UUID("4f1d2c8e-95a3-4a51-b0d4-0c6e3f7a9b21")
#: Longest key quoted in an error message, and kept in a dead letter's identity (the row keeps it whole).
_KEY_QUOTE = 200
_KEY_KEPT = 1000


def outbox_source(database: str, schema: str, table: str, oid: int) -> str:
    """The identity of one outbox: database, qualified table name and the table's oid.

    A physical fail-over keeps all of them (the standby is a copy), so a row re-sent by the new primary's
    relay keeps its event id; an outbox dropped and created again restarts its ids but gets a new oid, so
    no event id is ever reused for another change.
    """
    return f"{database}/{schema}.{table}#{oid}"


def outbox_event_id(source: str, outbox_id: int) -> str:
    """The event id of outbox row ``outbox_id`` of the outbox ``source`` (:func:`outbox_source`): a UUIDv5,
    deterministic, so downstream de-duplication (and the command ids derived from it) sees a re-sent row
    as the same change."""
    return str(uuid.uuid5(_EVENT_NS, f"{source}|{outbox_id}"))


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One row of the outbox table, as read by the relay."""

    id: int
    table_name: str
    local_key: str | None
    operation: str
    changed_columns: list[str]
    new_values: dict[str, Any]
    txid: int
    committed_at: datetime
    origin: str | None = None
    seen_versions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TableIndex:
    """table name -> (object name, mapping), built once from the config."""

    by_table: dict[str, tuple[str, ObjectMapping]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: SfsyncConfig) -> TableIndex:
        return cls({obj.table: (name, obj) for name, obj in cfg.objects.items()})


def field_value(raw: Any) -> FieldPyValue:
    """A value decoded from jsonb as a field value.

    Scalars pass through: numbers with a fraction arrive as ``Decimal`` (the
    relay's JSON loader parses them so) and integers as ``int``, both exact for
    ``numeric`` columns of any size; arrays and json objects (array / json
    columns) become their JSON text.
    """
    if raw is None or isinstance(raw, bool | int | float | str | Decimal):
        return raw
    return dumps_exact(raw, separators=(",", ":"), allow_nan=True)


def _typed(value: FieldPyValue, obj: ObjectMapping, column: str) -> FieldPyValue:
    for f in obj.fields:
        if f.column == column and f.type is not None:
            try:
                return coerce(value, f.type, column)
            except CoercionError:
                return value
    return value


def row_to_event(row: OutboxRow, index: TableIndex, source: str = "") -> ChangeEvent:
    """The change event of one outbox row (see the module table); ``source`` is the outbox's identity
    (:func:`outbox_source`) its event id is derived from.

    Raises ``ValueError`` for an operation the trigger never writes.
    """
    operation = OPERATIONS.get(row.operation)
    if operation is None:
        raise ValueError(f"outbox row {row.id}: unknown operation {row.operation!r}")
    found = index.by_table.get(row.table_name)
    values: dict[str, FieldPyValue] = {}
    sfid: str | None = None
    if found is None:
        object_name = row.table_name
        if operation is not Operation.DELETE:
            values = {k: field_value(v) for k, v in row.new_values.items()}
    else:
        object_name, obj = found
        raw_sfid = row.new_values.get(obj.sfid_column)
        sfid = canonical_sfid(str(raw_sfid)) if raw_sfid not in (None, "") else None
        if operation is not Operation.DELETE:
            for f in obj.fields:
                if f.column in row.new_values:
                    values[f.column] = _typed(field_value(row.new_values[f.column]), obj, f.column)
    return ChangeEvent(
        source=Source.POSTGRES,
        object=object_name,
        entity=row.table_name,
        operation=operation,
        local_key=row.local_key,
        sfid=sfid,
        changed_fields=list(row.changed_columns),
        values=values,
        commit_ts=row.committed_at,
        source_position=str(row.id),
        transaction_key=str(row.txid),
        origin=row.origin,
        event_id=outbox_event_id(source, row.id),
        seen_versions=seen_versions(row.seen_versions),
    )


def seen_versions(stored: Mapping[str, Any]) -> dict[str, str]:
    """The version store's ``{column: [µs, position]}`` as the event's ``{column: "µs:position"}``."""
    out: dict[str, str] = {}
    for column, version in stored.items():
        if isinstance(version, list) and len(version) == 2:
            out[column] = f"{int(version[0])}:{int(version[1])}"
    return out


def event_key(event: ChangeEvent) -> str:
    """The Kafka message key of an outbound event: ``record_key(object, sfid, local_key)``."""
    return record_key(event.object, event.sfid, event.local_key)


def row_from_db(values: Mapping[str, Any]) -> OutboxRow:
    """An :class:`OutboxRow` from a dict row of the outbox (column name -> value)."""
    return OutboxRow(
        id=int(values["id"]),
        table_name=str(values["table_name"]),
        local_key=values["local_key"],
        operation=str(values["operation"]),
        changed_columns=list(values["changed_columns"] or []),
        new_values=dict(values["new_values"] or {}),
        txid=int(values["txid"]),
        committed_at=values["committed_at"],
        origin=values["origin"],
        seen_versions=dict(values.get("seen_versions") or {}),
    )


# --------------------------------------------------------------------------- one row's fate


@dataclass(frozen=True, slots=True)
class Prepared:
    """An outbox row as the message the relay sends: Kafka key and encoded envelope; ``mapped``: the relay's
    config maps its table (``object`` is then the mapped object, else the table name)."""

    row: OutboxRow
    object: str
    key: str
    value: bytes
    sfid: str | None = None
    local_key: str | None = None
    mapped: bool = True


@dataclass(frozen=True, slots=True)
class Refused:
    """An outbox row that can never be sent as it is (a permanent failure): it goes to the DLQ.

    ``error_class``: ``MissingRecordKey``, ``InvalidOutboxRow``, ``EncodeError`` or ``MSG_SIZE_TOO_LARGE``;
    ``reason`` names table, outbox id, key and (for size) size vs limit; ``key`` is the record key when known.
    """

    row: OutboxRow
    object: str
    key: str | None
    error_class: str
    reason: str
    size: int | None = None
    limit: int | None = None


def describe_row(row: OutboxRow, key: str | None = None) -> str:
    """``outbox row 12 of table contacts`` (``(key Contact:local:7)`` when known): how errors name a row."""
    text = f"outbox row {row.id} of table {row.table_name}"
    return f"{text} (key {key[:_KEY_QUOTE]})" if key else text


def _object_of(row: OutboxRow, index: TableIndex) -> str:
    found = index.by_table.get(row.table_name)
    return found[0] if found is not None else row.table_name


def refuse_for_size(prepared: Prepared, size: int, limit: int | None, by: str = "") -> Refused:
    """The refusal of a prepared message that is too large (``limit`` ``None``: a lower limit of the broker's)."""
    what = too_large(size, limit) if limit is not None else f"the broker refused the {size}-byte message for its size"
    return Refused(prepared.row, prepared.object, prepared.key, SIZE_ERROR,
                   f"{describe_row(prepared.row, prepared.key)}: {what}{by}: its values are not in this dead letter, "
                   "which holds what identifies the row (re-save the row once it is smaller, or raise the limit)",
                   size, limit)


def prepare_row(row: OutboxRow, index: TableIndex, serde: Serde, topic: str, source: str, limit: int,
                header_bytes: int = 0) -> Prepared | Refused:
    """The fate of one outbox row: the message to send, or why it can never be sent.

    Refused (permanently): an operation the trigger never writes or values that make no envelope
    (``InvalidOutboxRow``), no record key — ``local_key`` NULL or empty and no sfid (``MissingRecordKey``),
    an envelope the serde cannot encode (``EncodeError``), a message over ``limit`` bytes counting key,
    value and ``header_bytes`` (``MSG_SIZE_TOO_LARGE``). A Schema Registry outage is not a refusal: its
    ``RegistryError`` propagates (retry later).
    """
    object_name = _object_of(row, index)
    try:
        event = row_to_event(row, index, source)
    except (ValueError, TypeError) as e:
        return Refused(row, object_name, None, "InvalidOutboxRow",
                       f"{describe_row(row)} makes no change event: {e}"[:1000])
    try:
        key = event_key(event)
    except ValueError:
        state = "NULL" if row.local_key is None else "empty"
        return Refused(row, object_name, None, "MissingRecordKey",
                       f"{describe_row(row)} has no key: local_key is {state} and the row has no sfid, so the "
                       "change cannot be keyed (is the table's key column nullable?)")
    try:
        value = serde.encode(event, topic)
    except EncodeError as e:
        return Refused(row, object_name, key, "EncodeError", f"{describe_row(row, key)} cannot be encoded: {e}"[:1000])
    prepared = Prepared(row, object_name, key, value, event.sfid, event.local_key,
                        row.table_name in index.by_table)
    size = message_size(key, value) + header_bytes
    if size > limit:
        return refuse_for_size(prepared, size, limit)
    return prepared


def queued_status(prepared: Prepared, now: datetime) -> RecordStatus | None:
    """The **In Queue** state of the record of a change the relay sends (``now``: when it was captured, for
    readers to order it against the record's outcome); ``None`` for an unmapped table's row (module doc)."""
    if not prepared.mapped:
        return None
    return RecordStatus(key=prepared.key, object=prepared.object, direction=Direction.OUTBOUND,
                        state=SyncState.IN_QUEUE, sfid=prepared.sfid, local_key=prepared.local_key,
                        last_attempt_ts=None, updated_ts=now)


def row_dead_letter(refused: Refused, *, dlq: str, outbox: str, source: str, limit: int) -> DeadLetter:
    """The dead letter of a refused row (see :mod:`producers.deadletters`): the row's identity as JSON
    (outbox id, table, object, key, operation, changed columns, txid, commit time, origin, and for a size
    failure size and limit) plus its ``new_values`` when they fit and size was not the problem. Origin:
    ``outbox`` (``schema.table``), partition -1, offset = the outbox id."""
    row = refused.row
    document: dict[str, Any] = {
        "outbox_id": row.id, "table": row.table_name, "object": refused.object,
        "local_key": row.local_key[:_KEY_KEPT] if row.local_key else row.local_key,
        "record_key": refused.key[:_KEY_KEPT] if refused.key else None,
        "operation": row.operation, "changed_columns": row.changed_columns, "txid": row.txid,
        "committed_at": row.committed_at.isoformat(), "origin": row.origin, "error_class": refused.error_class,
    }
    if refused.size is not None:
        document["size"] = refused.size
        document["limit"] = refused.limit
    details = {"outbox_id": str(row.id), "table": row.table_name}
    if refused.key:
        details["key"] = refused.key[:_KEY_QUOTE]
    return build_dead_letter(
        topic=dlq, key=refused.key[:_KEY_KEPT] if refused.key else None,
        failure=Failure(FailureKind.PERMANENT, refused.error_class, refused.reason), stage=STAGE,
        origin=Origin(outbox, -1, row.id), document=document, bulky=("new_values", row.new_values),
        limit=limit, alert_identity=f"{source}|{row.id}", alert_object=refused.object, alert_details=details,
    )
