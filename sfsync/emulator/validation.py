"""Custom validation rules: Salesforce's per-record validation rules (``FIELD_CUSTOM_VALIDATION_EXCEPTION``).

A :class:`ValidationRule` names an object and one of its fields, and a condition on the value that field
has *after* the write (the merged record on update): ``equals`` (the value coerced like a request value;
``null`` or ``""`` match a blank field) or ``regex`` (searched in the text of a non-null value; anchor
with ``^…$`` for a whole match). The store evaluates the rules of the record's object on every insert and
update (REST, upsert, sObject Collections, and ``/__emulator/seed``; not on undelete), after the system
checks (required fields, references) and before the unique-index check, and raises the rule's error for
that record only. Rules are kept in insertion order; the first one that matches wins.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from sfsync.emulator.errors import SfError
from sfsync.emulator.schema import ObjectDef, Schema

DEFAULT_CODE = "FIELD_CUSTOM_VALIDATION_EXCEPTION"
_UNSET: Any = object()


class RuleSpecError(ValueError):
    """A rule that cannot be added (unknown object/field, bad regex, bad value)."""


@dataclass
class ValidationRule:
    """One validation rule (see module docstring); ``object``/``field`` are canonical API names."""

    id: int
    object: str
    field: str
    equals: Any = _UNSET
    regex: str | None = None
    error_code: str = DEFAULT_CODE
    message: str | None = None
    fields: list[str] | None = None
    fired: int = 0
    _pattern: re.Pattern[str] | None = dc_field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.regex) if self.regex is not None else None
        if self.message is None:
            self.message = f"Validation rule failed: {self.object}.{self.field}"
        if self.fields is None:
            self.fields = [self.field]

    def matches(self, rec: dict[str, Any]) -> bool:
        """True when the record's value of ``field`` meets the condition."""
        value = rec.get(self.field)
        if self._pattern is not None:
            return value is not None and self._pattern.search(_text(value)) is not None
        return bool(value == self.equals)

    def error(self) -> SfError:
        """The error this rule raises for a failing record."""
        return SfError(self.error_code, str(self.message), list(self.fields or []))

    def public(self) -> dict[str, Any]:
        """JSON view for the control API (``equals`` only when the rule has one)."""
        out: dict[str, Any] = {"id": self.id, "object": self.object, "field": self.field}
        if self.equals is not _UNSET:
            out["equals"] = self.equals
        out.update(regex=self.regex, error_code=self.error_code, message=self.message, fields=self.fields,
                   fired=self.fired)
        return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ValidationRules:
    """The active rules, indexed by object name."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._ids = itertools.count(1)
        self.by_object: dict[str, list[ValidationRule]] = {}

    @property
    def rules(self) -> list[ValidationRule]:
        """Every rule, in id order."""
        return sorted((r for rules in self.by_object.values() for r in rules), key=lambda r: r.id)

    def add(self, object: str, field: str, equals: Any = _UNSET, regex: str | None = None,
            error_code: str = DEFAULT_CODE, message: str | None = None, fields: list[str] | None = None
            ) -> ValidationRule:
        """Add a rule; RuleSpecError when the object/field is unknown or the condition is unusable."""
        obj = self.schema.get(object)
        if obj is None:
            raise RuleSpecError(f"unknown object {object!r}")
        fdef = obj.field(field)
        if fdef is None:
            raise RuleSpecError(f"unknown field {field!r} on {obj.name}")
        if fdef.name in obj.compounds:
            raise RuleSpecError(f"{obj.name}.{fdef.name} is a compound field; use one of its components")
        if (equals is _UNSET) == (regex is None):
            raise RuleSpecError("give exactly one of 'equals' and 'regex'")
        if equals is not _UNSET:
            try:
                equals = fdef.coerce(equals)
            except SfError as err:
                raise RuleSpecError(f"'equals' is not a valid {fdef.type} value: {err.message}") from None
        try:
            rule = ValidationRule(id=next(self._ids), object=obj.name, field=fdef.name, equals=equals, regex=regex,
                                  error_code=error_code, message=message, fields=fields)
        except re.error as exc:
            raise RuleSpecError(f"bad regex: {exc}") from None
        self.by_object.setdefault(obj.name, []).append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        """Remove one rule; False if unknown."""
        for rules in self.by_object.values():
            for i, rule in enumerate(rules):
                if rule.id == rule_id:
                    del rules[i]
                    return True
        return False

    def clear(self) -> None:
        """Remove every rule."""
        self.by_object.clear()

    def check(self, obj: ObjectDef, rec: dict[str, Any]) -> None:
        """Raise the error of the first rule of ``obj`` that ``rec`` (the record as it would be saved) fails."""
        rules = self.by_object.get(obj.name)
        if not rules:
            return
        for rule in rules:
            if rule.matches(rec):
                rule.fired += 1
                raise rule.error()
