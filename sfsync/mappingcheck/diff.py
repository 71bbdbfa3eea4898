"""``sfsync mapping diff OLD NEW``: what a mapping change does, and what a re-sync would have to touch.

Why: sfsync syncs *changes*. A mapping change only applies to records that change after it: a newly mapped
field holds nothing on the other side until each record changes again, a filter that lets more records
through does not bring over the ones it kept out before. Before rolling out a mapping change an operator
needs to know which objects, which directions and how many records need a re-sync, and which changes
touch nothing at all (a removed field or a narrowed direction simply stops syncing).

Contract:
- :func:`diff_mappings` compares the ``objects`` of two loaded configs (plus ``postgres.schema``, which says
  where their tables are) and returns a :class:`MappingDiff`: per object that differs an
  :class:`ObjectDiff`, per difference a :class:`Change` with its key path (fields are named by their
  Salesforce field, ``objects.Contact.fields[Email].direction``, since their positions may differ), a
  summary, the old and new values (JSON-able) and what a re-sync would touch per :class:`Side`
  (:class:`Scope` ``all`` records, or only those that now ``match`` a filter), with a short why.
- Rules: a newly mapped field (or column, table, object) or a direction that now includes a side needs every
  record of the object re-synced in that direction; a value rule (value map, transforms, type, reference)
  needs one in the field's directions so values synced before follow the new rule; a new key field, local
  key or sfid column needs one to fill it; a removed field or object, a narrowed direction, a conflict or
  delete policy touches nothing; a filter change lets records start or stop matching: those that start
  need a re-sync, those that stop are left alone (see docs/mapping.md, Record filters).
- Field order, comments and everything outside the mapping are not differences.
- No I/O here: counting is :mod:`sfsync.mappingcheck.counts`, which returns :class:`Count` values that
  :func:`diff_lines` and :func:`diff_json` show next to each object's re-sync.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sfsync.config import Direction, FieldMapping, ObjectMapping, SfsyncConfig


class Side(StrEnum):
    """A re-sync direction: ``inbound`` reads Salesforce records into PostgreSQL, ``outbound`` the reverse."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Scope(StrEnum):
    """How many records of a side a re-sync touches."""

    ALL = "all"
    #: only those that now match a filter they did not match before (at most all)
    MATCHING = "matching"


class ChangeKind(StrEnum):
    OBJECT_ADDED = "object_added"
    OBJECT_REMOVED = "object_removed"
    TABLE = "table"
    FIELD_ADDED = "field_added"
    FIELD_REMOVED = "field_removed"
    COLUMN = "column"
    DIRECTION = "direction"
    CONFLICT_POLICY = "conflict_policy"
    VALUE_MAP = "value_map"
    TRANSFORMS = "transforms"
    TYPE = "type"
    REFERENCE = "reference"
    KEY = "key"
    FILTER = "filter"
    DELETE_POLICY = "delete_policy"


