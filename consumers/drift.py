"""Schema drift, both directions: the pure rules for a mapped target (a Salesforce field outbound, a local
column inbound) that disappeared while sfsync runs. No I/O here. docs/schema-drift.md.

Why: a target that is gone makes every write naming it fail. Failing the records would dead-letter (or,
inbound, stall) everything of the object and stop its other fields from syncing; instead the sink
**suspends** the target: it writes the records without it, keeps the values it could not write (parked,
durably), and writes them once the target is back. Each sink decides on its own evidence that a target is
gone (outbound: the object's describe; inbound: the table's catalog), never on an error's message text.

Contracts (``direction`` is always the sink's direction):

- :class:`MappedField`: one mapped target a sink writes, with its mapping entry path
  (``objects.Contact.fields[3]``, the index in the object's ``fields`` list, as ``sfsync mapping check``
  names it). :attr:`MappedField.target` is the name commands carry: the Salesforce field outbound, the
  local column inbound.
- :func:`mapped_targets`: per object, what the sink of ``direction`` writes: outbound the ``both`` /
  ``to_salesforce`` fields except the external id field (the upsert's key: without it no write works, that is
  not field drift); inbound the ``both`` / ``to_local`` columns except the local key and the sfid column
  (the row's identity). Keys: outbound the lower-case field name (Salesforce names are case-insensitive),
  inbound the exact column name (a PostgreSQL identifier as the sink quotes it).
- :func:`missing`: the mapped targets a listing of what exists (describe fields, catalog columns) lacks, in
  mapping order (case-insensitive outbound, exact inbound).
- :func:`strip`: a command without its suspended targets, and the values taken out. Deletes are untouched.
- :func:`parked_command`: one taken-out value as an :class:`ApplyCommand` of that one target with the
  original command's version, what is kept durably. :func:`replay_command` is what is written once the
  target is back: the same value with a version just past the parked one, so the runner's version guard
  (:mod:`consumers.versions`) writes it unless a newer value was written since (the guard stored the parked
  version itself when the stripped command succeeded: the bump is what lets the replay through, and only
  past that exact version).
- Keys on the compacted control topic (pause/resume readers ignore them: they do not start with a
  direction): ``suspension_key`` (:mod:`sfsync.operations.control`) ``field:<direction>:Contact.Title__c``
  (value: a ``ControlRecord``, pause = suspended, resume = back), :func:`parked_key`
  ``parked:<direction>:Contact.Title__c:<record>@<version>`` (value: the parked command; a tombstone once
  replayed). The record is named as the version guard names it (:func:`record_identity`). A resume replays
  :func:`newest_per_record`.
- :class:`Suspension`: the alert's cause ``schema_change:<salesforce|postgres>:<Object>.<target>`` (one
  problem per target) and its text (:func:`suspension_message`, :func:`resumed_message`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sfsync.config import Direction as FieldDirection
from sfsync.config import SfsyncConfig
from sfsync.records import ApplyCommand, ApplyOperation, Direction, FieldPyValue, new_id, write_version

PARKED_PREFIX = "parked:"
#: the side whose schema drifted, by the sink's direction (alert causes, messages)
SIDE = {Direction.OUTBOUND: "salesforce", Direction.INBOUND: "postgres"}
_SKIP = {Direction.OUTBOUND: FieldDirection.TO_LOCAL, Direction.INBOUND: FieldDirection.TO_SALESFORCE}


@dataclass(frozen=True, slots=True)
class MappedField:
    """One mapped target a sink writes: its object, Salesforce field, local column, entry path, direction."""

    object: str
    field: str
    column: str
    entry: str
    direction: Direction = Direction.OUTBOUND

    @property
    def target(self) -> str:
        """The name the sink's commands carry: the Salesforce field outbound, the local column inbound."""
        return self.field if self.direction is Direction.OUTBOUND else self.column

    @property
    def name(self) -> str:
        """``Contact.Title__c`` outbound, ``Contact.title`` inbound."""
        return f"{self.object}.{self.target}"

    @property
    def key(self) -> str:
        """Its key in :func:`mapped_targets` (and how :func:`missing` compares)."""
        return self.target.lower() if self.direction is Direction.OUTBOUND else self.target


def mapped_targets(cfg: SfsyncConfig, direction: Direction) -> dict[str, dict[str, MappedField]]:
    """object -> :attr:`MappedField.key` -> :class:`MappedField` (see module contract)."""
    out: dict[str, dict[str, MappedField]] = {}
    for name, obj in cfg.objects.items():
        keys = ({obj.external_id_field.lower()} if direction is Direction.OUTBOUND
                else {obj.local_key, obj.sfid_column})
        fields: dict[str, MappedField] = {}
        for i, f in enumerate(obj.fields):
            m = MappedField(name, f.field, f.column, f"objects.{name}.fields[{i}]", direction)
            if f.direction is _SKIP[direction] or m.key in keys:
                continue
            fields[m.key] = m
        out[name] = fields
    return out


