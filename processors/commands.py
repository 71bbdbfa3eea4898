"""From one mapped change and its record's entry to the commands sfsync sends. Pure, no I/O.

The glue between the mapping (:mod:`processors.mapping`: a change -> a command in the target's names and
values) and the decision (:mod:`processors.conflicts`: per field, who wins and what goes where). It builds
the decision's :class:`~processors.conflicts.Change` with each field in both representations, and turns the
decision's writes into :class:`~sfsync.records.ApplyCommand`\\ s for either sink, versioned as decided.

Deletes are not conflict-decided (yet): a delete goes through as mapped, clears the record's fields and is
re-sent when redelivered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from processors.conflicts import Change, Decision, RecordState, Side, Values, decide, is_redelivery
from processors.entry import Entry
from processors.state import SourcePosition
from sfsync.config import Direction, ObjectMapping, SfsyncConfig
from sfsync.records import (
    ApplyCommand,
    ApplyOperation,
    ApplyTarget,
    ChangeEvent,
    Operation,
    version_time,
    write_version,
)


@dataclass(frozen=True, slots=True)
class Step:
    """The commands to send (each with whether it is a repair), the entry to store once they were sent
    (``None``: keep the stored one) and the losses, counted and described for the log."""

    commands: list[tuple[ApplyCommand, bool]]
    entry: Entry | None
    losses: int = 0
    loss_notes: tuple[str, ...] = ()


def _target(side: Side) -> ApplyTarget:
    return ApplyTarget.LOCAL if side is Side.LOCAL else ApplyTarget.SALESFORCE


def _mapping(cfg: SfsyncConfig, command: ApplyCommand) -> ObjectMapping:
    return cfg.objects[command.object]


def _seen(event: ChangeEvent, field_of: dict[str, str]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for column, text in event.seen_versions.items():
        micros, _, position = text.partition(":")
        if column in field_of and micros.lstrip("-").isdigit() and position.lstrip("-").isdigit():
            out[field_of[column]] = (int(micros), int(position))
    return out


def to_change(event: ChangeEvent, command: ApplyCommand, side: Side, echo: bool, position: SourcePosition,
              mapping: ObjectMapping) -> Change:
    """The decision's view of one mapped change: its fields by Salesforce name, in both representations."""
    field_of = {f.column: f.field for f in mapping.fields}
    fields: dict[str, Values] = {}
    if side is Side.SALESFORCE:
        for column, value in command.values.items():
            name = field_of[column]
            fields[name] = Values(value, event.values.get(name))
    else:
        column_of = {f.field: f.column for f in mapping.fields}
        for name, value in command.values.items():
            fields[name] = Values(event.values.get(column_of[name]), value)
    version = write_version(event.commit_ts, event.source_position)
    return Change(side, version[0], version, position, fields, _seen(event, field_of), echo)


def next_step(stored: Entry | None, event: ChangeEvent, command: ApplyCommand, side: Side, echo: bool,
              position: SourcePosition, cfg: SfsyncConfig) -> Step:
    """What to send for one mapped change of a record whose entry is ``stored`` (see the module docstring)."""
    mapping = _mapping(cfg, command)
    sfid = command.sfid or (stored.sfid if stored else None)
    local_key = command.local_key or (stored.local_key if stored else None)
    record = stored.record if stored is not None else None
    if event.operation is Operation.DELETE:
        redelivered = record is not None and is_redelivery(record, Change(side, 0, (0, 0), position, {}))
        if redelivered:
            return Step([(command, False)], None)
        positions = {**(record.positions if record is not None else {}), side: position}
        return Step([(command, False)], Entry(replace(record or RecordState(), fields={}, positions=positions),
                                              sfid, local_key))
    change = to_change(event, command, side, echo, position, mapping)
    policies = {f.field: f for f in mapping.fields}
    decision = decide(record, change, lambda name: policies[name].conflict_policy or mapping.conflict_policy,
                      lambda name: policies[name].direction is not Direction.BOTH)
    writes = [*sorted(decision.writes.items()), *decision.resends]
    commands = [(_command(event, command, to, write.values, write.version, sfid, local_key, mapping), write.repair)
                for to, write in writes]
    other = side.other
    created = event.operation in (Operation.CREATE, Operation.UNDELETE) and not echo
    to_other = other in decision.writes or any(to is other for to, _write in decision.resends)
    if created and not to_other and (decision.state is not None or decision.resends):
        commands.insert(0, (replace(command, sfid=sfid, local_key=local_key), False))  # a record with no values
    entry = None if decision.state is None else Entry(decision.state, sfid, local_key)
    return Step(commands, entry, len(decision.losses), _notes(decision))


def _notes(decision: Decision) -> tuple[str, ...]:
    return tuple(f"{x.field}: {x.side.value} value {x.lost!r} lost to {x.kept!r} ({x.policy.value}, "
                 f"{version_time(x.ts).isoformat()})" for x in decision.losses)


def _command(event: ChangeEvent, mapped: ApplyCommand, to: Side, values: dict[str, Values],
             version: tuple[int, int], sfid: str | None, local_key: str | None,
             mapping: ObjectMapping) -> ApplyCommand:
    if to is Side.LOCAL:
        column_of = {f.field: f.column for f in mapping.fields}
        out = {column_of[name]: v.local for name, v in values.items()}
    else:
        out = {name: v.remote for name, v in values.items()}
    target = _target(to)
    return ApplyCommand(
        command_id=f"{event.event_id}/{target.value}", target=target, object=mapped.object,
        operation=ApplyOperation.UPSERT, sfid=sfid, local_key=local_key, values=out, fields=sorted(out),
        source=event.source, source_event_id=event.event_id, source_commit_ts=version_time(version[0]),
        source_position=str(version[1]), origin=event.origin, trace_id=event.trace_id,
    )