class ObjectStatus(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference of one object and what a re-sync would touch because of it.

    ``inbound`` / ``outbound`` are ``None`` when that side needs no re-sync; ``note`` says why (or what
    happens instead, e.g. ``outbound stops``).
    """

    path: str
    kind: ChangeKind
    summary: str
    old: Any
    new: Any
    inbound: Scope | None = None
    outbound: Scope | None = None
    note: str = ""

    @property
    def resync(self) -> dict[Side, Scope]:
        return {side: scope for side, scope in ((Side.INBOUND, self.inbound), (Side.OUTBOUND, self.outbound))
                if scope is not None}


@dataclass(frozen=True, slots=True)
class ObjectDiff:
    """The differences of one ``objects.<Name>`` entry; ``schema``/``table``: NEW's (OLD's when removed)."""

    name: str
    status: ObjectStatus
    schema: str
    table: str
    changes: tuple[Change, ...]

    @property
    def path(self) -> str:
        return f"objects.{self.name}"

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def resync(self) -> dict[Side, Scope]:
        """Per side, the widest scope any change needs (``all`` beats ``matching``)."""
        out: dict[Side, Scope] = {}
        for change in self.changes:
            for side, scope in change.resync.items():
                if out.get(side) is not Scope.ALL:
                    out[side] = scope
        return {side: out[side] for side in Side if side in out}


@dataclass(frozen=True, slots=True)
class ResyncTarget:
    """One object and side a re-sync touches: what :mod:`sfsync.mappingcheck.counts` counts."""

    object: str
    side: Side
    scope: Scope
    schema: str
    table: str


@dataclass(frozen=True, slots=True)
class Count:
    """How many records a re-sync of ``object`` on ``side`` touches; ``records`` ``None``: not counted, ``reason``
    says why. For scope ``matching`` it is an upper bound (every record of the object or table)."""

    object: str
    side: Side
    records: int | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class MappingDiff:
    """Every object whose mapping differs (NEW's order, then objects only OLD maps)."""

    objects: tuple[ObjectDiff, ...]

    @property
    def changed(self) -> bool:
        return bool(self.objects)

    @property
    def change_count(self) -> int:
        return sum(len(o.changes) for o in self.objects)

    def targets(self) -> list[ResyncTarget]:
        """Each (object, side) a re-sync would touch."""
        return [ResyncTarget(o.name, side, scope, o.schema, o.table)
                for o in self.objects for side, scope in o.resync.items()]


# ------------------------------------------------------------------ the comparison


#: how a field without a conflict_policy of its own is shown: it follows the object's
OBJECTS_POLICY = "(the object's)"


def _sides(direction: Direction) -> frozenset[Side]:
    if direction is Direction.BOTH:
        return frozenset(Side)
    return frozenset({Side.INBOUND if direction is Direction.TO_LOCAL else Side.OUTBOUND})


def _object_sides(obj: ObjectMapping) -> frozenset[Side]:
    """The directions the object syncs at all: those of its fields."""
    return frozenset(side for f in obj.fields for side in _sides(f.direction))


def _change(path: str, kind: ChangeKind, summary: str, old: Any, new: Any, sides: Iterable[Side] = (),
            note: str = "", scope: Scope = Scope.ALL) -> Change:
    wanted = frozenset(sides)
    return Change(path, kind, summary, _jsonable(old), _jsonable(new),
                  inbound=scope if Side.INBOUND in wanted else None,
                  outbound=scope if Side.OUTBOUND in wanted else None, note=note)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, (list, tuple, frozenset, set)):
        items = [_jsonable(v) for v in value]
        return sorted(items) if isinstance(value, (frozenset, set)) else items
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    """A value as one short piece of text (``(none)`` for unset)."""
    if value is None:
        return "(none)"
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _quoted(condition: str | None) -> str:
    return json.dumps(condition) if condition is not None else "(none)"


def _arrow(old: Any, new: Any) -> str:
    return f"{_show(old)} -> {_show(new)}"


def _stopped(lost: Iterable[Side]) -> str:
    return "; ".join(f"{side.value} stops" for side in Side if side in frozenset(lost))


def diff_mappings(old: SfsyncConfig, new: SfsyncConfig) -> MappingDiff:
    """What changes when the mapping of ``old`` is replaced by that of ``new`` (see the module docstring)."""
    old_schema, new_schema = old.postgres.schema_name, new.postgres.schema_name
    names = [*new.objects, *(n for n in old.objects if n not in new.objects)]
    found: list[ObjectDiff] = []
    for name in names:
        before, after = old.objects.get(name), new.objects.get(name)
        if before is None:
            assert after is not None
            found.append(ObjectDiff(name, ObjectStatus.ADDED, new_schema, after.table,
                                    (_object_added(name, after, new_schema),)))
        elif after is None:
            found.append(ObjectDiff(name, ObjectStatus.REMOVED, old_schema, before.table,
                                    (_object_removed(name, before, old_schema),)))
        else:
            changes = _object_changes(name, before, after, old_schema, new_schema)
            if changes:
                found.append(ObjectDiff(name, ObjectStatus.CHANGED, new_schema, after.table, tuple(changes)))
    return MappingDiff(tuple(found))


def _object_added(name: str, obj: ObjectMapping, schema: str) -> Change:
    fields = ", ".join(f"{f.field} ({f.column}, {f.direction.value})" for f in obj.fields)
    return _change(f"objects.{name}", ChangeKind.OBJECT_ADDED, f"object added, table {schema}.{obj.table}, "
                   f"{len(obj.fields)} field{'s' if len(obj.fields) != 1 else ''}: {fields}", None, obj,
                   _object_sides(obj), "newly mapped")


def _object_removed(name: str, obj: ObjectMapping, schema: str) -> Change:
    return _change(f"objects.{name}", ChangeKind.OBJECT_REMOVED, f"object removed (table {schema}.{obj.table})",
                   obj, None, (), "it stops syncing; both sides keep their records and values")


