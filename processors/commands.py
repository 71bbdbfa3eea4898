"""From one mapped change and its record's entry to the commands sfsync sends. Pure, no I/O.

The glue between the mapping (:mod:`processors.mapping`: a change -> a command in the target's names and
values) and the decision (:mod:`processors.conflicts`: per field, who wins and what goes where). It builds
the decision's :class:`~processors.conflicts.Change` with each field in both representations, and turns the
decision's writes into :class:`~sfsync.records.ApplyCommand`\\ s for either sink, versioned as decided.

**Deletes** (what reaches here: ``delete_policy`` ``propagate`` or ``unlink``; ``ignore`` is skipped by the
mapping) go through as mapped and leave a **tombstone** in the record's state
(:data:`TOMBSTONE`: which side's record is gone). While a side is gone, a change of the record is not decided
and sends nothing: a change of the other side read after the delete (an edit made before the delete reached
that side) would otherwise insert the deleted row again (the PostgreSQL sink inserts an upsert it finds no
row for) or be refused (``ENTITY_IS_DELETED`` in Salesforce, a dead letter), and a repair to its own side
would put back a row the delete is about to remove. A Salesforce undelete clears the
tombstone: the record is back on both sides with Salesforce's values, each field won by the undelete (the
undelete relinks or recreates the row); sfsync's writes still on their way stay known (the fields' state is
kept through the delete), so their echoes are recognised, not taken for Salesforce automation.

A local delete that did not see a write of sfsync to its row (``seen_versions``: the write lands after the
delete, and inserts the row again) is concurrent with the change that write carries. When that write is
newer (by version: commit times, with the clock caveat of ``last_writer_wins``), the delete lost to a later
change in Salesforce (an undelete, an edit made after it): nothing is sent to Salesforce and the row comes
back with the winners (a loss, counted and noted like a field's). Otherwise the delete wins, and a delete
to PostgreSQL, after the write by version, takes the row away again (under ``unlink`` the sink unlinks it).
A Salesforce delete always wins (sfsync cannot undelete). A delete redelivered is re-sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from processors.conflicts import (
    Change,
    Decision,
    FieldState,
    RecordState,
    Sent,
    Side,
    Values,
    decide,
    in_flight,
    is_redelivery,
)
from processors.entry import Entry
from processors.state import SourcePosition
from sfsync.config import Direction, ObjectMapping, SfsyncConfig
from sfsync.records import (
    FORCE_ORIGIN,
    ApplyCommand,
    ApplyOperation,
    ApplyTarget,
    ChangeEvent,
    Operation,
    version_time,
    write_version,
)

#: the tombstone's key among a record's fields (no Salesforce field name starts with ``_``): its value says
#: which side's record is deleted (``local``/``remote`` true); with neither, the last existence change was a
#: Salesforce undelete (its commit time in ``ts``)
TOMBSTONE = "__deleted__"


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
    return Change(side, version[0], version, position, fields, _seen(event, field_of), echo,
                  force=event.origin == FORCE_ORIGIN)


def next_step(stored: Entry | None, event: ChangeEvent, command: ApplyCommand, side: Side, echo: bool,
              position: SourcePosition, cfg: SfsyncConfig) -> Step:
    """What to send for one mapped change of a record whose entry is ``stored`` (see the module docstring)."""
    mapping = _mapping(cfg, command)
    sfid = command.sfid or (stored.sfid if stored else None)
    local_key = command.local_key or (stored.local_key if stored else None)
    record = stored.record if stored is not None else None
    tomb = record.fields.get(TOMBSTONE) if record is not None else None
    if record is not None and tomb is not None:
        record = replace(record, fields={k: v for k, v in record.fields.items() if k != TOMBSTONE})
    if event.operation is Operation.DELETE:
        return _delete(record, tomb, event, command, side, position, sfid, local_key, mapping)
    change = to_change(event, command, side, echo, position, mapping)
    undelete = event.operation is Operation.UNDELETE and not echo and side is Side.SALESFORCE
    if undelete and record is not None and not is_redelivery(record, change):
        if tomb is not None:  # the undelete's writes go out after the deletes sfsync sent, by version
            record = replace(record, fields={name: _after_deletes(fs, tomb) for name, fs in record.fields.items()})
        tomb = FieldState(Values(None, None), side, change.ts, position)
    elif tomb is not None and _gone(tomb) and record is not None:
        # a change of a record deleted on a side (and not undeleted): nothing to decide, nothing to send
        if is_redelivery(record, change):
            return Step([], None)
        positions = {**record.positions, side: position}
        return Step([], Entry(replace(record, fields={**record.fields, TOMBSTONE: tomb}, positions=positions),
                              sfid, local_key))
    policies = {f.field: f for f in mapping.fields}
    # an undelete brings the record back as Salesforce holds it: every field of it wins (sfsync's writes still
    # on their way stay known, so their echoes are recognised)
    decision = decide(record, change, lambda name: policies[name].conflict_policy or mapping.conflict_policy,
                      (lambda _name: True) if undelete else lambda name: policies[name].direction is not Direction.BOTH)
    writes = [*sorted(decision.writes.items()), *decision.resends]
    commands = [(_command(event, command, to, write.values, write.version, sfid, local_key, mapping), write.repair)
                for to, write in writes]
    other = side.other
    created = event.operation in (Operation.CREATE, Operation.UNDELETE) and not echo
    to_other = other in decision.writes or any(to is other for to, _write in decision.resends)
    if created and not to_other and (decision.state is not None or decision.resends):
        commands.insert(0, (replace(command, sfid=sfid, local_key=local_key), False))  # a record with no values
    state = decision.state
    if state is not None and tomb is not None:
        state = replace(state, fields={**state.fields, TOMBSTONE: tomb})
    entry = None if state is None else Entry(state, sfid, local_key)
    return Step(commands, entry, len(decision.losses), _notes(decision))


def _after_deletes(fs: FieldState, tomb: FieldState) -> FieldState:
    """``fs`` with sfsync's newest write to each side at least the delete the tombstone says it sent there."""
    sent = dict(fs.sent)
    for to, delete in tomb.sent.items():
        if to not in sent or sent[to].version < delete.version:
            sent[to] = Sent(delete.version, None)
    return replace(fs, sent=sent)


