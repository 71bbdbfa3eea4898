"""The pure half of the Salesforce sink: apply commands -> sObject Collections calls, and call results ->
per-command outcomes. No I/O here.

Contracts:

- :func:`plan` groups a batch into rounds of calls. Within one record's commands the batch order is
  kept: consecutive upserts of one record are merged into one entry (later values win), and a
  record's next different operation goes to the next round, so no call names a record twice
  (Salesforce refuses duplicate external ids in one upsert call). Within a round, entries are grouped by
  (object, operation, key field) into calls of at most ``max_records``; objects referenced by other
  mapped objects come first, so a parent created in the same batch is known before its children.
- Upserts of a linked record (the command has an sfid) key on ``Id`` and set the external id field
  to the local key, which links records created in Salesforce; unlinked records upsert on the
  external id field (value = the command's ``local_key``), so a retried create never duplicates;
  a command with neither fails permanently (``MISSING_KEY``). Deletes need an sfid (the sink looks
  missing ones up by external id). A command that carries the external id field itself (an unlink under
  ``delete_policy: unlink`` sets it to null) writes that value instead of the local key.
- :func:`upsert_body` builds one record of an upsert call (``attributes.type``, the key, the values as
  REST JSON, reference fields replaced by the referenced record's sfid). Numbers stay exact: a ``Decimal``
  stays a ``Decimal`` for the JSON writer (:func:`~sfsync.salesforce.values.dumps_exact`), never a float.
- Every Salesforce id the plan sends (the key of an upsert by ``Id``, a delete's id, a resolved reference)
  and compares (two commands of one record) is in its 18-character form
  (:func:`~sfsync.salesforce.values.canonical_sfid`): a command carrying the 15-character form of an id
  is the same record as one carrying the 18-character form.
- :func:`record_outcome` turns one per-record result into ``None`` (success) or a :class:`Failure`
  classified by :func:`consumers.salesforce.errors.classify` (error_class = Salesforce's code,
  message = Salesforce's message).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from consumers.salesforce.errors import classify
from sfsync.failures import Failure, FailureKind
from sfsync.records import ApplyCommand, ApplyOperation, FieldPyValue
from sfsync.salesforce.values import canonical_sfid, to_json_value

MAX_RECORDS = 200
#: Delete results that mean "already gone": the desired state holds.
ALREADY_DELETED = frozenset({"ENTITY_IS_DELETED", "NOT_FOUND"})

Op = Literal["upsert", "delete"]


@dataclass
class Entry:
    """One record's write in one round: merged commands (their batch indexes) and the values to send."""

    object: str
    op: Op
    indexes: list[int]
    local_key: str | None
    sfid: str | None
    values: dict[str, FieldPyValue] = field(default_factory=dict)


@dataclass
class Call:
    """One sObject Collections call."""

    object: str
    op: Op
    key_field: str
    entries: list[Entry]


@dataclass
class Plan:
    """Rounds of calls (run in order) and commands that failed before any call."""

    rounds: list[list[Call]]
    failures: dict[int, Failure]

    @property
    def call_count(self) -> int:
        return sum(len(r) for r in self.rounds)


def _identity(cmd: ApplyCommand, sfid: str | None) -> str | None:
    if cmd.local_key not in (None, ""):
        return f"local:{cmd.local_key}"
    if sfid:
        return f"sfid:{sfid}"
    return None


