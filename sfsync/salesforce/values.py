"""Salesforce field values <-> sfsync's typed values, driven by the object's describe. Pure, no I/O.

Inbound (:meth:`ObjectTypes.typed_values`): JSON values from CDC payloads or REST/SOQL records become
``FieldPyValue``s by the field's describe ``type``:

==============================  ===============================================
describe type                   Python value
==============================  ===============================================
boolean                         ``bool``
int, long                       ``int``
double, currency, percent       ``Decimal`` (exact: built from the JSON text)
date                            ``date``
datetime                        aware ``datetime`` (UTC)
time                            ``time``
everything else                 ``str`` (ids, strings, picklists, base64...)
==============================  ===============================================

Compound fields arrive nested in CDC (``BillingAddress: {"City": ...}``, ``Name: {"FirstName": ...}``)
and are flattened to their component fields (``BillingCity``, ``FirstName``); dotted names in
``changedFields``/``nulledFields`` (``BillingAddress.City``) are flattened the same way. A value that
does not fit its declared type is kept as text (never dropped, never fatal); a JSON object/array
left over is carried as its JSON text. Unknown fields keep their JSON scalar as is.

Outbound (:func:`to_json_value`): a ``FieldPyValue`` as Salesforce's REST JSON wants it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from sfsync.records import FieldPyValue

NUMBER_TYPES = frozenset({"double", "currency", "percent"})
INT_TYPES = frozenset({"int", "long"})
#: Fields the CDC body never carries and the catch-up query always reads.
SYSTEM_FIELDS = ("Id", "IsDeleted", "SystemModstamp", "LastModifiedDate")


@dataclass(frozen=True, slots=True)
class ObjectTypes:
    """Field types of one sObject, from its describe."""

    name: str
    types: dict[str, str] = field(default_factory=dict)
    #: compound field -> {CDC short key -> component field}
    compounds: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_describe(cls, describe: Mapping[str, Any]) -> ObjectTypes:
        """Build from ``GET sobjects/{T}/describe``."""
        fields = list(describe.get("fields") or [])
        types = {str(f["name"]): str(f.get("type", "string")) for f in fields}
        groups: dict[str, list[str]] = {}
        for f in fields:
            compound = f.get("compoundFieldName")
            if compound:
                groups.setdefault(str(compound), []).append(str(f["name"]))
        compounds: dict[str, dict[str, str]] = {}
        for compound, members in groups.items():
            compounds[compound] = {_short_key(compound, m): m for m in members}
        return cls(str(describe.get("name", "")), types, compounds)

    def component(self, compound: str, key: str) -> str:
        """The component field that ``compound.key`` names (``BillingAddress``, ``City`` -> ``BillingCity``)."""
        known = self.compounds.get(compound, {})
        if key in known:
            return known[key]
        if key in self.types:  # person names: Name.FirstName -> FirstName
            return key
        prefix = compound[: -len("Address")] if compound.endswith("Address") else None
        if prefix is not None and prefix + key in self.types:
            return prefix + key
        if compound.endswith("__c"):
            candidate = f"{compound[:-3]}__{key}__s"
            if candidate in self.types:
                return candidate
        return f"{compound}.{key}"

    def field_name(self, name: str) -> str:
        """Flatten a dotted ``changedFields`` entry; other names are returned unchanged."""
        compound, dot, key = name.partition(".")
        return self.component(compound, key) if dot else name

    def field_names(self, names: Iterable[str]) -> list[str]:
        """``field_name`` over a list, order kept, duplicates dropped."""
        out: list[str] = []
        for n in names:
            flat = self.field_name(n)
            if flat not in out:
                out.append(flat)
        return out

    def typed_value(self, name: str, raw: Any) -> FieldPyValue:
        """One value typed by the describe type of ``name`` (see module table)."""
        return typed_value(self.types.get(name), raw)

    def typed_values(self, body: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, FieldPyValue]:
        """All fields of a CDC body or REST record, compounds flattened, typed; ``skip`` names are left out
        (``ChangeEventHeader``, ``attributes`` are always left out)."""
        skipped = {"ChangeEventHeader", "attributes", *skip}
        out: dict[str, FieldPyValue] = {}
        for name, raw in body.items():
            if name in skipped:
                continue
            if isinstance(raw, Mapping):  # a compound field (address, location, person name)
                for key, sub in raw.items():
                    component = self.component(name, str(key))
                    if component not in skipped:
                        out[component] = self.typed_value(component, sub)
                continue
            out[name] = self.typed_value(name, raw)
        return out


def _short_key(compound: str, member: str) -> str:
    """The CDC key of a component: ``BillingCity`` in ``BillingAddress`` -> ``City``."""
    if compound.endswith("Address"):
        prefix = compound[: -len("Address")]
        if prefix and member.startswith(prefix):
            return member[len(prefix):]
        return member
    if compound.endswith("__c") and member.startswith(compound[:-3] + "__") and member.endswith("__s"):
        return member[len(compound) - 1: -3]
    return member


def parse_datetime(text: str) -> datetime:
    """Salesforce datetime text (``2024-04-26T18:38:05.000Z``/``+0000``) -> aware UTC datetime."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _fallback(raw: Any) -> FieldPyValue:
    if raw is None or isinstance(raw, bool | int | str):
        return raw
    if isinstance(raw, float):
        return Decimal(repr(raw))
    return json.dumps(raw, sort_keys=True, default=str)


def typed_value(kind: str | None, raw: Any) -> FieldPyValue:
    """``raw`` (a JSON value) typed by the describe ``kind`` (see the module table)."""
    if raw is None:
        return None
    try:
        if kind == "boolean":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
        elif kind in INT_TYPES:
            if isinstance(raw, bool):
                return _fallback(raw)
            if isinstance(raw, int):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            if isinstance(raw, str):
                return int(raw)
        elif kind in NUMBER_TYPES:
            if isinstance(raw, bool):
                return _fallback(raw)
            if isinstance(raw, int | float | str):
                value = Decimal(repr(raw) if isinstance(raw, float) else str(raw))
                if value.is_finite():
                    return value
        elif kind == "date":
            if isinstance(raw, str):
                return date.fromisoformat(raw.strip()[:10])
        elif kind == "datetime":
            if isinstance(raw, str):
                return parse_datetime(raw)
            if isinstance(raw, int) and not isinstance(raw, bool):  # epoch milliseconds
                return datetime.fromtimestamp(raw / 1000, UTC)
        elif kind == "time":
            if isinstance(raw, str):
                text = raw.strip()
                if text.endswith("Z"):
                    text = text[:-1]
                return time.fromisoformat(text)
        elif isinstance(raw, str):
            return raw
        elif kind is not None and isinstance(raw, int | float) and not isinstance(raw, bool):
            return str(raw)
    except (ValueError, InvalidOperation, OverflowError):
        return raw if isinstance(raw, str) else _fallback(raw)
    return _fallback(raw)


def format_datetime(value: datetime) -> str:
    """An aware datetime as Salesforce writes it: ``2024-04-26T18:38:05.000Z`` (UTC, milliseconds)."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def to_json_value(value: FieldPyValue) -> Any:
    """A typed value as Salesforce REST JSON: dates/times as ISO text, ``Decimal`` as a number, bytes as
    base64 text; ``None`` stays null (which clears the field)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, datetime):
        return format_datetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)
