"""Mapping a captured change to the command a sink executes. Pure functions, no I/O.

Contract of :func:`map_inbound` / :func:`map_outbound`: given one
:class:`~sfsync.records.ChangeEvent` and the config, return exactly one of

- :class:`Mapped` — an :class:`~sfsync.records.ApplyCommand` for the other side;
- :class:`Skipped` — nothing to do (unknown object, only unmapped fields, an
  echo of sfsync's own write, a delete the policy ignores); counted, not an error;
  its subclass :class:`Filtered` — the object's record filters keep the record
  out (``rule`` names the config key, e.g. ``objects.Contact.filters.exclude_domains``);
- :class:`Failed` — the record cannot be mapped (a value that cannot be
  coerced); it goes to the DLQ with ``reason``, and the stream goes on.

What then goes where — per field, against the record's state of both
directions — is :mod:`processors.conflicts`' decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sfsync.coercion import CoercionError, apply_transforms, coerce
from sfsync.config import (
    DeletePolicy,
    Direction,
    FieldMapping,
    ObjectMapping,
    SfsyncConfig,
)
from sfsync.filters import Verdict, compile_filter, screen
from sfsync.records import (
    ApplyCommand,
    ApplyOperation,
    ApplyTarget,
    ChangeEvent,
    FieldPyValue,
    Operation,
)
from sfsync.salesforce.values import is_own_origin

TO_LOCAL = (Direction.BOTH, Direction.TO_LOCAL)
TO_SALESFORCE = (Direction.BOTH, Direction.TO_SALESFORCE)


@dataclass(frozen=True, slots=True)
class Mapped:
    """``echo``: the change is sfsync's own write coming back (its origin); with ``keep_echo`` its two-way
    fields are kept, for the conflict decision to compare by value."""

    command: ApplyCommand
    unmapped_fields: list[str] = field(default_factory=list)
    echo: bool = False


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


@dataclass(frozen=True, slots=True)
class Filtered(Skipped):
    """A record the object's filters keep out (a :class:`Skipped`, so a caller that knows only that counts
    it as skipped); ``rule`` is the config key that decided."""

    rule: str


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


MapResult = Mapped | Skipped | Failed


def _reverse(value_map: Mapping[str, str]) -> dict[str, str]:
    return {remote: local for local, remote in value_map.items()}


def to_local_value(value: FieldPyValue, f: FieldMapping) -> FieldPyValue:
    """A Salesforce value as the local column wants it: reverse value map, transforms, type."""
    if isinstance(value, str) and f.value_map:
        value = _reverse(f.value_map).get(value, value)
    value = apply_transforms(value, f.transforms)
    return coerce(value, f.type, f"{f.field} -> {f.column}")


def to_salesforce_value(value: FieldPyValue, f: FieldMapping) -> FieldPyValue:
    """A local value as Salesforce wants it: transforms, value map. Types are JSON-native."""
    value = apply_transforms(value, f.transforms)
    if isinstance(value, str) and f.value_map:
        value = f.value_map.get(value, value)
    return value


def _object_for_table(cfg: SfsyncConfig, table: str) -> tuple[str, ObjectMapping] | None:
    for name, obj in cfg.objects.items():
        if obj.table == table:
            return name, obj
    return None


def _base_command(event: ChangeEvent, target: ApplyTarget, operation: ApplyOperation, **kw: Any) -> dict[str, Any]:
    return {
        "target": target,
        "object": event.object,
        "operation": operation,
        "source": event.source,
        "source_event_id": event.event_id,
        "source_commit_ts": event.commit_ts,
        "source_position": event.source_position,
        "sfid": event.sfid,
        "local_key": event.local_key,
        "origin": event.origin,
        "trace_id": event.trace_id,
        # Deterministic: a change redelivered after a crash yields the same command id.
        "command_id": f"{event.event_id}/{target.value}",
        **kw,
    }


def _screen(name: str, mapping: ObjectMapping, event: ChangeEvent, inbound: bool,
            local_key: str | None) -> Filtered | None:
    """The :class:`Filtered` result when ``mapping.filters`` keep this record out (deletes: by id only)."""
    flt = mapping.filters
    if flt.empty:
        return None
    email = flt.email_key(mapping)
    sfid = event.sfid or (None if inbound else _text(event.values.get(mapping.sfid_column)))
    if event.operation is Operation.DELETE:
        verdict: Verdict | None = screen(None, "", flt.exclusions, {}, None, (sfid, local_key))
    else:
        values: Mapping[str, FieldPyValue] = event.values
        if inbound and flt.to_local and event.operation in (Operation.CREATE, Operation.UNDELETE):
            # a create or undelete event carries every field that has a value: one it does not carry is null
            values = {**dict.fromkeys(compile_filter(flt.to_local).names), **event.values}
        verdict = screen(flt.to_local if inbound else flt.to_salesforce, "to_local" if inbound else "to_salesforce",
                         flt.exclusions, values,
                         None if email is None else email.field if inbound else email.column, (sfid, local_key))
    return None if verdict is None else Filtered(f"{name}: {verdict.reason}", f"objects.{name}.{verdict.rule}")


def _text(value: FieldPyValue) -> str | None:
    return None if value is None else str(value)


def map_inbound(event: ChangeEvent, cfg: SfsyncConfig, keep_echo: bool = False) -> MapResult:
    """A Salesforce change -> a command for the PostgreSQL sink.

    An echo of sfsync's own write (its ``changeOrigin``) loses its two-way fields (sfsync wrote them), unless
    ``keep_echo``: then they stay and the result says ``echo`` (:mod:`processors.conflicts` compares them
    with what sfsync wrote)."""
    mapping = cfg.objects.get(event.object)
    if mapping is None:
        return Skipped(f"unknown object {event.object}")
    if event.operation is Operation.GAP:
        return Skipped("gap events are repaired by the producer")
    if event.operation is Operation.DELETE:
        if mapping.delete_policy is DeletePolicy.IGNORE:
            return Skipped(f"delete ignored by the {event.object} delete policy")
        if filtered := _screen(event.object, mapping, event, True, event.local_key):
            return filtered
        return Mapped(ApplyCommand(**_base_command(event, ApplyTarget.LOCAL, ApplyOperation.DELETE)))
    own = is_own_origin(event.origin, cfg.salesforce.call_options_client)
    values: dict[str, FieldPyValue] = {}
    mapped_fields: set[str] = set()
    try:
        for f in mapping.fields:
            if f.direction not in TO_LOCAL:
                continue
            mapped_fields.add(f.field)
            if f.field not in event.values:
                continue
            if own and f.direction in TO_SALESFORCE and not keep_echo:
                continue  # sfsync wrote this field: an echo
            values[f.column] = to_local_value(event.values[f.field], f)
    except CoercionError as e:
        return Failed(str(e))
    local_key = event.local_key
    ext = event.values.get(mapping.external_id_field)
    if local_key is None and ext not in (None, ""):
        local_key = str(ext)
    ignored = {mapping.external_id_field, "Id", "LastModifiedDate", "SystemModstamp", "CreatedDate",
               "CreatedById", "LastModifiedById"}
    unmapped = sorted(n for n in event.changed_fields if n not in mapped_fields and n not in ignored)
    if not values and not (own and keep_echo):  # an echo that changed nothing still confirms sfsync's write
        if event.operation is not Operation.CREATE and event.operation is not Operation.UNDELETE:
            return Skipped("echo of an sfsync write" if own else "no mapped field changed")
        if own:
            return Skipped("echo of an sfsync write")
    if filtered := _screen(event.object, mapping, event, True, local_key):
        return filtered
    command = ApplyCommand(**_base_command(
        event, ApplyTarget.LOCAL, ApplyOperation.UPSERT, local_key=local_key, values=values, fields=sorted(values)
    ))
    return Mapped(command, unmapped, echo=own)


def map_outbound(event: ChangeEvent, cfg: SfsyncConfig) -> MapResult:
    """A PostgreSQL change -> a command for the Salesforce sink (values keyed by Salesforce field)."""
    found = (event.object, cfg.objects[event.object]) if event.object in cfg.objects else None
    if found is None and event.entity:
        found = _object_for_table(cfg, event.entity)
    if found is None:
        return Skipped(f"unknown object/table {event.object or event.entity}")
    name, mapping = found
    if event.operation is Operation.DELETE:
        if mapping.delete_policy is DeletePolicy.IGNORE:
            return Skipped(f"delete ignored by the {name} delete policy")
        if filtered := _screen(name, mapping, event, False, event.local_key):
            return filtered
        if mapping.delete_policy is DeletePolicy.UNLINK:
            # The Salesforce record stays; clearing its external id breaks the link, so it names no
            # local row any more and no later local row upserts into it.
            if not event.sfid:
                return Skipped(f"{name} record was never linked: nothing to unlink")
            ext = mapping.external_id_field
            return Mapped(ApplyCommand(**_base_command(event, ApplyTarget.SALESFORCE, ApplyOperation.UPSERT,
                                                       object=name, values={ext: None}, fields=[ext])))
        return Mapped(ApplyCommand(**_base_command(event, ApplyTarget.SALESFORCE, ApplyOperation.DELETE,
                                                   object=name)))
    # An update carries the whole row image; only the columns its statement changed are this change's.
    # The others hold what the row had at that commit, which Salesforce may have changed since (an inbound
    # write lands here without a capture): sending them again, as a replay after a crash would, puts an
    # older value back. A create carries every mapped column.
    carried = set(event.changed_fields) if event.operation is Operation.UPDATE else None
    values: dict[str, FieldPyValue] = {}
    columns: set[str] = set()
    for f in mapping.fields:
        if f.direction not in TO_SALESFORCE:
            continue
        columns.add(f.column)
        if f.column in event.values and (carried is None or f.column in carried):
            values[f.field] = to_salesforce_value(event.values[f.column], f)
    unmapped = sorted(c for c in event.changed_fields if c not in columns)
    if not values and event.operation is Operation.UPDATE:
        return Skipped("no mapped column changed")
    if filtered := _screen(name, mapping, event, False, event.local_key):
        return filtered
    return Mapped(ApplyCommand(**_base_command(
        event, ApplyTarget.SALESFORCE, ApplyOperation.UPSERT, object=name, values=values, fields=sorted(values)
    )), unmapped)
