"""Planning a PostgreSQL sink batch: commands -> ordered, collapsed operations. Pure functions, no I/O.

:func:`plan_batch` turns a batch of :class:`~sfsync.records.ApplyCommand` into
rounds of :class:`Op`:

- ``upsert``/``undelete`` -> an ``upsert`` op; ``delete`` -> by the object's
  delete policy: ``propagate`` -> ``delete``, ``unlink`` -> ``unlink``,
  ``ignore`` -> nothing (the command succeeds);
- collapse: consecutive upserts of one record key merge into one op (later
  values win per column, the union of columns is written); repeated deletes
  merge; an upsert after a delete (or a delete after an upsert) of the same
  key stays a separate op, so the effect equals applying the commands in order;
- round ``r`` holds each key's ``r``-th op: rounds run in order, and inside a
  round every key appears at most once, so ops may be grouped freely;
- a command that cannot be applied at all (unknown object, unmapped column,
  no record key, delete without Salesforce id) gets a permanent
  :class:`~sfsync.failures.Failure` and no op.

Values (:func:`json_value`, :func:`op_json`): every value reaches PostgreSQL's
input functions as text they read back exactly (a ``Decimal`` as its digits,
never through float). Two rules change a value on its way in, both documented
in docs/postgres.md:

- **NUL**: PostgreSQL ``text`` and ``jsonb`` cannot hold U+0000, so NUL
  characters are removed from every string (:func:`pg_text`); the record is
  written (never refused for it) and the sink logs which columns lost one
  (:func:`nul_columns`).
- **Ids**: Salesforce ids (the record's sfid, reference values) are written in
  their 18-character form (:func:`~sfsync.salesforce.values.canonical_sfid`);
  two commands naming one record by its 15- and 18-character ids are one record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sfsync.config import DeletePolicy, SfsyncConfig
from sfsync.failures import Failure, FailureKind
from sfsync.records import ApplyCommand, ApplyOperation, FieldPyValue, record_key
from sfsync.salesforce.values import canonical_sfid, is_sfid


class OpKind(StrEnum):
    UPSERT = "upsert"  # update by local key (linking) or insert ... on conflict (sfid) do update
    DELETE = "delete"  # delete the row by sfid
    UNLINK = "unlink"  # clear the row's sfid
    LINK = "link"  # set the sfid of the row with this local key (write-back of a new Salesforce id)


@dataclass(frozen=True, slots=True)
class ObjectPlan:
    """Where and how one object is written: table, key columns, mapped columns, references."""

    name: str
    schema: str
    table: str
    local_key: str
    sfid_column: str
    delete_policy: DeletePolicy
    columns: frozenset[str]
    references: Mapping[str, str]  # column -> referenced object name


def object_plans(cfg: SfsyncConfig) -> dict[str, ObjectPlan]:
    """One :class:`ObjectPlan` per mapped object."""
    return {
        name: ObjectPlan(
            name=name,
            schema=cfg.postgres.schema_name,
            table=obj.table,
            local_key=obj.local_key,
            sfid_column=obj.sfid_column,
            delete_policy=obj.delete_policy,
            columns=frozenset(f.column for f in obj.fields),
            references={f.column: f.reference for f in obj.fields if f.reference},
        )
        for name, obj in cfg.objects.items()
    }


def object_order(plans: Mapping[str, ObjectPlan]) -> list[str]:
    """Objects with referenced ones first (config order otherwise; cycles keep config order)."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered or name in visiting or name not in plans:
            return
        visiting.add(name)
        for ref in plans[name].references.values():
            visit(ref)
        visiting.discard(name)
        ordered.append(name)

    for name in plans:
        visit(name)
    return ordered


@dataclass(slots=True)
class Op:
    """One write of one record, standing for the batch commands at ``indexes``."""

    kind: OpKind
    object: str
    key: str
    sfid: str | None
    local_key: str | None
    values: dict[str, FieldPyValue] = field(default_factory=dict)
    indexes: list[int] = field(default_factory=list)

    @property
    def columns(self) -> frozenset[str]:
        return frozenset(self.values)


@dataclass(slots=True)
class BatchPlan:
    """Rounds of ops (run in order) and the commands that failed before touching the database."""

    rounds: list[list[Op]]
    failures: dict[int, Failure]

    @property
    def op_count(self) -> int:
        return sum(len(r) for r in self.rounds)


def _permanent(error_class: str, message: str) -> Failure:
    return Failure(FailureKind.PERMANENT, error_class, message)


def _kind(cmd: ApplyCommand, plan: ObjectPlan) -> OpKind | None:
    if cmd.operation is ApplyOperation.DELETE:
        return {
            DeletePolicy.PROPAGATE: OpKind.DELETE,
            DeletePolicy.UNLINK: OpKind.UNLINK,
            DeletePolicy.IGNORE: None,
        }[plan.delete_policy]
    return OpKind.UPSERT


