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
- :class:`RecordFilters` (``objects.<Name>.filters``) says which records sync: its
  conditions are compiled here (:mod:`sfsync.filters`), so a bad one is reported
  with its key path and column; the language and its evaluation live there.
- :class:`SyncStateColumns` / :class:`SyncMetadata` (``sync_state``, ``sync_metadata``) name the local
  columns and the Salesforce field sfsync keeps its own sync state in; never mapped fields.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from sfsync.config._base import _SF_NAME, SfName, SqlIdentifier, _KeyError, _Strict
from sfsync.filters import Exclusions, compile_filter, normalize_domain


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


def _field_or_path(v: str) -> str:
    """A Salesforce field API name, or a one-level parent path ``Relationship.Field`` (``Owner.Name``)."""
    parts = v.split(".")
    if len(parts) > 2:
        raise ValueError("a parent path has one level: Relationship.Field (e.g. Owner.Name)")
    if not all(_SF_NAME.match(p) for p in parts):
        raise ValueError("must be a Salesforce API name (letters, digits, '_', starting with a letter), or a "
                         "parent path Relationship.Field (e.g. Owner.Name)")
    return v


#: a field API name or a parent path (``Owner.Name``): checked by :func:`_field_or_path`
SfFieldPath = Annotated[str, AfterValidator(_field_or_path)]


class FieldMapping(_Strict):
    """One mapped field: a local column and a Salesforce field.

    ``field`` may be a parent path ``Relationship.Field`` (``Owner.Name``, ``Account.Industry``): the field of
    the record the child's reference points to, read one way into the column (``direction: to_local``
    required; no ``reference``, no ``conflict_policy``). See docs/mapping.md, "Parent fields".
    """

    column: SqlIdentifier
    field: SfFieldPath
    direction: Direction = Direction.BOTH
    value_map: dict[str, str] = Field(default_factory=dict)
    transforms: list[Transform] = Field(default_factory=list)
    reference: str | None = None
    type: FieldType | None = None
    #: overrides the object's ``conflict_policy`` for this field (``both`` fields only)
    conflict_policy: ConflictPolicy | None = None

    @property
    def is_parent_path(self) -> bool:
        """True for a parent path (``Owner.Name``)."""
        return "." in self.field

    @model_validator(mode="after")
    def _parent_path(self) -> Self:
        if self.is_parent_path:
            if self.direction is not Direction.TO_LOCAL:
                raise _KeyError("direction", f"{self.field} is a parent field: it is read from Salesforce only; "
                                "set direction: to_local")
            if self.reference is not None:
                raise _KeyError("reference", f"{self.field} is a parent field: it is copied as a value, not "
                                "translated through a link; remove reference")
            if self.conflict_policy is not None:
                raise _KeyError("conflict_policy", f"{self.field} is a parent field (to_local): there is no "
                                "conflict to decide; remove conflict_policy")
        return self

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
    """One field of a first-sync match key: the local column and the Salesforce field compared
    (case- and whitespace-insensitively; see :mod:`producers.firstsync.matching`)."""

    column: SqlIdentifier
    field: SfName