def _gone(tomb: FieldState | None) -> set[Side]:
    """The sides whose record the tombstone says is deleted."""
    if tomb is None:
        return set()
    return {s for s, flag in ((Side.LOCAL, tomb.value.local), (Side.SALESFORCE, tomb.value.remote)) if flag}


def _delete(record: RecordState | None, tomb: FieldState | None, event: ChangeEvent, command: ApplyCommand,
            side: Side, position: SourcePosition, sfid: str | None, local_key: str | None,
            mapping: ObjectMapping) -> Step:
    """A delete of ``side``'s record (module docstring): sent as mapped (versioned after sfsync's writes), the
    tombstone set; the fields' state is kept."""
    change = Change(side, write_version(event.commit_ts, event.source_position)[0],
                    write_version(event.commit_ts, event.source_position), position, {},
                    _seen(event, {f.column: f.field for f in mapping.fields}))
    if record is not None and is_redelivery(record, change):
        if tomb is None or tomb.side is not side or tomb.position != position:
            return Step([(command, False)], None)  # superseded since: as mapped, the sinks' guards decide
        if not _gone(tomb):  # a local delete that lost: the row brought back, again
            lost = _delete_lost(record, change, event, command, sfid or "", local_key, dict(record.positions),
                                mapping, tomb.sent[Side.LOCAL].version)
            return Step(lost.commands, None, lost.losses, lost.loss_notes)
        again = [(command, False)] if side.other in tomb.sent else []
        if side in tomb.sent:  # the delete a local delete also sent to PostgreSQL
            again.append((_local_delete(command, event, sfid or "", local_key), True))
        return Step([(_versioned(c, tomb.sent[_side(c)].version), repair) for c, repair in again], None)
    positions = {**(record.positions if record is not None else {}), side: position}
    fields = record.fields if record is not None else {}
    # like every write of sfsync, a delete goes out versioned above sfsync's earlier writes to its target: a
    # write of sfsync that landed there must not make the sink's guard skip the delete as older
    command = _versioned(command, _above_all(fields, side.other, change.version))
    commands = [(command, False)]
    if side is Side.LOCAL and Side.SALESFORCE not in _gone(tomb) and sfid:
        unseen = [sent.version for name, fs in fields.items()
                  if (sent := fs.sent.get(Side.LOCAL)) is not None and in_flight(fs, change, name)]
        if unseen and change.version < max(unseen):
            return _delete_lost(record, change, event, command, sfid, local_key, positions, mapping)
        if unseen:
            # the row was deleted before a write of sfsync to it landed, which inserts it again (an upsert that
            # finds no row inserts one); a delete after it, by version, takes it away again (unlinks it)
            extra = _local_delete(command, event, sfid, local_key)
            commands.append((_versioned(extra, _above_all(fields, Side.LOCAL, change.version)), True))
    gone = _gone(tomb) | {side}
    sent_by = dict(tomb.sent) if tomb is not None and _gone(tomb) else {}  # every delete since the last undelete
    for c, _repair in commands:
        if _side(c) not in sent_by or sent_by[_side(c)].version < _version(c):
            sent_by[_side(c)] = Sent(_version(c), None)
    mark = FieldState(Values(Side.LOCAL in gone or None, Side.SALESFORCE in gone or None), side, change.ts, position,
                      sent_by)
    return Step(commands, Entry(replace(record or RecordState(), fields={**fields, TOMBSTONE: mark},
                                        positions=positions), sfid, local_key))


