"""The mapping language: which Salesforce objects sync with which local tables, field by field.

Contract:
- An :class:`ObjectMapping` (one ``objects.<ApiName>`` entry) names a table, its
  key columns, the Salesforce external-id field, the delete and conflict
  policies, and at least one :class:`FieldMapping` (column, field, direction,
  value map, transforms, reference, local type).
- Every table/column is a plain SQL identifier and every object/field a
  Salesforce API name, checked here; within one object no column or field is
  mapped twice, and the key and sfid columns are never mapped explicitly.
- Rules that span objects (:func:`check_object_names`, :func:`check_references`)
  are defined here and run by the root model, which owns the ``objects`` key.
- Only the vocabulary is declared here (e.g. :class:`Transform`,
  :class:`FieldType`); applying it to values is the processor's job.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, field_validator, model_validator

from sfsync.config._base import _SF_NAME, SfName, SqlIdentifier, _KeyError, _Strict


class Direction(StrEnum):
    """Which way a mapped field flows."""

    BOTH = "both"
    TO_SALESFORCE = "to_salesforce"
    TO_LOCAL = "to_local"


class DeletePolicy(StrEnum):
    """What a delete on one side does to the other (DESIGN.md, Identity and linking)."""

    PROPAGATE = "propagate"
    UNLINK = "unlink"
    IGNORE = "ignore"


class ConflictPolicy(StrEnum):
    """Who wins when both sides changed a bidirectional field."""

    SALESFORCE_WINS = "salesforce_wins"
    LOCAL_WINS = "local_wins"
    LAST_WRITER_WINS = "last_writer_wins"
    FILL_EMPTY = "fill_empty"


class Transform(StrEnum):
    """Value transforms a field may apply, in both directions where meaningful."""

    STRIP = "strip"
    LOWER = "lower"
    UPPER = "upper"
    EMPTY_AS_NULL = "empty_as_null"


class FieldType(StrEnum):
    """Type a mapped value is coerced to on the local side (``None``: passed through as typed by the source)."""

    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"


class FieldMapping(_Strict):
    """One mapped field: a local column and a Salesforce field."""

    column: SqlIdentifier
    field: SfName
    direction: Direction = Direction.BOTH
    value_map: dict[str, str] = Field(default_factory=dict)
    transforms: list[Transform] = Field(default_factory=list)
    reference: str | None = None
    type: FieldType | None = None

    @field_validator("value_map")
    @classmethod
    def _value_map(cls, v: dict[str, str]) -> dict[str, str]:
        inverse: dict[str, str] = {}
        for local, remote in v.items():
            if remote in inverse:
                raise ValueError(f"maps two local values to the Salesforce value {remote!r}; it cannot be reversed")
            inverse[remote] = local
        return v


class MatchKey(_Strict):
    column: SqlIdentifier
    field: SfName


class ObjectMapping(_Strict):
    """How one Salesforce object maps onto one local table."""

    table: SqlIdentifier
    local_key: SqlIdentifier = "id"
    sfid_column: SqlIdentifier = "sfid"
    external_id_field: SfName = "Local_Id__c"
    match_key: MatchKey | None = None
    delete_policy: DeletePolicy = DeletePolicy.PROPAGATE
    conflict_policy: ConflictPolicy = ConflictPolicy.LAST_WRITER_WINS
    fields: list[FieldMapping] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen_cols: set[str] = set()
        seen_fields: set[str] = set()
        for i, f in enumerate(self.fields):
            if f.column in (self.local_key, self.sfid_column):
                raise _KeyError(
                    f"fields[{i}].column", f"{f.column!r} is the local key or sfid column; it is synced implicitly"
                )
            if f.column in seen_cols:
                raise _KeyError(f"fields[{i}].column", f"column {f.column!r} is mapped twice")
            if f.field in seen_fields:
                raise _KeyError(f"fields[{i}].field", f"field {f.field!r} is mapped twice")
            seen_cols.add(f.column)
            seen_fields.add(f.field)
        return self


def check_object_names(objects: dict[str, ObjectMapping]) -> dict[str, ObjectMapping]:
    """The ``objects`` mapping if every key is an object API name and no two objects share a table.

    Raises :class:`ValueError` (reported at ``objects``) otherwise.
    """
    tables: dict[str, str] = {}
    for name, obj in objects.items():
        if not _SF_NAME.match(name):
            raise ValueError(f"{name!r} is not a Salesforce object API name")
        if obj.table in tables:
            raise ValueError(f"{name} and {tables[obj.table]} both map table {obj.table!r}")
        tables[obj.table] = name
    return objects


def check_references(objects: dict[str, ObjectMapping]) -> None:
    """Every ``reference`` names a mapped object.

    Raises :class:`_KeyError` keyed from the root model
    (``objects.<Name>.fields[<i>].reference``) for the first one that does not.
    """
    for name, obj in objects.items():
        for i, f in enumerate(obj.fields):
            if f.reference is not None and f.reference not in objects:
                raise _KeyError(
                    f"objects.{name}.fields[{i}].reference",
                    f"names {f.reference!r}, which is not a mapped object",
                )