def plan_batch(batch: list[ApplyCommand], plans: Mapping[str, ObjectPlan]) -> BatchPlan:
    """Collapse and order a batch (see the module docstring)."""
    ops: list[Op] = []
    failures: dict[int, Failure] = {}
    last_op: dict[str, int] = {}  # record key -> index in ops of its latest op
    for i, cmd in enumerate(batch):
        plan = plans.get(cmd.object)
        if plan is None:
            failures[i] = _permanent("UnknownObject", f"object {cmd.object!r} is not mapped")
            continue
        unknown = sorted(c for c in cmd.values if c not in plan.columns)
        if unknown:
            failures[i] = _permanent(
                "UnmappedColumn", f"{plan.table}: column(s) {', '.join(unknown)} not mapped for {plan.name}"
            )
            continue
        sfid = canonical_sfid(cmd.sfid) or None
        try:
            key = record_key(cmd.object, sfid, cmd.local_key)
        except ValueError as e:
            failures[i] = _permanent("NoRecordKey", str(e))
            continue
        kind = _kind(cmd, plan)
        if kind is None:
            continue  # delete ignored by policy: nothing to write, success
        if kind is not OpKind.UPSERT and not sfid:
            failures[i] = _permanent("NoSalesforceId", f"{plan.name} {kind.value} needs the record's Salesforce id")
            continue
        prev = last_op.get(key)
        if prev is not None and ops[prev].kind is kind and kind is not OpKind.LINK:
            merged = ops[prev]
            if kind is OpKind.UPSERT:
                merged.values.update(cmd.values)
            merged.sfid = sfid or merged.sfid
            merged.local_key = cmd.local_key or merged.local_key
            merged.indexes.append(i)
            continue
        last_op[key] = len(ops)
        ops.append(Op(kind, cmd.object, key, sfid, cmd.local_key, dict(cmd.values), [i]))
    return BatchPlan(_rounds(ops), failures)


def link_ops(pairs: Iterable[tuple[str, str, str]], plans: Mapping[str, ObjectPlan]) -> BatchPlan:
    """Plan ``(object, local_key, sfid)`` write-backs: one LINK op each (later pairs of a key run later)."""
    ops: list[Op] = []
    failures: dict[int, Failure] = {}
    for i, (obj, local_key, sfid) in enumerate(pairs):
        if obj not in plans:
            failures[i] = _permanent("UnknownObject", f"object {obj!r} is not mapped")
        elif not local_key or not sfid:
            failures[i] = _permanent("NoRecordKey", f"{obj}: write-back needs a local key and a Salesforce id")
        else:
            ops.append(Op(OpKind.LINK, obj, f"{obj}:local:{local_key}", canonical_sfid(sfid), local_key, {}, [i]))
    return BatchPlan(_rounds(ops), failures)


def _rounds(ops: list[Op]) -> list[list[Op]]:
    seen: dict[str, int] = {}
    rounds: list[list[Op]] = []
    for op in ops:
        r = seen.get(op.key, 0)
        seen[op.key] = r + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(op)
    return rounds


def pg_text(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL characters (U+0000) removed, nothing else changed.

    PostgreSQL's ``text``, ``varchar`` and ``jsonb`` cannot hold U+0000 (a jsonb ``\\u0000`` is refused with
    SQLSTATE 22P05), so the rule is: NULs are dropped, the rest of the value is written.
    """
    return text.replace("\x00", "") if "\x00" in text else text


def nul_columns(values: Mapping[str, FieldPyValue]) -> list[str]:
    """The columns whose string value holds a NUL character (:func:`pg_text` removes it), sorted."""
    return sorted(c for c, v in values.items() if isinstance(v, str) and "\x00" in v)


def json_value(value: FieldPyValue) -> Any:
    """A field value as JSON that PostgreSQL's input functions read back exactly.

    Decimals, dates, times and datetimes become their ISO/decimal text (exact: a Decimal's digits, an int of
    any size as a JSON integer); bytes the ``\\x..`` hex form of ``bytea``; non-finite floats
    ``NaN``/``Infinity``; strings lose their NUL characters (:func:`pg_text`).
    """
    if isinstance(value, str):
        return pg_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    raise TypeError(f"unsupported field value type {type(value).__name__}")


def op_json(op: Op, plan: ObjectPlan, with_key: bool = True) -> dict[str, Any]:
    """The JSON document of one op for the statement's source rows: ``{"row": {...}, "ref": {...}}``.

    ``row`` holds the local key, the sfid and every plain column (typed by
    ``jsonb_populate_record`` against the table's row type); ``ref`` holds the
    Salesforce ids of reference columns (18-character form), resolved to local keys in SQL. Without
    ``with_key`` the local key is left out (deletes and unlinks go by sfid only).
    """
    local_key = pg_text(op.local_key) if with_key and op.local_key is not None else None
    row: dict[str, Any] = {plan.local_key: local_key, plan.sfid_column: canonical_sfid(op.sfid)}
    ref: dict[str, Any] = {}
    for column, value in op.values.items():
        if column in plan.references:
            ref[column] = None if value in (None, "") else canonical_sfid(pg_text(str(value)))
        else:
            row[column] = json_value(value)
    return {"row": row, "ref": ref}


def sfids_by_table(ops: Iterable[Op], plans: Mapping[str, ObjectPlan]) -> dict[str, list[str]]:
    """The 18-character Salesforce ids the ops name, per object whose table holds them: each op's own sfid
    (its object) and its reference values (the referenced object). The sink rewrites a stored 15-character
    form of these ids first, so that every comparison in SQL is a plain equality."""
    out: dict[str, set[str]] = {}
    for op in ops:
        plan = plans.get(op.object)
        if plan is None:
            continue
        if op.sfid and is_sfid(op.sfid):
            out.setdefault(op.object, set()).add(op.sfid)
        for column, target in plan.references.items():
            value = op.values.get(column)
            sfid = canonical_sfid(str(value)) if value not in (None, "") else None
            if sfid and is_sfid(sfid) and target in plans:
                out.setdefault(target, set()).add(sfid)
    return {name: sorted(ids) for name, ids in out.items()}
