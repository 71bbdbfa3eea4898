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
sfid                the sfid column's value in ``new_values`` when set
changed_fields      ``changed_columns``
values              mapped columns from ``new_values`` (never the key/sfid columns)
commit_ts           ``committed_at``
source_position     ``id`` as text
transaction_key     ``txid`` as text
origin              ``origin``
==================  ===========================================================

Kafka key (:func:`event_key`): ``record_key(object, sfid, local_key)`` — the
``{object}:{sfid}`` form once the row is linked, ``{object}:local:{key}``
before. A record therefore changes key (and possibly partition) once, when
the Salesforce sink writes its new id back; every change made before that
carries the local form, every change after it the sfid form, which is what
the inbound direction uses for the same record. See docs/postgres.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sfsync.coercion import CoercionError, coerce
from sfsync.config import ObjectMapping, SfsyncConfig
from sfsync.records import ChangeEvent, FieldPyValue, Operation, Source, record_key

OPERATIONS: dict[str, Operation] = {
    "insert": Operation.CREATE,
    "update": Operation.UPDATE,
    "delete": Operation.DELETE,
}


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


@dataclass(frozen=True, slots=True)
class TableIndex:
    """table name -> (object name, mapping), built once from the config."""

    by_table: dict[str, tuple[str, ObjectMapping]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: SfsyncConfig) -> TableIndex:
        return cls({obj.table: (name, obj) for name, obj in cfg.objects.items()})


def field_value(raw: Any) -> FieldPyValue:
    """A value decoded from jsonb as a field value.

    Scalars pass through (numbers with a fraction arrive as ``Decimal`` when the
    relay's JSON loader parses them so — exact for ``numeric`` columns); arrays
    and json objects (array / json columns) become their JSON text.
    """
    if raw is None or isinstance(raw, bool | int | float | str | Decimal):
        return raw
    return json.dumps(raw, default=str, separators=(",", ":"))


def _typed(value: FieldPyValue, obj: ObjectMapping, column: str) -> FieldPyValue:
    for f in obj.fields:
        if f.column == column and f.type is not None:
            try:
                return coerce(value, f.type, column)
            except CoercionError:
                return value
    return value


def row_to_event(row: OutboxRow, index: TableIndex) -> ChangeEvent:
    """The change event of one outbox row (see the module table).

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
        sfid = str(raw_sfid) if raw_sfid not in (None, "") else None
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
    )


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
    )