def _local_delete(command: ApplyCommand, event: ChangeEvent, sfid: str, local_key: str | None) -> ApplyCommand:
    return replace(command, command_id=f"{event.event_id}/{ApplyTarget.LOCAL.value}", target=ApplyTarget.LOCAL,
                   operation=ApplyOperation.DELETE, sfid=sfid, local_key=local_key, values={}, fields=[])


def _side(command: ApplyCommand) -> Side:
    return Side.LOCAL if command.target is ApplyTarget.LOCAL else Side.SALESFORCE


def _version(command: ApplyCommand) -> tuple[int, int]:
    return write_version(command.source_commit_ts, command.source_position)


def _versioned(command: ApplyCommand, version: tuple[int, int]) -> ApplyCommand:
    return replace(command, source_commit_ts=version_time(version[0]), source_position=str(version[1]))


def _above_all(fields: Mapping[str, FieldState], to: Side, version: tuple[int, int]) -> tuple[int, int]:
    """``version``, or one above sfsync's newest write of any field to ``to`` when that is not below it."""
    newest = max((sent.version for fs in fields.values() if (sent := fs.sent.get(to)) is not None), default=None)
    return version if newest is None or version > newest else (newest[0], newest[1] + 1)


def _delete_lost(record: RecordState | None, change: Change, event: ChangeEvent, command: ApplyCommand, sfid: str,
                 local_key: str | None, positions: dict[Side, SourcePosition], mapping: ObjectMapping,
                 version: tuple[int, int] | None = None) -> Step:
    """A local delete concurrent with a write of sfsync to its row (it did not see it) that is newer by version:
    the record changed in Salesforce after the delete (an undelete, an edit). The delete loses, like an older
    write: nothing goes to Salesforce, and the row comes back with every field's winner, versioned above
    sfsync's earlier writes (``version``: the one it had when the delete was first read, for a redelivery). The
    tombstone records it, without a side gone."""
    assert record is not None
    if version is None:
        newest = max((sent.version for fs in record.fields.values() for sent in fs.sent.values()),
                     default=change.version)
        version = (newest[0], newest[1] + 1)
    column_of = {f.field: f.column for f in mapping.fields}
    fields = {name: replace(fs, sent={**fs.sent, Side.LOCAL: Sent(version, fs.value.local)})
              for name, fs in record.fields.items() if name in column_of}
    values = {column_of[name]: fs.value.local for name, fs in fields.items()}
    back = replace(command, command_id=f"{event.event_id}/{ApplyTarget.LOCAL.value}", target=ApplyTarget.LOCAL,
                   operation=ApplyOperation.UPSERT, sfid=sfid, local_key=local_key, values=values,
                   fields=sorted(values), source_commit_ts=version_time(version[0]), source_position=str(version[1]))
    note = (f"delete: local delete lost to a newer change in Salesforce "
            f"({version_time(change.ts).isoformat()})",)
    mark = FieldState(Values(None, None), Side.LOCAL, change.ts, change.position, {Side.LOCAL: Sent(version, None)})
    return Step([(back, True)], Entry(replace(record, fields={**record.fields, **fields, TOMBSTONE: mark},
                                              positions=positions), sfid, local_key), 1, note)


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