def missing(mapped: Mapping[str, MappedField], present: Iterable[str]) -> list[MappedField]:
    """The mapped targets ``present`` (what the describe / catalog lists) lacks, in mapping order; outbound
    names compare case-insensitively, inbound column names exactly."""
    names = set(present)
    lowered = {n.lower() for n in names}
    gone = [m for m in mapped.values()
            if (m.target.lower() not in lowered if m.direction is Direction.OUTBOUND else m.target not in names)]
    return sorted(gone, key=_entry_order)


def _entry_order(m: MappedField) -> tuple[str, int]:
    head, _, index = m.entry.rpartition("[")
    number = index.rstrip("]")
    return head, int(number) if number.isdigit() else 0


def strip(command: ApplyCommand, suspended: frozenset[str]) -> tuple[ApplyCommand, dict[str, FieldPyValue]]:
    """``command`` without the targets in ``suspended`` (exact names as commands carry them), and the values
    taken out."""
    if command.operation is ApplyOperation.DELETE or not suspended:
        return command, {}
    taken = {f: v for f, v in command.values.items() if f in suspended}
    if not taken:
        return command, {}
    keep = {f: v for f, v in command.values.items() if f not in suspended}
    return replace(command, values=keep, fields=[f for f in command.fields if f not in suspended]), taken


def parked_command(command: ApplyCommand, field: str, value: FieldPyValue) -> ApplyCommand:
    """The durable form of one value the sink could not write: that target only, the command's version."""
    return replace(command, values={field: value}, fields=[field], attempt=0)


def replay_command(parked: ApplyCommand) -> ApplyCommand:
    """What is written once the target is back: the parked value, its version bumped just past the parked
    one (position + 1; a position that is no number, version -1, becomes 0), a new command id."""
    _, position = write_version(parked.source_commit_ts, parked.source_position)
    return replace(parked, command_id=new_id(), source_position=str(position + 1), attempt=0)


def record_identity(command: ApplyCommand, direction: Direction) -> str | None:
    """What names the record in a parked key, as the version guard names it: outbound commands (from
    PostgreSQL) by their local key, inbound ones (from Salesforce) by their sfid; else the other one."""
    if direction is Direction.INBOUND:
        return command.sfid or command.local_key
    return command.local_key or command.sfid


def parked_key(direction: Direction, command: ApplyCommand, field: str) -> str | None:
    """The key of one parked value: per target, record and version, so a value parked while another sink
    replica resumes the target is never cleared unread (that resume clears only the keys it read).
    ``None`` for a command that names no record."""
    record = record_identity(command, direction)
    if record is None:
        return None
    micros, position = write_version(command.source_commit_ts, command.source_position)
    return f"{PARKED_PREFIX}{direction.value}:{command.object}.{field}:{record}@{micros}.{position}"


def parked_prefix(direction: Direction, obj: str, field: str) -> str:
    """Every parked key of one suspended target starts with this."""
    return f"{PARKED_PREFIX}{direction.value}:{obj}.{field}:"


def newest_per_record(parked: Iterable[ApplyCommand], direction: Direction) -> list[ApplyCommand]:
    """The newest parked value of each record (by version; the older ones could only lose to it)."""
    newest: dict[tuple[str, str | None], ApplyCommand] = {}
    for command in parked:
        key = (command.object, record_identity(command, direction))
        kept = newest.get(key)
        if kept is None or write_version(command.source_commit_ts, command.source_position) > write_version(
                kept.source_commit_ts, kept.source_position):
            newest[key] = command
    return list(newest.values())


@dataclass(frozen=True, slots=True)
class Suspension:
    """A suspended target: what the alert and ``sfsync`` tools say about it."""

    mapped: MappedField
    reason: str

    @property
    def cause(self) -> str:
        """The alert cause (``details.cause``): one problem per target."""
        return f"schema_change:{SIDE[self.mapped.direction]}:{self.mapped.name}"


def suspension_message(mapped: MappedField, error_class: str, table: str | None = None) -> str:
    """The alert's text: the target, its mapping entry, what it maps to, why, and what happens meanwhile.
    ``table`` (inbound): ``schema.table`` of the column."""
    if mapped.direction is Direction.OUTBOUND:
        return (f"Salesforce field {mapped.name} (mapping entry {mapped.entry}, column {mapped.column}) is gone "
                f"({error_class}): suspended; the other fields keep syncing, its changes are kept and written "
                f"once the field is back")
    where = f"{table}.{mapped.column}" if table else mapped.column
    return (f"Local column {where} (mapping entry {mapped.entry}, Salesforce field {mapped.object}.{mapped.field}) "
            f"is gone ({error_class}): suspended; the other columns keep syncing, its changes are kept and "
            f"written once the column is back")


def resumed_message(mapped: MappedField, records: int) -> str:
    """The resolved alert's text."""
    what = "Salesforce field" if mapped.direction is Direction.OUTBOUND else "Local column"
    return (f"{what} {mapped.name} (mapping entry {mapped.entry}) is back: the suspended changes of "
            f"{records} record(s) replayed")