_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class RecordFilters(_Strict):
    """Which records of one object sync (empty: every record). See :mod:`sfsync.filters` for the language.

    ``to_local`` judges Salesforce records by Salesforce field names, ``to_salesforce`` local rows by column
    names; the exclusion lists apply both ways. A record kept out is counted as filtered, never silently
    dropped; a linked record that stops matching is left alone on the other side (its later changes stop
    flowing; nothing is deleted or unlinked).
    """

    to_local: str | None = None
    to_salesforce: str | None = None
    email_field: SfName | None = None
    exclude_emails: list[str] = Field(default_factory=list)
    exclude_domains: list[str] = Field(default_factory=list)
    exclude_ids: list[str] = Field(default_factory=list)

    @field_validator("to_local", "to_salesforce")
    @classmethod
    def _condition(cls, v: str | None) -> str | None:
        if v is not None:
            compile_filter(v)  # FilterSyntaxError is a ValueError: reported at this key with its column
        return v

    @field_validator("exclude_emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        for i, address in enumerate(v):
            local, at, domain = address.strip().rpartition("@")
            if not at or not local or not _DOMAIN.match(normalize_domain(domain)):
                raise ValueError(f"item {i} is not an email address")
        return v

    @field_validator("exclude_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        for i, domain in enumerate(v):
            if not _DOMAIN.match(normalize_domain(domain)):
                raise ValueError(f"item {i} is not a domain name (example.org)")
        return v

    @field_validator("exclude_ids")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        for i, value in enumerate(v):
            if not str(value).strip():
                raise ValueError(f"item {i} is empty")
        return v

    @property
    def empty(self) -> bool:
        return not (self.to_local or self.to_salesforce or self.exclude_emails or self.exclude_domains
                    or self.exclude_ids)

    @property
    def exclusions(self) -> Exclusions:
        return Exclusions.of(self.exclude_emails, self.exclude_domains, self.exclude_ids)

    def email_key(self, obj: ObjectMapping) -> FieldMapping | None:
        """The mapped field holding the email address the exclusion lists test: ``email_field``, else a
        mapped field named ``Email``; ``None`` when there is none."""
        wanted = self.email_field or "Email"
        return next((f for f in obj.fields if f.field.lower() == wanted.lower()), None)


class SyncStateColumns(_Strict):
    """``objects.<Name>.sync_state``: columns of the local table that show the record's sync state (issue 12).

    Written by sfsync only (the PostgreSQL sink's state follower, :mod:`consumers.postgres.syncstate`),
    as uncaptured sfsync writes: never outbound changes. ``status_column`` gets the latest state of either
    direction (``success``, ``failed``, ``in_queue``, ...), ``status_at_column`` that state's time: it is
    the ordering guard (a state older than the one shown never replaces it, across directions, replicas and
    restarts), so it is required. ``error_column`` (the last error, trimmed to ``error_max_length``; null on
    success) and ``synced_at_column`` (time of the last successful sync, either direction) may be null to
    leave them out.
    """

    status_column: SqlIdentifier = "sync_status"
    status_at_column: SqlIdentifier = "sync_status_at"
    error_column: SqlIdentifier | None = "sync_error"
    synced_at_column: SqlIdentifier | None = "synced_at"
    error_max_length: int = Field(default=1000, ge=16)

    @property
    def columns(self) -> dict[str, str]:
        """Key name -> column, for the ones in use."""
        found = {"status_column": self.status_column, "status_at_column": self.status_at_column,
                 "error_column": self.error_column, "synced_at_column": self.synced_at_column}
        return {k: v for k, v in found.items() if v is not None}


class SyncMetadata(_Strict):
    """``objects.<Name>.sync_metadata``: a Salesforce field that receives the time of sfsync's last successful
    write of the record (issue 13). The Salesforce sink adds it to every create/update it sends (the same
    call, no extra API call); it must not be a mapped field, so its CDC echo never flows back as a change.
    The local counterpart is ``sync_state.synced_at_column``."""

    salesforce_field: SfName


class ObjectMapping(_Strict):
    """How one Salesforce object maps onto one local table."""

    table: SqlIdentifier
    local_key: SqlIdentifier = "id"
    sfid_column: SqlIdentifier = "sfid"
    external_id_field: SfName = "Local_Id__c"
    match_key: list[MatchKey] | None = None
    delete_policy: DeletePolicy = DeletePolicy.PROPAGATE
    conflict_policy: ConflictPolicy = ConflictPolicy.LAST_WRITER_WINS
    fields: list[FieldMapping] = Field(min_length=1)
    filters: RecordFilters = Field(default_factory=lambda: RecordFilters())
    sync_state: SyncStateColumns | None = None
    sync_metadata: SyncMetadata | None = None

    @field_validator("match_key", mode="before")
    @classmethod
    def _match_key_list(cls, v: object) -> object:
        """One ``{column, field}`` or a list of them (a key of several fields)."""
        return [v] if isinstance(v, dict) else v

    @field_validator("match_key")
    @classmethod
    def _match_key(cls, v: list[MatchKey] | None) -> list[MatchKey] | None:
        if v is not None:
            if not v:
                raise ValueError("is empty: name at least one {column, field} pair, or remove the key")
            for what in ("column", "field"):
                names = [getattr(k, what) for k in v]
                if len(set(names)) != len(names):
                    raise ValueError(f"names the same {what} twice")
        return v

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
        self._check_filters()
        self._check_sync_fields(seen_cols, seen_fields)
        return self

    def _check_sync_fields(self, mapped_columns: set[str], mapped_fields: set[str]) -> None:
        """Sync-state columns are distinct, not keys and not mapped (sfsync writes them, they never sync);
        the metadata field is not mapped and not the external id (its echo must not flow back)."""
        if self.sync_state is not None:
            seen: dict[str, str] = {}
            for key, column in self.sync_state.columns.items():
                where = f"sync_state.{key}"
                if column in (self.local_key, self.sfid_column) or column in mapped_columns:
                    raise _KeyError(where, f"column {column!r} is mapped (or a key); sync-state columns are "
                                    "written by sfsync only and never synced")
                if column in seen:
                    raise _KeyError(where, f"column {column!r} is also sync_state.{seen[column]}")
                seen[column] = key
        if self.sync_metadata is not None:
            name = self.sync_metadata.salesforce_field
            if name.lower() in {f.lower() for f in mapped_fields} | {self.external_id_field.lower(), "id"}:
                raise _KeyError("sync_metadata.salesforce_field", f"field {name!r} is mapped (or a key); the sync "
                                "time field is written by sfsync only and never synced")

    def _check_filters(self) -> None:
        """Outbound conditions may read only what the capture trigger carries (mapped columns, the local key
        and the sfid column); the exclusion lists by email need a mapped email field."""
        flt = self.filters
        if flt.to_salesforce is not None:
            carried = {f.column for f in self.fields} | {self.local_key, self.sfid_column}
            for name in sorted(compile_filter(flt.to_salesforce).names - carried):
                raise _KeyError("filters.to_salesforce", f"names column {name!r}, which is not mapped (only mapped "
                                "columns, the local key and the sfid column are captured)")
        if (flt.exclude_emails or flt.exclude_domains) and flt.email_key(self) is None:
            if flt.email_field is not None:
                raise _KeyError("filters.email_field", f"field {flt.email_field!r} is not mapped")
            raise _KeyError("filters.email_field", "is required with exclude_emails/exclude_domains "
                            "(no mapped field is named Email)")


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