def plan(
    batch: Sequence[ApplyCommand],
    external_id_field: Callable[[str], str],
    referenced_objects: frozenset[str] = frozenset(),
    max_records: int = MAX_RECORDS,
) -> Plan:
    """Group ``batch`` into rounds of calls (see module contract)."""
    failures: dict[int, Failure] = {}
    per_record: dict[tuple[str, str], list[Entry]] = {}
    for i, cmd in enumerate(batch):
        sfid = canonical_sfid(cmd.sfid) or None
        identity = _identity(cmd, sfid)
        if identity is None:
            failures[i] = Failure(FailureKind.PERMANENT, "MISSING_KEY",
                                  f"{cmd.object} command has neither a local key nor a Salesforce id")
            continue
        op: Op = "delete" if cmd.operation is ApplyOperation.DELETE else "upsert"
        entries = per_record.setdefault((cmd.object, identity), [])
        last = entries[-1] if entries else None
        if last is not None and last.op == op:
            last.indexes.append(i)
            last.values.update(cmd.values)
            last.sfid = sfid or last.sfid
            continue
        entries.append(Entry(cmd.object, op, [i], cmd.local_key or None, sfid, dict(cmd.values)))
    depth = max((len(v) for v in per_record.values()), default=0)
    rounds: list[list[Call]] = []
    for r in range(depth):
        groups: dict[tuple[str, Op, str], list[Entry]] = {}
        for entries in per_record.values():
            if r >= len(entries):
                continue
            entry = entries[r]
            if entry.op == "delete":
                key_field = ""
            else:
                # A linked record is written by its Id (it may have been created in Salesforce and not
                # carry the local key yet; the body sets it); an unlinked one by its external id.
                key_field = "Id" if entry.sfid or entry.local_key is None else external_id_field(entry.object)
            groups.setdefault((entry.object, entry.op, key_field), []).append(entry)
        calls: list[Call] = []
        for (sobject, op, key_field), entries in groups.items():
            for start in range(0, len(entries), max_records):
                calls.append(Call(sobject, op, key_field, entries[start:start + max_records]))
        calls.sort(key=lambda c: (0 if c.object in referenced_objects else 1, 0 if c.op == "upsert" else 1))
        rounds.append(calls)
    return Plan(rounds, failures)


class UnresolvedReference(Exception):
    """A reference field names a record that Salesforce does not know (yet)."""

    def __init__(self, field_name: str, target: str, local_key: str) -> None:
        super().__init__(f"{field_name}: no {target} record with local key {local_key!r} in Salesforce yet")
        self.field_name = field_name


def upsert_body(
    call: Call,
    entry: Entry,
    references: Mapping[str, str],
    resolve: Callable[[str, str], str | None],
    external_id_field: str | None = None,
) -> dict[str, Any]:
    """One record of an upsert call. ``references`` maps a reference field to its target object;
    ``resolve(target, local_key)`` gives the target's sfid (``UnresolvedReference`` when None);
    ``external_id_field`` is set to the local key when the call keys on ``Id``."""
    record: dict[str, Any] = {"attributes": {"type": call.object}}
    for name, value in entry.values.items():
        if name in ("Id", "attributes") or name == call.key_field:
            continue
        target = references.get(name)
        if target is not None and value is not None and value != "":
            sfid = resolve(target, str(value))
            if sfid is None:
                raise UnresolvedReference(name, target, str(value))
            record[name] = canonical_sfid(sfid)
            continue
        record[name] = to_json_value(value)
    record[call.key_field] = entry.sfid if call.key_field == "Id" else entry.local_key
    if call.key_field == "Id" and external_id_field and entry.local_key is not None \
            and external_id_field not in entry.values:  # a value of its own: an unlink clears it
        record[external_id_field] = entry.local_key
    return record


def record_outcome(result: Mapping[str, Any] | None, op: Op) -> Failure | None:
    """``None`` for a successful per-record result, else its classified :class:`Failure`."""
    if result is None:
        return Failure(FailureKind.TRANSIENT, "NO_RESULT", "Salesforce returned no result for this record")
    if result.get("success"):
        return None
    errors = result.get("errors") or [{}]
    first = errors[0] if isinstance(errors[0], Mapping) else {}
    code = str(first.get("statusCode") or first.get("errorCode") or "UNKNOWN_ERROR")
    if op == "delete" and code in ALREADY_DELETED:
        return None
    message = str(first.get("message") or code)
    fields = first.get("fields") or []
    if fields:
        message = f"{message} (fields: {', '.join(str(f) for f in fields)})"
    return Failure(classify(code, 400), code, message)


def call_failure(code: str, message: str, status: int | None) -> Failure:
    """The failure every record of a call gets when the whole call failed."""
    return Failure(classify(code, status), code, message)
