"""In-memory record store: records by id, unique/external-id indexes, recycle bin, transactions.

Contract:
- Every write happens inside a :class:`Transaction`. Writes apply to the live store at once (so later
  records of one Collections call see earlier ones) and keep an undo snapshot; :meth:`Store.rollback`
  restores the snapshots, :meth:`Store.commit` hands the transaction's changes to the ``on_commit``
  callback (the CDC bus). The server is single-threaded asyncio and a transaction never awaits, so no
  other request observes a transaction that is later rolled back.
- Lookups by id and by unique/external-id value are dict lookups; no write scans a table.
- Deleted records stay in the store with ``IsDeleted = true`` (the recycle bin) until reset; they are
  out of the unique indexes and visible only to ``queryAll`` and ``getDeleted``.
- Custom validation rules (:attr:`Store.validation`, see sfsync.emulator.validation) run on every
  create and update after the required-field and reference checks, before the unique-index check.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sfsync.emulator.automation import FieldUpdates
from sfsync.emulator.errors import SfError, not_found
from sfsync.emulator.ids import make_id, normalize
from sfsync.emulator.schema import FieldDef, ObjectDef, Schema, format_datetime, now_utc
from sfsync.emulator.validation import ValidationRules

_SKIP_IN_EVENTS = frozenset({"Id", "IsDeleted", "SystemModstamp"})


@dataclass
class CallContext:
    """Who makes a change and how: the CDC ``commitUser`` and ``changeOrigin``."""

    user_id: str
    origin: str = ""
    emit_events: bool = True


@dataclass
class Change:
    """One committed record change, ready to become a CDC event."""

    change_type: str
    entity: str
    record_ids: list[str]
    payload: dict[str, Any] = field(default_factory=dict)
    changed_fields: list[str] = field(default_factory=list)
    nulled_fields: list[str] = field(default_factory=list)


@dataclass
class Transaction:
    """Undo snapshots and pending changes of one unit of work (one REST or Collections call)."""

    ctx: CallContext
    undo: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


class Store:
    """All records of the org, per object, with unique-value indexes."""

    def __init__(self, schema: Schema, on_commit: Callable[[Transaction], None]) -> None:
        self.schema = schema
        self.on_commit = on_commit
        self._ids = itertools.count(1)
        self._case_numbers = itertools.count(1001)
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in schema.objects}
        self.by_id: dict[str, tuple[ObjectDef, dict[str, Any]]] = {}
        self.unique: dict[str, dict[str, dict[Any, set[str]]]] = {}
        self.admin_id = ""
        self.validation = ValidationRules(schema)
        self.automation = FieldUpdates(schema)
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget every record except the admin user (ids keep increasing across resets; case numbers restart)."""
        self._case_numbers = itertools.count(1001)
        self.records = {name: {} for name in self.schema.objects}
        self.by_id = {}
        self.unique = {
            name: {f: {} for f, fdef in obj.fields.items() if fdef.unique or fdef.external_id}
            for name, obj in self.schema.objects.items()
        }
        user = self.schema.objects["User"]
        tx = Transaction(CallContext(user_id="", emit_events=False))
        self.admin_id = make_id(user.key_prefix, next(self._ids))
        values = {"Username": "admin@example.com", "LastName": "Admin", "FirstName": "Emulator",
                  "Email": "admin@example.com", "Alias": "admin"}
        self._insert(tx, user, values, record_id=self.admin_id, user_id=self.admin_id, custom_rules=False)

    # ------------------------------------------------------------------ schema changes at run time
    def add_field(self, obj: ObjectDef, fdef: FieldDef) -> None:
        """Add a custom field to ``obj`` while the org runs (every existing record has it empty, as after
        creating a field in Setup); a unique / external id field gets its (empty) index."""
        obj.add(fdef)
        if fdef.unique or fdef.external_id:
            self.unique[obj.name][fdef.name] = {}

    def remove_field(self, obj: ObjectDef, name: str) -> str:
        """Delete a custom field while the org runs; its values are gone from every record (re-adding a field
        of that name makes a new, empty field). Returns the field's exact name. The validation rules and
        field updates that name it stay and simply never match a missing field."""
        fdef = obj.field(name)
        if fdef is None:
            raise SfError("INVALID_FIELD", f"No such column '{name}' on sobject of type {obj.name}", [name])
        if not fdef.custom:
            raise SfError("CANNOT_DELETE_STANDARD_FIELD", f"{obj.name}.{fdef.name} is a standard field")
        del obj.fields[fdef.name]
        obj.reindex()
        self.unique[obj.name].pop(fdef.name, None)
        for rec in self.records.get(obj.name, {}).values():
            rec.pop(fdef.name, None)
        return fdef.name

    def begin(self, ctx: CallContext) -> Transaction:
        """Start a unit of work."""
        return Transaction(ctx)

    def commit(self, tx: Transaction) -> None:
        """Make the transaction's changes final and publish them (when the context emits events)."""
        if tx.changes and tx.ctx.emit_events:
            self.on_commit(tx)
        tx.undo.clear()
        tx.changes.clear()

    def rollback(self, tx: Transaction) -> None:
        """Restore every record the transaction touched; its changes are never published."""
        for obj_name, record_id, snapshot in reversed(tx.undo):
            obj = self.schema.objects[obj_name]
            current = self.records[obj_name].get(record_id)
            if current is not None:
                self._unindex(obj, current)
            if snapshot is None:
                self.records[obj_name].pop(record_id, None)
                self.by_id.pop(record_id, None)
            else:
                self.records[obj_name][record_id] = snapshot
                self.by_id[record_id] = (obj, snapshot)
                self._index(obj, snapshot)
        tx.undo.clear()
        tx.changes.clear()

    # ------------------------------------------------------------------ reads
    def lookup(self, record_id: Any, obj: ObjectDef | None = None, include_deleted: bool = False
               ) -> tuple[ObjectDef, dict[str, Any]]:
        """The record with ``record_id`` (15 or 18 chars).

        Raises MALFORMED_ID (400) for a malformed id or one of another object's key prefix,
        NOT_FOUND (404) for an unknown id, ENTITY_IS_DELETED (404) for a record in the recycle bin.
        """
        normal = normalize(record_id)
        label = obj.label if obj else "Record"
        if normal is None or (obj is not None and normal[:3] != obj.key_prefix):
            raise SfError("MALFORMED_ID", f"{label} ID: id value of incorrect type: {record_id}", ["Id"])
        found = self.by_id.get(normal)
        if found is None:
            raise not_found()
        if found[1]["IsDeleted"] and not include_deleted:
            raise SfError("ENTITY_IS_DELETED", "entity is deleted", [], status=404)
        return found

    def find_unique(self, obj: ObjectDef, field_name: str, value: Any) -> list[str]:
        """Ids of live records whose unique/external-id field equals ``value``."""
        fdef = obj.fields[field_name]
        key = self._key(fdef.case_sensitive, fdef.coerce(value))
        return sorted(self.unique[obj.name][field_name].get(key, ()))

    def iter_records(self, obj: ObjectDef, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """All records of ``obj`` in insertion order (live ones unless ``include_deleted``)."""
        for rec in self.records[obj.name].values():
            if include_deleted or not rec["IsDeleted"]:
                yield rec

    # ------------------------------------------------------------------ writes
    def create(self, tx: Transaction, obj: ObjectDef, body: dict[str, Any]) -> str:
        """Validate and insert a record; returns its id."""
        if any(k.lower() == "id" and v not in (None, "") for k, v in body.items()):
            raise SfError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"])
        values = self.validate(obj, body, creating=True)
        return self._insert(tx, obj, values, user_id=tx.ctx.user_id or self.admin_id)

    def update(self, tx: Transaction, obj: ObjectDef, record_id: str, body: dict[str, Any]) -> str:
        """Validate and apply an update; returns the record's 18-char id."""
        _, current = self.lookup(record_id, obj)
        values = self.validate(obj, body, creating=False)
        new = dict(current)
        new.update(values)
        automated = self.automation.apply(obj, new)
        self._derive(obj, new)
        self._check_required(obj, new, only=values.keys())
        self._check_references(obj, values)
        self.validation.check(obj, new)
        self._check_unique(obj, new, exclude=new["Id"])
        changed = [name for name in dict.fromkeys([*values, *automated]) if current.get(name) != new.get(name)]
        if obj.name in ("Contact", "Lead", "User") and current.get("Name") != new.get("Name"):
            changed.append("Name")
        stamp = format_datetime(now_utc().replace(microsecond=0))
        new["LastModifiedDate"] = new["SystemModstamp"] = stamp
        new["LastModifiedById"] = tx.ctx.user_id or self.admin_id
        self._replace(tx, obj, current, new)
        tx.changes.append(self._update_change(obj, new, changed))
        return new["Id"]

    def delete(self, tx: Transaction, record_id: Any, obj: ObjectDef | None = None) -> str:
        """Move a record to the recycle bin; returns its id."""
        obj, current = self.lookup(record_id, obj)
        if not obj.deletable:
            raise SfError("INVALID_OPERATION", f"{obj.label} records cannot be deleted", [], status=400)
        new = dict(current)
        stamp = format_datetime(now_utc().replace(microsecond=0))
        new.update({"IsDeleted": True, "SystemModstamp": stamp, "LastModifiedDate": stamp,
                    "_deleted_at": stamp})
        self._replace(tx, obj, current, new)
        tx.changes.append(Change("DELETE", obj.name, [new["Id"]]))
        return new["Id"]

    def undelete(self, tx: Transaction, record_id: Any) -> str:
        """Restore a record from the recycle bin (UNDELETE event with all its non-null fields)."""
        obj, current = self.lookup(record_id, include_deleted=True)
        if not current["IsDeleted"]:
            raise SfError("UNDELETE_FAILED", "Entity is not in the recycle bin", [])
        new = dict(current)
        new.pop("_deleted_at", None)
        new["IsDeleted"] = False
        new["SystemModstamp"] = format_datetime(now_utc().replace(microsecond=0))
        self._check_unique(obj, new, exclude=new["Id"])
        self._replace(tx, obj, current, new)
        tx.changes.append(Change("UNDELETE", obj.name, [new["Id"]], self.event_body(obj, new)))
        return new["Id"]

    # ------------------------------------------------------------------ validation
    def validate(self, obj: ObjectDef, body: dict[str, Any], creating: bool) -> dict[str, Any]:
        """Check field names, writability and values of a request body; returns canonical name -> value.

        Unknown field: INVALID_FIELD. Not createable/updateable: INVALID_FIELD_FOR_INSERT_UPDATE (all such
        fields in one error). Bad values: see FieldDef.coerce.
        """
        values: dict[str, Any] = {}
        readonly: list[str] = []
        for key, raw in body.items():
            if key == "attributes":
                continue
            fdef = obj.field(key)
            if fdef is None:
                raise SfError("INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [key])
            if fdef.name == "Id":
                continue
            if not (fdef.createable if creating else fdef.updateable):
                readonly.append(fdef.name)
                continue
            values[fdef.name] = fdef.coerce(raw)
        if readonly:
            raise SfError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(readonly)}. Please check the security settings of "
                "this field and verify that it is read/write for your profile or permission set.",
                readonly,
            )
        return values

    def _check_required(self, obj: ObjectDef, rec: dict[str, Any], only: Any = None) -> None:
        missing = [
            name for name, fdef in obj.fields.items()
            if fdef.required and rec.get(name) is None and (only is None or name in only)
        ]
        if missing:
            raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                          missing)

    def _check_references(self, obj: ObjectDef, values: dict[str, Any]) -> None:
        for name, value in values.items():
            fdef = obj.fields[name]
            if fdef.type != "reference" or value is None:
                continue
            target = self.by_id.get(value)
            if target is None or target[0].name not in fdef.reference_to:
                raise SfError(
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"{fdef.label}: id value of incorrect type: {value}" if target else
                    f"invalid cross reference id: {value}",
                    [name],
                )
            if target[1]["IsDeleted"]:
                raise SfError("ENTITY_IS_DELETED", "entity is deleted", [name])

    def _check_unique(self, obj: ObjectDef, rec: dict[str, Any], exclude: str | None = None) -> None:
        for name, index in self.unique[obj.name].items():
            fdef = obj.fields[name]
            if not fdef.unique or rec.get(name) is None:
                continue
            others = index.get(self._key(fdef.case_sensitive, rec[name]), set()) - {exclude}
            if others:
                raise SfError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {name} duplicates value on record with id: {min(others)}",
                    [],
                )

    # ------------------------------------------------------------------ internals
    def _insert(self, tx: Transaction, obj: ObjectDef, values: dict[str, Any], user_id: str,
                record_id: str | None = None, custom_rules: bool = True) -> str:
        rec: dict[str, Any] = {}
        for name, fdef in obj.fields.items():
            if fdef.type in ("address", "location"):
                continue
            default = fdef.default_value if fdef.defaulted_on_create else None
            if default is None and fdef.type == "boolean":
                default = False
            rec[name] = default
        rec.update(values)
        if custom_rules:
            self.automation.apply(obj, rec)
        record_id = record_id or make_id(obj.key_prefix, next(self._ids))
        stamp = format_datetime(now_utc().replace(microsecond=0))
        rec.update({"Id": record_id, "IsDeleted": False, "CreatedDate": stamp, "LastModifiedDate": stamp,
                    "SystemModstamp": stamp, "CreatedById": user_id, "LastModifiedById": user_id})
        if "OwnerId" in obj.fields and rec.get("OwnerId") is None:
            rec["OwnerId"] = user_id
        if "CaseNumber" in obj.fields:
            rec["CaseNumber"] = f"{next(self._case_numbers):08d}"
        self._derive(obj, rec)
        self._check_required(obj, rec)
        self._check_references(obj, values)
        if custom_rules:
            self.validation.check(obj, rec)
        self._check_unique(obj, rec)
        self.records[obj.name][record_id] = rec
        self.by_id[record_id] = (obj, rec)
        self._index(obj, rec)
        tx.undo.append((obj.name, record_id, None))
        tx.changes.append(Change("CREATE", obj.name, [record_id], self.event_body(obj, rec)))
        return record_id

    @staticmethod
    def _derive(obj: ObjectDef, rec: dict[str, Any]) -> None:
        """Recompute calculated fields (the full Name of person objects)."""
        if obj.name in ("Contact", "Lead", "User"):
            parts = [rec.get("FirstName"), rec.get("LastName")]
            rec["Name"] = " ".join(p for p in parts if p) or None

    def _replace(self, tx: Transaction, obj: ObjectDef, current: dict[str, Any], new: dict[str, Any]) -> None:
        tx.undo.append((obj.name, current["Id"], current))
        self._unindex(obj, current)
        self.records[obj.name][current["Id"]] = new
        self.by_id[current["Id"]] = (obj, new)
        self._index(obj, new)

    @staticmethod
    def _key(case_sensitive: bool, value: Any) -> Any:
        return value.lower() if isinstance(value, str) and not case_sensitive else value

    def _index(self, obj: ObjectDef, rec: dict[str, Any]) -> None:
        if rec["IsDeleted"]:
            return
        for name, index in self.unique[obj.name].items():
            value = rec.get(name)
            if value is not None:
                index.setdefault(self._key(obj.fields[name].case_sensitive, value), set()).add(rec["Id"])

    def _unindex(self, obj: ObjectDef, rec: dict[str, Any]) -> None:
        for name, index in self.unique[obj.name].items():
            value = rec.get(name)
            if value is None:
                continue
            key = self._key(obj.fields[name].case_sensitive, value)
            ids = index.get(key)
            if ids is not None:
                ids.discard(rec["Id"])
                if not ids:
                    del index[key]

    # ------------------------------------------------------------------ CDC bodies
    def event_body(self, obj: ObjectDef, rec: dict[str, Any], only: list[str] | None = None) -> dict[str, Any]:
        """CDC payload fields of ``rec``: all non-null fields (or exactly ``only``), compounds nested.

        Datetimes use the CDC form ``2024-04-26T18:38:05.000Z``; Id, IsDeleted and SystemModstamp are never
        included; components of compound fields (addresses, person names, locations) are nested under
        the compound's name with their short keys.
        """
        body: dict[str, Any] = {}
        names = only if only is not None else [n for n in rec if not n.startswith("_")]
        for name in names:
            if name in _SKIP_IN_EVENTS or name in obj.compounds:
                continue
            fdef = obj.fields.get(name)
            if fdef is None:
                continue
            value = rec.get(name)
            if value is None and only is None:
                continue
            if fdef.type == "datetime" and isinstance(value, str):
                value = value[:-5] + "Z"
            compound = obj.component_of.get(name)
            if compound is not None:
                body.setdefault(compound[0], {})[compound[1]] = value
            else:
                body[name] = value
        return body

    def _update_change(self, obj: ObjectDef, rec: dict[str, Any], changed: list[str]) -> Change:
        fields = [n for n in changed if n not in obj.compounds] + ["LastModifiedDate"]
        body = self.event_body(obj, rec, only=fields)
        names = []
        nulled = []
        for name in fields:
            compound = obj.component_of.get(name)
            label = f"{compound[0]}.{compound[1]}" if compound else name
            names.append(label)
            if rec.get(name) is None:
                nulled.append(label)
        return Change("UPDATE", obj.name, [rec["Id"]], body, names, nulled)

    # ------------------------------------------------------------------ REST bodies
    def to_rest(self, obj: ObjectDef, rec: dict[str, Any], version: str,
                fields: list[str] | None = None) -> dict[str, Any]:
        """The REST JSON of a record: ``attributes`` then fields in describe order (or ``fields``)."""
        out: dict[str, Any] = {
            "attributes": {"type": obj.name, "url": f"/services/data/v{version}/sobjects/{obj.name}/{rec['Id']}"}
        }
        names = fields if fields is not None else list(obj.fields)
        for name in names:
            fdef = obj.fields[name]
            if fdef.type == "address":
                out[name] = self._address(obj, rec, name)
            elif fdef.type == "location":
                out[name] = self._location(obj, rec, name)
            else:
                out[name] = rec.get(name)
        return out

    @staticmethod
    def _address(obj: ObjectDef, rec: dict[str, Any], compound: str) -> dict[str, Any] | None:
        parts = {key: rec.get(component) for component, key in obj.compounds.get(compound, [])}
        if all(value is None for value in parts.values()):
            return None
        return {"city": parts.get("City"), "country": parts.get("Country"), "geocodeAccuracy": None,
                "latitude": None, "longitude": None, "postalCode": parts.get("PostalCode"),
                "state": parts.get("State"), "street": parts.get("Street")}

    @staticmethod
    def _location(obj: ObjectDef, rec: dict[str, Any], compound: str) -> dict[str, Any] | None:
        parts = {key: rec.get(component) for component, key in obj.compounds.get(compound, [])}
        if all(value is None for value in parts.values()):
            return None
        return {"latitude": parts.get("Latitude"), "longitude": parts.get("Longitude")}
