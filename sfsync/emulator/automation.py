"""Field updates: Salesforce automation that changes a record as part of a save (a workflow field update, a
record-triggered flow, a trigger).

A :class:`FieldUpdate` names an object, a condition on the value one field has after the write (``regex``,
searched in its text) and values to set. The store applies the updates of the record's object on every
insert and update (REST, upsert, sObject Collections; not ``/__emulator/seed``), after the request's values
are merged and before the validation rules; the fields an update sets count as changed by that save, so its
CDC event carries them (with the writer's ``changeOrigin``, as Salesforce does for automation run inside the
writer's transaction). Each update runs at most once per save, in insertion order.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from sfsync.emulator.errors import SfError
from sfsync.emulator.schema import ObjectDef, Schema
from sfsync.emulator.validation import RuleSpecError


@dataclass
class FieldUpdate:
    """One field update (see module docstring)."""

    id: int
    object: str
    when_field: str
    regex: str
    set: dict[str, Any]
    fired: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.regex)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "when_field": self.when_field, "regex": self.regex,
                "set": dict(self.set), "fired": self.fired}


class FieldUpdates:
    """The active field updates, indexed by object name."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._ids = itertools.count(1)
        self.by_object: dict[str, list[FieldUpdate]] = {}

    @property
    def updates(self) -> list[FieldUpdate]:
        return sorted((u for us in self.by_object.values() for u in us), key=lambda u: u.id)

    def add(self, object: str, when_field: str, regex: str, set: dict[str, Any]) -> FieldUpdate:
        """Add an update; RuleSpecError for an unknown object or field, a bad regex or a bad value."""
        obj = self.schema.get(object)
        if obj is None:
            raise RuleSpecError(f"unknown object {object!r}")
        when = obj.field(when_field)
        if when is None:
            raise RuleSpecError(f"unknown field {when_field!r} on {obj.name}")
        values: dict[str, Any] = {}
        for name, value in set.items():
            fdef = obj.field(name)
            if fdef is None:
                raise RuleSpecError(f"unknown field {name!r} on {obj.name}")
            try:
                values[fdef.name] = fdef.coerce(value) if value is not None else None
            except SfError as err:
                raise RuleSpecError(f"{obj.name}.{fdef.name}: {err.message}") from None
        try:
            update = FieldUpdate(next(self._ids), obj.name, when.name, regex, values)
        except re.error as exc:
            raise RuleSpecError(f"bad regex: {exc}") from None
        self.by_object.setdefault(obj.name, []).append(update)
        return update

    def clear(self) -> None:
        self.by_object.clear()

    def apply(self, obj: ObjectDef, rec: dict[str, Any]) -> list[str]:
        """Apply the matching updates of ``obj`` to ``rec`` (the record as it would be saved); the fields set."""
        changed: list[str] = []
        for update in self.by_object.get(obj.name, ()):
            value = rec.get(update.when_field)
            if value is None or update._pattern.search(str(value)) is None:
                continue
            update.fired += 1
            rec.update(update.set)
            changed.extend(n for n in update.set if n not in changed)
        return changed