def _object_changes(name: str, a: ObjectMapping, b: ObjectMapping, old_schema: str, new_schema: str) -> list[Change]:
    path = f"objects.{name}"
    syncs = _object_sides(b)
    out: list[Change] = []
    old_table, new_table = f"{old_schema}.{a.table}", f"{new_schema}.{b.table}"
    if old_table != new_table:
        out.append(_change(f"{path}.table", ChangeKind.TABLE, _arrow(old_table, new_table), old_table,
                           new_table, syncs, f"{new_table} is another table: none of its rows is synced yet; "
                           f"{old_table} stops syncing"))
    out.extend(_key_changes(path, a, b, syncs))
    if a.delete_policy != b.delete_policy:
        out.append(_change(f"{path}.delete_policy", ChangeKind.DELETE_POLICY,
                           _arrow(a.delete_policy, b.delete_policy), a.delete_policy,
                           b.delete_policy, (), "applies to deletes from now on; earlier deletes are not redone"))
    if a.conflict_policy != b.conflict_policy:
        out.append(_change(f"{path}.conflict_policy", ChangeKind.CONFLICT_POLICY,
                           _arrow(a.conflict_policy, b.conflict_policy), a.conflict_policy,
                           b.conflict_policy, (), "decides only concurrent changes from now on (both-way fields "
                           "without a conflict_policy of their own)"))
    out.extend(_field_changes(path, a, b))
    out.extend(_filter_changes(path, a, b, syncs))
    return out


def _key_changes(path: str, a: ObjectMapping, b: ObjectMapping, syncs: frozenset[Side]) -> list[Change]:
    out: list[Change] = []
    outbound = syncs & {Side.OUTBOUND}
    if a.external_id_field != b.external_id_field:
        out.append(_change(f"{path}.external_id_field", ChangeKind.KEY,
                           _arrow(a.external_id_field, b.external_id_field),
                           a.external_id_field, b.external_id_field, outbound,
                           f"{b.external_id_field} holds no local keys yet: outbound writes upsert on it and "
                           "inbound changes read the local key from it" if outbound else
                           "the object syncs nothing outbound: nothing writes the key field"))
    if a.local_key != b.local_key:
        out.append(_change(f"{path}.local_key", ChangeKind.KEY, _arrow(a.local_key, b.local_key),
                           a.local_key, b.local_key, outbound,
                           f"{b.external_id_field} still holds the values of {a.local_key}" if outbound else
                           "the object syncs nothing outbound: nothing writes the key field"))
    if a.sfid_column != b.sfid_column:
        filler = {Side.INBOUND} if Side.INBOUND in syncs else syncs
        out.append(_change(f"{path}.sfid_column", ChangeKind.KEY, _arrow(a.sfid_column, b.sfid_column),
                           a.sfid_column, b.sfid_column, filler,
                           f"{b.sfid_column} holds no Salesforce ids yet: each record re-links by its external id"))
    if a.match_key != b.match_key:
        old_key = ", ".join(f"{k.column} = {k.field}" for k in a.match_key) if a.match_key else None
        new_key = ", ".join(f"{k.column} = {k.field}" for k in b.match_key) if b.match_key else None
        out.append(_change(f"{path}.match_key", ChangeKind.KEY, _arrow(old_key, new_key), a.match_key,
                           b.match_key, (), "the key `sfsync backfill` pairs unlinked records on; linked "
                           "records keep their link"))
    return out


def _field_changes(path: str, a: ObjectMapping, b: ObjectMapping) -> list[Change]:
    before = {f.field: f for f in a.fields}
    after = {f.field: f for f in b.fields}
    out: list[Change] = []
    for f in b.fields:
        at = f"{path}.fields[{f.field}]"
        g = before.get(f.field)
        if g is None:
            out.append(_change(at, ChangeKind.FIELD_ADDED, f"field {f.field} added (column {f.column}, "
                               f"{f.direction.value})", None, f, _sides(f.direction), "newly mapped"))
        else:
            out.extend(_field_attribute_changes(at, g, f))
    for g in a.fields:
        if g.field not in after:
            out.append(_change(f"{path}.fields[{g.field}]", ChangeKind.FIELD_REMOVED,
                               f"field {g.field} removed (column {g.column})", g, None, (),
                               "it stops syncing; both sides keep their values"))
    return out


