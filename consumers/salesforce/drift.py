"""Schema drift, outbound: the pure rules for a mapped Salesforce field that disappeared. No I/O here.

Why: a field an admin deletes (or renames) in Salesforce makes every write naming it fail with
``INVALID_FIELD``. Failing the records would dead-letter everything of the object and stop its other
fields from syncing; instead the sink **suspends** the field: it writes the records without it, keeps the
values it could not write (parked, durably), and writes them once the field is back. docs/schema-drift.md.

Contracts:

- :func:`outbound_fields`: per object, the mapped fields the sink writes (direction ``both`` /
  ``to_salesforce``), each with its mapping entry path (``objects.Contact.fields[3]``, the index in the
  object's ``fields`` list, as ``sfsync mapping check`` names it). The external id field is the write's key,
  never a field to suspend (without it no upsert works: that is not field drift).
- :func:`drift_candidate`: a failure that may mean drift: ``INVALID_FIELD`` / ``INVALID_TYPE``. Which
  fields are gone is never read from the message text: :func:`missing` compares the mapping with the
  object's describe, which decides (an ``INVALID_FIELD`` about a name that is not mapped, or a describe that
  lists every mapped field, is an ordinary failure).
- :func:`strip`: a command without its suspended fields, and the values taken out. Deletes are untouched.
- :func:`parked_command`: one taken-out value as an :class:`ApplyCommand` of that one field with the
  original command's version, what is kept durably. :func:`replay_command` is what is written once the
  field is back: the same value with a version just past the parked one, so the runner's version guard
  (:mod:`consumers.versions`) writes it unless a newer value of that field was written since (the guard
  stored the parked version itself when the stripped command succeeded: the bump is what lets the replay
  through, and only past that exact version).
- Keys on the compacted control topic (readers of pause/resume ignore them: they do not start with a
  direction): ``suspension_key`` (:mod:`sfsync.operations.control`) ``field:outbound:Contact.Title__c``
  (value: a ``ControlRecord``, pause = suspended, resume = back), :func:`parked_key`
  ``parked:outbound:Contact.Title__c:<record>@<version>`` (value: the parked command; a tombstone once
  replayed). A resume replays :func:`newest_per_record`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sfsync.config import Direction as FieldDirection
from sfsync.config import SfsyncConfig
from sfsync.failures import Failure
from sfsync.records import ApplyCommand, ApplyOperation, Direction, FieldPyValue, new_id, write_version

#: Salesforce codes that can mean a mapped field (or object) is gone
DRIFT_CODES = frozenset({"INVALID_FIELD", "INVALID_TYPE"})
PARKED_PREFIX = "parked:"


@dataclass(frozen=True, slots=True)
class MappedField:
    """One mapped field the sink writes: its object, Salesforce field, local column and entry path."""

    object: str
    field: str
    column: str
    entry: str

    @property
    def name(self) -> str:
        """``Contact.Title__c``"""
        return f"{self.object}.{self.field}"


def outbound_fields(cfg: SfsyncConfig) -> dict[str, dict[str, MappedField]]:
    """object -> lower-case field name -> :class:`MappedField` (see module contract)."""
    out: dict[str, dict[str, MappedField]] = {}
    for name, obj in cfg.objects.items():
        fields: dict[str, MappedField] = {}
        for i, f in enumerate(obj.fields):
            if f.direction is FieldDirection.TO_LOCAL or f.field.lower() == obj.external_id_field.lower():
                continue
            fields[f.field.lower()] = MappedField(name, f.field, f.column, f"objects.{name}.fields[{i}]")
        out[name] = fields
    return out


def drift_candidate(failure: Failure | None) -> bool:
    """True for a failure that may mean a mapped field is gone (the describe decides)."""
    return failure is not None and failure.error_class in DRIFT_CODES


def missing(mapped: Mapping[str, MappedField], describe_fields: Iterable[str]) -> list[MappedField]:
    """The mapped fields the object's describe does not list (case-insensitive), in mapping order."""
    present = {f.lower() for f in describe_fields}
    return sorted((m for key, m in mapped.items() if key not in present), key=lambda m: m.entry)


def strip(command: ApplyCommand, suspended: frozenset[str]) -> tuple[ApplyCommand, dict[str, FieldPyValue]]:
    """``command`` without the fields in ``suspended`` (exact names as mapped), and the values taken out."""
    if command.operation is ApplyOperation.DELETE or not suspended:
        return command, {}
    taken = {f: v for f, v in command.values.items() if f in suspended}
    if not taken:
        return command, {}
    keep = {f: v for f, v in command.values.items() if f not in suspended}
    return replace(command, values=keep, fields=[f for f in command.fields if f not in suspended]), taken


def parked_command(command: ApplyCommand, field: str, value: FieldPyValue) -> ApplyCommand:
    """The durable form of one value the sink could not write: that field only, the command's version."""
    return replace(command, values={field: value}, fields=[field], attempt=0)


def replay_command(parked: ApplyCommand) -> ApplyCommand:
    """What is written once the field is back: the parked value, its version bumped just past the parked
    one (position + 1; a position that is no number, version -1, becomes 0), a new command id."""
    _, position = write_version(parked.source_commit_ts, parked.source_position)
    return replace(parked, command_id=new_id(), source_position=str(position + 1), attempt=0)


def record_identity(command: ApplyCommand) -> str | None:
    """What names the record in a parked key: its local key (outbound commands come from PostgreSQL), else
    its sfid."""
    return command.local_key or command.sfid


def parked_key(direction: Direction, command: ApplyCommand, field: str) -> str | None:
    """The key of one parked value: per field, record and version, so a value parked while another sink
    replica resumes the field is never cleared unread (that resume clears only the keys it read).
    ``None`` for a command that names no record."""
    record = record_identity(command)
    if record is None:
        return None
    micros, position = write_version(command.source_commit_ts, command.source_position)
    return f"{PARKED_PREFIX}{direction.value}:{command.object}.{field}:{record}@{micros}.{position}"


def newest_per_record(parked: Iterable[ApplyCommand]) -> list[ApplyCommand]:
    """The newest parked value of each record (by version; the older ones could only lose to it)."""
    newest: dict[tuple[str, str | None], ApplyCommand] = {}
    for command in parked:
        key = (command.object, record_identity(command))
        kept = newest.get(key)
        if kept is None or write_version(command.source_commit_ts, command.source_position) > write_version(
                kept.source_commit_ts, kept.source_position):
            newest[key] = command
    return list(newest.values())


def parked_prefix(direction: Direction, obj: str, field: str) -> str:
    """Every parked key of one suspended field starts with this."""
    return f"{PARKED_PREFIX}{direction.value}:{obj}.{field}:"


@dataclass(frozen=True, slots=True)
class Suspension:
    """A suspended field: what the alert and ``sfsync`` tools say about it."""

    mapped: MappedField
    reason: str

    @property
    def cause(self) -> str:
        """The alert cause (``details.cause``): one problem per field."""
        return f"schema_change:salesforce:{self.mapped.name}"


def suspension_message(mapped: MappedField, error_class: str) -> str:
    return (f"Salesforce field {mapped.name} (mapping entry {mapped.entry}, column {mapped.column}) is gone "
            f"({error_class}): suspended; the other fields keep syncing, its changes are kept and written once "
            f"the field is back")
