"""The mapping check itself: pure functions over the org's describe results and the local table definitions.

Why: a mapping that validates as YAML can still fail record by record once it meets the org (a read-only
target field, a multi-select picklist, a field someone deleted) or the database (a text column feeding a
number field). This module finds every such problem before a record moves.

Contract:
- Inputs are plain data: :class:`SfObject` (built from one ``sobjects/<Name>/describe`` document by
  :meth:`SfObject.from_describe`) per mapped object, :class:`Table` (built from ``information_schema``
  rows) per mapped table; ``None`` for an object or table that does not exist; a whole side ``None`` when it
  was not checked (unreachable), which skips every rule that needs it.
- :func:`check_mapping` returns a :class:`Report` listing every problem at once, each a :class:`Problem`
  naming the mapping entry (``objects.Contact.fields[4]``), the Salesforce field (``Contact.Secret__c``)
  and the reason. Errors make ``mapping check`` exit 2 and every role refuse to start; warnings are shown
  and do not block.
- No I/O here (the adapters are in :mod:`sfsync.mappingcheck.sources`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sfsync.config import Direction, FieldMapping, FieldType, ObjectMapping, Transform
from sfsync.filters import FilterSyntaxError, compile_filter

OUTBOUND = (Direction.BOTH, Direction.TO_SALESFORCE)
INBOUND = (Direction.BOTH, Direction.TO_LOCAL)

#: Salesforce field types sfsync does not sync, and why (the peers' "fields that cannot sync" list).
UNSUPPORTED_TYPES: dict[str, str] = {
    "multipicklist": "a multi-select picklist (';'-joined values) has no column equivalent",
    "address": "an address compound is read-only; map its components (BillingStreet, BillingCity, ...)",
    "location": "a geolocation compound is read-only; map its __Latitude__s / __Longitude__s components",
    "encryptedstring": "encrypted text reads back masked for users without 'View Encrypted Data'",
    "base64": "base64 (binary) content is not carried by change events",
    "anyType": "an anyType field has no fixed type",
    "complexvalue": "a complex value has no column equivalent",
}
RICH_TEXT = "rich text (HTML) would be synced as markup"

#: Transforms that make an otherwise unsupported type syncable (none of today's transforms does).
HANDLED_BY: dict[str, frozenset[Transform]] = {}

#: Salesforce types grouped by the kind of value they carry.
SF_FAMILIES: dict[str, str] = {
    **{t: "text" for t in ("string", "textarea", "email", "phone", "url", "picklist", "multipicklist",
                           "combobox", "encryptedstring", "id", "reference")},
    "int": "integer", "long": "integer",
    "double": "number", "currency": "number", "percent": "number",
    "boolean": "boolean", "date": "date", "datetime": "datetime", "time": "time",
}
#: PostgreSQL ``information_schema.columns.data_type`` (or ``udt_name`` for user-defined types) by family.
PG_FAMILIES: dict[str, str] = {
    "text": "text", "character varying": "text", "character": "text", "citext": "text", "name": "text",
    "smallint": "integer", "integer": "integer", "bigint": "integer",
    "numeric": "number", "real": "number", "double precision": "number", "money": "number",
    "boolean": "boolean", "date": "date",
    "timestamp with time zone": "datetime", "timestamp without time zone": "datetime",
    "time with time zone": "time", "time without time zone": "time",
    "json": "json", "jsonb": "json",
}
#: Which column families a field family may be written into (inbound), and the reverse (outbound).
_INTO_COLUMN: dict[str, frozenset[str]] = {
    "text": frozenset({"text", "json"}),
    "integer": frozenset({"text", "json", "integer", "number"}),
    "number": frozenset({"text", "json", "number"}),
    "boolean": frozenset({"text", "json", "boolean"}),
    "date": frozenset({"text", "json", "date", "datetime"}),
    "datetime": frozenset({"text", "json", "datetime"}),
    "time": frozenset({"text", "json", "time"}),
}
_INTO_FIELD: dict[str, frozenset[str]] = {
    "text": frozenset({"text"}),
    "integer": frozenset({"text", "integer", "number"}),
    "number": frozenset({"text", "number"}),
    "boolean": frozenset({"text", "boolean"}),
    "date": frozenset({"text", "date", "datetime"}),
    "datetime": frozenset({"text", "datetime"}),
    "time": frozenset({"text", "time"}),
}
#: A declared ``type`` makes inbound text explicit: values are coerced to it (a bad one fails the record).
_DECLARED: dict[FieldType, str] = {
    FieldType.STRING: "text", FieldType.INTEGER: "integer", FieldType.DECIMAL: "number",
    FieldType.FLOAT: "number", FieldType.BOOLEAN: "boolean", FieldType.DATE: "date",
    FieldType.DATETIME: "datetime",
}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class SfField:
    """The describe attributes of one Salesforce field the check reads."""

    name: str
    type: str
    length: int = 0
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    picklist_values: tuple[str, ...] = ()
    restricted_picklist: bool = False
    reference_to: tuple[str, ...] = ()
    extra_type_info: str | None = None
    html_formatted: bool = False
    calculated: bool = False
    scale: int = 0
    relationship_name: str | None = None

    @classmethod
    def from_describe(cls, entry: Mapping[str, Any]) -> SfField:
        """One ``fields[]`` entry of a describe (only active picklist values count)."""
        return cls(
            name=str(entry["name"]),
            type=str(entry.get("type") or ""),
            length=int(entry.get("length") or 0),
            createable=bool(entry.get("createable", False)),
            updateable=bool(entry.get("updateable", False)),
            external_id=bool(entry.get("externalId", False)),
            picklist_values=tuple(str(p["value"]) for p in entry.get("picklistValues") or ()
                                  if p.get("active", True)),
            restricted_picklist=bool(entry.get("restrictedPicklist", False)),
            reference_to=tuple(str(r) for r in entry.get("referenceTo") or ()),
            extra_type_info=entry.get("extraTypeInfo"),
            html_formatted=bool(entry.get("htmlFormatted", False)),
            calculated=bool(entry.get("calculated", False)),
            scale=int(entry.get("scale") or 0),
            relationship_name=str(entry["relationshipName"]) if entry.get("relationshipName") else None,
        )

    @property
    def rich_text(self) -> bool:
        return self.type == "textarea" and (self.extra_type_info == "richtextarea" or self.html_formatted)

    @property
    def family(self) -> str | None:
        return SF_FAMILIES.get(self.type)


@dataclass(frozen=True, slots=True)
class SfObject:
    """One Salesforce object as its describe shows it; fields looked up case-insensitively, as Salesforce does."""

    name: str
    fields: dict[str, SfField]

    @classmethod
    def from_describe(cls, doc: Mapping[str, Any]) -> SfObject:
        return cls(str(doc["name"]), {str(f["name"]): SfField.from_describe(f) for f in doc.get("fields") or ()})

    def get(self, name: str) -> SfField | None:
        found = self.fields.get(name)
        if found is not None:
            return found
        lowered = name.lower()
        return next((f for n, f in self.fields.items() if n.lower() == lowered), None)

    def suggest(self, name: str) -> str:
        """`` (did you mean X?)`` for a near miss, else empty."""
        return _did_you_mean(name, self.fields)

    def relationship(self, name: str) -> SfField | None:
        """The reference field whose relationship is ``name`` (``Owner`` -> ``OwnerId``), case-insensitively."""
        lowered = name.lower()
        return next((f for f in self.fields.values()
                     if f.relationship_name is not None and f.relationship_name.lower() == lowered), None)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` when ``name`` nearly matches one of ``known``, else empty."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a local table as ``information_schema.columns`` shows it."""

    name: str
    data_type: str
    max_length: int | None = None
    udt_name: str = ""

    @property
    def family(self) -> str | None:
        return PG_FAMILIES.get(self.data_type) or PG_FAMILIES.get(self.udt_name)

    @property
    def shown_type(self) -> str:
        if self.data_type == "USER-DEFINED":
            return self.udt_name
        return f"{self.data_type}({self.max_length})" if self.max_length else self.data_type


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: dict[str, Column]

    def suggest(self, name: str) -> str:
        return _did_you_mean(name, self.columns)


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: the mapping entry it belongs to, the Salesforce field it is about, why."""

    path: str
    message: str
    sf_field: str | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        about = f" ({self.sf_field})" if self.sf_field else ""
        return f"{self.path}{about}: {self.message}"


@dataclass(frozen=True, slots=True)
class ObjectSummary:
    """One row of the summary table."""

    name: str
    table: str
    fields: int
    to_salesforce: int
    to_local: int
    errors: int
    warnings: int


@dataclass(slots=True)
class Report:
    problems: list[Problem] = field(default_factory=list)
    objects: list[ObjectSummary] = field(default_factory=list)
    #: sides that were not checked and why (``salesforce: cannot reach ...``)
    skipped: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str, sf_field: str | None = None) -> None:
        self.problems.append(Problem(path, message, sf_field, Severity.ERROR))

    def warn(self, path: str, message: str, sf_field: str | None = None) -> None:
        self.problems.append(Problem(path, message, sf_field, Severity.WARNING))


def check_mapping(
    objects: Mapping[str, ObjectMapping],
    describes: Mapping[str, SfObject | None] | None,
    tables: Mapping[str, Table | None] | None,
    schema: str = "public",
) -> Report:
    """Every problem of ``objects`` against the org (``describes``, keyed by object name) and the database
    (``tables``, keyed by table name in ``schema``). See the module docstring."""
    report = Report()
    for name, obj in objects.items():
        out = _Collector()
        sf = describes.get(name) if describes is not None else None
        table = tables.get(obj.table) if tables is not None else None
        if describes is not None and sf is None:
            out.error(f"objects.{name}", f"Salesforce has no object {name} (or this user cannot see it)")
        if tables is not None and table is None:
            out.error(f"objects.{name}.table", f"table {schema}.{obj.table} does not exist")
        _check_keys(out, name, obj, sf, table, schema)
        for i, f in enumerate(obj.fields):
            if f.is_parent_path:
                _check_parent_field(out, name, obj, i, f, sf, describes, table, schema)
            else:
                _check_field(out, objects, name, obj, i, f, sf, table, schema)
        _check_filters(out, name, obj, sf)
        report.problems.extend(out.problems)
        report.objects.append(ObjectSummary(
            name, obj.table, len(obj.fields),
            sum(f.direction in OUTBOUND for f in obj.fields), sum(f.direction in INBOUND for f in obj.fields),
            sum(p.severity is Severity.ERROR for p in out.problems),
            sum(p.severity is Severity.WARNING for p in out.problems)))
    return report


def _check_keys(out: _Collector, name: str, obj: ObjectMapping, sf: SfObject | None, table: Table | None,
                schema: str) -> None:
    base = f"objects.{name}"
    if table is not None:
        if obj.local_key not in table.columns:
            out.error(f"{base}.local_key", f"table {schema}.{obj.table} has no column {obj.local_key}"
                      + table.suggest(obj.local_key))
        sfid = table.columns.get(obj.sfid_column)
        if sfid is None:
            out.error(f"{base}.sfid_column", f"table {schema}.{obj.table} has no column {obj.sfid_column}"
                      + table.suggest(obj.sfid_column))
        elif sfid.family not in (None, "text"):
            out.error(f"{base}.sfid_column", f"column {obj.sfid_column} is {sfid.shown_type}; Salesforce ids are "
                      "text (18 characters)")
        elif sfid.max_length is not None and sfid.max_length < 18:
            out.error(f"{base}.sfid_column", f"column {obj.sfid_column} is {sfid.shown_type}; Salesforce ids "
                      "have 18 characters")
    if sf is not None:
        ext = sf.get(obj.external_id_field)
        where = f"{name}.{obj.external_id_field}"
        if ext is None:
            out.error(f"{base}.external_id_field", f"{name} has no field {obj.external_id_field}"
                      + sf.suggest(obj.external_id_field) + "; outbound writes upsert on it", where)
        elif not ext.external_id:
            out.error(f"{base}.external_id_field", f"{ext.name} is not an external id field (externalId is false "
                      "in the describe); outbound writes upsert on it", where)
        elif not (ext.createable and ext.updateable):
            out.error(f"{base}.external_id_field", f"{ext.name} is read-only; sfsync writes the local key into it",
                      where)
        elif table is not None and ext.length and obj.local_key in table.columns:
            key = table.columns[obj.local_key]
            if key.max_length is not None and key.max_length > ext.length:
                out.error(f"{base}.external_id_field", f"local key {obj.local_key} is {key.shown_type}, longer "
                          f"than {ext.name} allows ({ext.length})", where)
    for i, pair in enumerate(obj.match_key or ()):
        if sf is not None and sf.get(pair.field) is None:
            out.error(f"{base}.match_key[{i}].field", f"{name} has no field {pair.field}"
                      + sf.suggest(pair.field), f"{name}.{pair.field}")
        if table is not None and pair.column not in table.columns:
            out.error(f"{base}.match_key[{i}].column", f"table {schema}.{obj.table} has no column "
                      f"{pair.column}" + table.suggest(pair.column))


def parent_objects(objects: Mapping[str, ObjectMapping], describes: Mapping[str, SfObject | None]) -> set[str]:
    """The objects parent paths (``Owner.Name``) point to that ``describes`` does not hold yet: what
    :func:`check_mapping` needs described as well to judge those paths."""
    out: set[str] = set()
    for name, obj in objects.items():
        sf = describes.get(name)
        for f in obj.fields:
            if sf is None or not f.is_parent_path:
                continue
            ref = sf.relationship(f.field.partition(".")[0])
            if ref is not None and len(ref.reference_to) == 1 and ref.reference_to[0] not in describes:
                out.add(ref.reference_to[0])
    return out


def _check_parent_field(out: _Collector, name: str, obj: ObjectMapping, i: int, f: FieldMapping,
                        sf: SfObject | None, describes: Mapping[str, SfObject | None] | None, table: Table | None,
                        schema: str) -> None:
    """A parent path ``Rel.Field``: ``Rel`` is a relationship of the object to exactly one object, that object
    has ``Field``, of a supported type that fits the column (read one way, into the column)."""
    path = f"objects.{name}.fields[{i}]"
    rel, _, parent_field = f.field.partition(".")
    where = f"{name}.{f.field}"
    column = table.columns.get(f.column) if table is not None else None
    if table is not None and column is None:
        out.error(path, f"table {schema}.{obj.table} has no column {f.column}" + table.suggest(f.column), where)
    if sf is None or describes is None:
        return
    ref = sf.relationship(rel)
    if ref is None:
        known = [x.relationship_name for x in sf.fields.values() if x.relationship_name]
        out.error(path, f"{name} has no relationship {rel}" + _did_you_mean(rel, known)
                  + " (a parent path names a lookup's relationship, e.g. Owner for OwnerId)", where)
        return
    if len(ref.reference_to) != 1:
        out.error(path, f"{name}.{ref.name} is polymorphic (it points to {', '.join(ref.reference_to) or 'nothing'}"
                  "): parent paths need a lookup to one object", where)
        return
    parent = describes.get(ref.reference_to[0])
    if parent is None:
        out.error(path, f"Salesforce has no object {ref.reference_to[0]} (the parent {rel} points to), or this user "
                  "cannot see it", where)
        return
    pff = parent.get(parent_field)
    if pff is None:
        out.error(path, f"{parent.name} (the parent {rel} points to) has no field {parent_field}"
                  + parent.suggest(parent_field), where)
        return
    where = f"{name}.{rel}.{pff.name}"
    handled = bool(HANDLED_BY.get(pff.type, frozenset()) & set(f.transforms))
    if not handled and pff.type in UNSUPPORTED_TYPES:
        out.error(path, f"type {pff.type} is not supported: {UNSUPPORTED_TYPES[pff.type]}", where)
        return
    if not handled and pff.rich_text:
        out.error(path, f"type textarea (rich text) is not supported: {RICH_TEXT}", where)
        return
    if column is not None:
        _check_types(out, path, where, f, pff, column)


def _check_field(out: _Collector, objects: Mapping[str, ObjectMapping], name: str, obj: ObjectMapping, i: int,
                 f: FieldMapping, sf: SfObject | None, table: Table | None, schema: str) -> None:
    path = f"objects.{name}.fields[{i}]"
    where = f"{name}.{f.field}"
    column = table.columns.get(f.column) if table is not None else None
    if table is not None and column is None:
        out.error(path, f"table {schema}.{obj.table} has no column {f.column}" + table.suggest(f.column), where)
    if sf is None:
        return
    sff = sf.get(f.field)
    if sff is None:
        out.error(path, f"{name} has no field {f.field}" + sf.suggest(f.field), where)
        return
    where = f"{name}.{sff.name}"
    handled = bool(HANDLED_BY.get(sff.type, frozenset()) & set(f.transforms))
    if not handled and sff.type in UNSUPPORTED_TYPES:
        out.error(path, f"type {sff.type} is not supported: {UNSUPPORTED_TYPES[sff.type]}", where)
        return
    if not handled and sff.rich_text:
        out.error(path, f"type textarea (rich text) is not supported: {RICH_TEXT}", where)
        return
    if f.direction in OUTBOUND:
        if not sff.createable and not sff.updateable:
            why = "a formula" if sff.calculated else "a system, formula or compound field"
            out.error(path, f"{sff.name} is read-only ({why}: neither createable nor updateable) but the mapping "
                      f"writes it ({f.direction}); use direction to_local", where)
        elif not sff.createable:
            out.error(path, f"{sff.name} is not createable: new records would be refused; use direction to_local",
                      where)
        elif not sff.updateable:
            out.error(path, f"{sff.name} is not updateable: only the first write would be accepted; use direction "
                      "to_local", where)
    if column is not None and sff.type != "reference" and f.reference is None:
        _check_types(out, path, where, f, sff, column)  # lookups: _check_reference judges the column
    _check_picklist(out, path, where, f, sff)
    _check_reference(out, objects, path, where, f, sff, column)


def _check_types(out: _Collector, path: str, where: str, f: FieldMapping, sff: SfField, column: Column) -> None:
    field_family, column_family = sff.family, column.family
    if field_family is None or column_family is None:
        return  # a type the check does not know: nothing to say
    shown = f"{sff.type} field into {column.shown_type} column {column.name}"
    if f.direction in INBOUND and column_family not in _INTO_COLUMN[field_family]:
        declared = _DECLARED.get(f.type) if f.type is not None else None
        if declared == column_family:
            out.warn(path, f"{shown}: values are coerced to {f.type}; one that is not fails its record", where)
        else:
            out.error(path, f"type mismatch: {shown} (to_local); set type to coerce, or change the column", where)
    outbound_ok = _INTO_FIELD.get(column_family)
    if f.direction in OUTBOUND and outbound_ok is not None and field_family not in outbound_ok:
        out.error(path, f"type mismatch: {column.shown_type} column {column.name} into {sff.type} field "
                  f"{sff.name} (to_salesforce): Salesforce refuses values of the wrong type", where)
    if field_family != "text" or column_family != "text":
        return
    if sff.type == "id":
        return
    if f.direction in OUTBOUND and sff.length and column.max_length is not None and column.max_length > sff.length:
        out.error(path, f"column {column.name} is {column.shown_type}, longer than {sff.name} allows "
                  f"({sff.length}): longer values would be refused (STRING_TOO_LONG)", where)
    if f.direction in INBOUND and column.max_length is not None:
        longest = _longest_inbound(f, sff)
        if longest > column.max_length:
            out.error(path, f"{sff.name} holds up to {longest} characters, column {column.name} is "
                      f"{column.shown_type}: longer values would fail their record", where)


def _longest_inbound(f: FieldMapping, sff: SfField) -> int:
    """The longest value the field can deliver to the column: a picklist's longest value after the reversed
    value map, else the field's length."""
    if sff.type == "picklist" and sff.picklist_values and sff.restricted_picklist:
        reverse = {remote: local for local, remote in f.value_map.items()}
        return max(len(reverse.get(v, v)) for v in sff.picklist_values)
    return sff.length