def _field_attribute_changes(at: str, g: FieldMapping, f: FieldMapping) -> list[Change]:
    out: list[Change] = []
    flows = _sides(f.direction)
    if g.column != f.column:
        out.append(_change(f"{at}.column", ChangeKind.COLUMN, _arrow(g.column, f.column), g.column, f.column,
                           flows, f"{f.column} is newly mapped to {f.field}; {g.column} stops syncing"))
    if g.direction != f.direction:
        gained, lost = flows - _sides(g.direction), _sides(g.direction) - flows
        now = " and ".join(side.value for side in Side if side in gained)
        why = "; ".join(part for part in (f"the field now flows {now}" if gained else "", _stopped(lost)) if part)
        out.append(_change(f"{at}.direction", ChangeKind.DIRECTION, _arrow(g.direction, f.direction),
                           g.direction, f.direction, gained, why))
    if g.conflict_policy != f.conflict_policy:
        out.append(_change(f"{at}.conflict_policy", ChangeKind.CONFLICT_POLICY,
                           _arrow(g.conflict_policy or OBJECTS_POLICY,
                                  f.conflict_policy or OBJECTS_POLICY), g.conflict_policy, f.conflict_policy,
                           (), "decides only concurrent changes of this field from now on"))
    if g.value_map != f.value_map:
        out.append(_change(f"{at}.value_map", ChangeKind.VALUE_MAP, _arrow(g.value_map, f.value_map),
                           g.value_map, f.value_map, flows, "values synced before were mapped by the old value map"))
    if g.transforms != f.transforms:
        out.append(_change(f"{at}.transforms", ChangeKind.TRANSFORMS, _arrow(g.transforms, f.transforms),
                           g.transforms, f.transforms, flows, "values synced before went through the old transforms"))
    if g.type != f.type:
        inbound = flows & {Side.INBOUND}
        out.append(_change(f"{at}.type", ChangeKind.TYPE, _arrow(g.type, f.type), g.type, f.type, inbound,
                           "values synced in before were coerced to the old type" if inbound else
                           "type applies to inbound values and the field does not flow inbound"))
    if g.reference != f.reference:
        out.append(_change(f"{at}.reference", ChangeKind.REFERENCE, _arrow(g.reference, f.reference),
                           g.reference, f.reference, flows, "ids synced before were translated through the old link"))
    return out


def _filter_effect(start: bool, stop: bool, sides: frozenset[Side], scope_name: str) -> tuple[frozenset[Side], str]:
    """Records that start matching need a re-sync on ``sides``; those that stop are left alone."""
    left_alone = "those that stop are left alone: nothing is deleted or unlinked, their later changes stop flowing"
    if start and not sides:
        return frozenset(), f"records may start matching, but the object syncs nothing {scope_name}"
    if start and stop:
        return sides, f"records may start or stop matching; those that start need it, {left_alone}"
    if start:
        return sides, "records may start matching: they were never synced while filtered out"
    return frozenset(), f"records may stop matching; {left_alone}"


def _filter_changes(path: str, a: ObjectMapping, b: ObjectMapping, syncs: frozenset[Side]) -> list[Change]:
    fa, fb = a.filters, b.filters
    at = f"{path}.filters"
    out: list[Change] = []
    for key, side in (("to_local", Side.INBOUND), ("to_salesforce", Side.OUTBOUND)):
        x, y = getattr(fa, key), getattr(fb, key)
        if x == y:
            continue
        # a condition removed or changed may let records in; one added or changed may keep records out
        sides, note = _filter_effect(x is not None, y is not None, syncs & {side}, side.value)
        shown = f"{_quoted(x)} -> {_quoted(y)}"
        out.append(_change(f"{at}.{key}", ChangeKind.FILTER, shown, x, y, sides, note, Scope.MATCHING))
    xa, xb = fa.exclusions, fb.exclusions
    for key, old_set, new_set in (("exclude_emails", xa.emails, xb.emails), ("exclude_domains", xa.domains, xb.domains),
                                  ("exclude_ids", xa.ids, xb.ids)):
        if old_set == new_set:
            continue
        added, removed = sorted(new_set - old_set), sorted(old_set - new_set)
        parts = [f"added {', '.join(added)}" if added else "", f"removed {', '.join(removed)}" if removed else ""]
        sides, note = _filter_effect(bool(removed), bool(added), syncs, "either way")
        out.append(_change(f"{at}.{key}", ChangeKind.FILTER, "; ".join(p for p in parts if p),
                           old_set, new_set, sides, note, Scope.MATCHING))
    if fa.email_field != fb.email_field:
        lists = bool(xa.emails or xa.domains or xb.emails or xb.domains)
        sides, note = _filter_effect(lists, lists, syncs, "either way")
        out.append(_change(f"{at}.email_field", ChangeKind.FILTER, _arrow(fa.email_field,
                           fb.email_field), fa.email_field, fb.email_field, sides,
                           note if lists else "no exclusion list reads it", Scope.MATCHING))
    return out