def _check_picklist(out: _Collector, path: str, where: str, f: FieldMapping, sff: SfField) -> None:
    if sff.type not in ("picklist", "multipicklist") or not f.value_map or f.direction not in OUTBOUND:
        return
    allowed = set(sff.picklist_values)
    bad = sorted(v for v in f.value_map.values() if v not in allowed)
    if not bad:
        return
    shown = ", ".join(repr(b) for b in bad)
    if sff.restricted_picklist:
        out.error(f"{path}.value_map", f"maps to {shown}, not a value of the restricted picklist {sff.name} "
                  f"({', '.join(sff.picklist_values)}): Salesforce refuses it", where)
    else:
        out.warn(f"{path}.value_map", f"maps to {shown}, not an active value of the picklist {sff.name}: stored, "
                 "but not offered in Salesforce", where)


def _check_reference(out: _Collector, objects: Mapping[str, ObjectMapping], path: str, where: str,
                     f: FieldMapping, sff: SfField, column: Column | None) -> None:
    if f.reference is not None:
        if sff.type != "reference":
            out.error(f"{path}.reference", f"{sff.name} is a {sff.type} field, not a lookup; reference needs one",
                      where)
        elif f.reference not in sff.reference_to:
            out.error(f"{path}.reference", f"{sff.name} points to {', '.join(sff.reference_to)}, not "
                      f"{f.reference}", where)
        return
    if sff.type != "reference":
        return
    mapped = [o for o in sff.reference_to if o in objects]
    text_column = column is None or column.family in (None, "text")
    targets = ", ".join(sff.reference_to)
    if mapped and text_column:
        out.warn(f"{path}.reference", f"{sff.name} points to {targets}, which is mapped: set reference: {mapped[0]} "
                 "to translate ids through the link (raw Salesforce ids are synced now)", where)
    elif mapped:
        assert column is not None
        out.error(f"{path}.reference", f"{sff.name} points to {mapped[0]}; set reference: {mapped[0]} so its ids "
                  f"are translated into local keys ({column.shown_type} column {column.name} cannot hold "
                  "Salesforce ids)", where)
    elif not text_column:
        assert column is not None
        out.error(f"{path}.reference", f"{sff.name} points to {targets}, which is not mapped: its ids cannot be "
                  f"translated into {column.shown_type} column {column.name} (map {sff.reference_to[0]}, or keep "
                  "the raw id in a text column)", where)


def _check_filters(out: _Collector, name: str, obj: ObjectMapping, sf: SfObject | None) -> None:
    """Names in the inbound filter and the email field must be fields of the object (outbound names are
    checked against the mapped columns by the config model)."""
    if sf is None:
        return
    flt = obj.filters
    if flt.to_local is not None:
        try:
            names = compile_filter(flt.to_local).names
        except FilterSyntaxError:
            names = frozenset()  # reported by config validation
        for n in sorted(names):
            if sf.get(n) is None:
                out.error(f"objects.{name}.filters.to_local", f"names {n}, which {name} does not have"
                          + sf.suggest(n), f"{name}.{n}")
    email = flt.email_key(obj)
    if email is not None and (flt.exclude_emails or flt.exclude_domains):
        sff = sf.get(email.field)
        if sff is None:
            out.error(f"objects.{name}.filters.email_field", f"{name} has no field {email.field}"
                      + sf.suggest(email.field), f"{name}.{email.field}")
        elif sff.family != "text":
            out.error(f"objects.{name}.filters.email_field", f"{sff.name} is a {sff.type} field, not an email "
                      "address", f"{name}.{sff.name}")