# ------------------------------------------------------------------ showing it


def _touches(o: ObjectDiff, side: Side, scope: Scope) -> str:
    what = f"{o.name} records" if side is Side.INBOUND else f"rows of {o.qualified_table}"
    return f"{side.value}, {'all ' + what if scope is Scope.ALL else what + ' that now match'}"


def _counted(count: Count | None, side: Side, scope: Scope) -> str:
    if count is None:
        return ""
    if count.records is None:
        return f" (not counted: {count.reason})"
    unit = ("record" if side is Side.INBOUND else "row") + ("s" if count.records != 1 else "")
    return f" ({'at most ' if scope is Scope.MATCHING else ''}{count.records} {unit})"


def effect_text(o: ObjectDiff, change: Change) -> str:
    """``re-sync needed: inbound, all Contact records; ... (why)`` or ``nothing to re-sync: why``."""
    touched = [_touches(o, side, scope) for side, scope in change.resync.items()]
    if touched:
        return "re-sync needed: " + "; ".join(touched) + (f" ({change.note})" if change.note else "")
    return "nothing to re-sync" + (f": {change.note}" if change.note else "")


def _count_index(counts: Iterable[Count] | None) -> dict[tuple[str, Side], Count] | None:
    return None if counts is None else {(c.object, c.side): c for c in counts}


def resync_text(o: ObjectDiff, counts: Iterable[Count] | None = None) -> str:
    """The object's whole re-sync, with the counts when there are any."""
    index = _count_index(counts)
    needed = o.resync
    if not needed:
        return "nothing"
    return "; ".join(_touches(o, side, scope) + _counted(index.get((o.name, side)) if index is not None else None,
                                                         side, scope)
                     for side, scope in needed.items())


def summary_line(diff: MappingDiff) -> str:
    """The last line: how much differs and which objects need a re-sync in which direction."""
    if not diff.changed:
        return "no differences"
    n, m = len(diff.objects), diff.change_count
    head = f"{n} object{'s' if n != 1 else ''} differ{'s' if n == 1 else ''}, {m} change{'s' if m != 1 else ''}"
    per_side = [(side, [o.name for o in diff.objects if side in o.resync]) for side in Side]
    parts = [f"{side.value} for {', '.join(names)}" for side, names in per_side if names]
    return head + ("; re-sync needed: " + "; ".join(parts) if parts else "; nothing to re-sync")


def diff_lines(diff: MappingDiff, counts: Iterable[Count] | None = None) -> list[str]:
    """The text form: per object a heading, each change (key path: summary) with its effect indented below,
    the object's whole re-sync (with counts when given), then :func:`summary_line`."""
    counts = None if counts is None else list(counts)
    lines: list[str] = []
    for o in diff.objects:
        lines.append(f"{o.path} (table {o.qualified_table}): {o.status.value}")
        for change in o.changes:
            lines.append(f"  {change.path}: {change.summary}")
            lines.append(f"    {effect_text(o, change)}")
        lines.append(f"  re-sync {o.name}: {resync_text(o, counts)}")
    lines.append(summary_line(diff))
    return lines


def diff_json(diff: MappingDiff, counts: Iterable[Count] | None = None) -> dict[str, Any]:
    """The same as :func:`diff_lines`, as JSON-able data (``records`` / ``not_counted`` only with counts)."""
    index = _count_index(counts)

    def side_json(o: ObjectDiff, side: Side, scope: Scope) -> dict[str, Any]:
        entry: dict[str, Any] = {"scope": scope.value, "touches": _touches(o, side, scope).split(", ", 1)[1]}
        if index is not None:
            count = index.get((o.name, side))
            entry["records"] = count.records if count is not None else None
            entry["not_counted"] = count.reason if count is not None else None
        return entry

    return {
        "differences": diff.changed,
        "objects": [{
            "object": o.name,
            "status": o.status.value,
            "table": o.qualified_table,
            "changes": [{
                "path": c.path, "kind": c.kind.value, "summary": c.summary, "old": c.old, "new": c.new,
                "resync": {side.value: scope.value for side, scope in c.resync.items()},
                "note": c.note, "effect": effect_text(o, c),
            } for c in o.changes],
            "resync": {side.value: side_json(o, side, scope) for side, scope in o.resync.items()},
        } for o in diff.objects],
        "summary": summary_line(diff),
    }
