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

Exact numbers (:func:`loads_exact`, :func:`dumps_exact`): every JSON document sfsync reads from Salesforce
(REST answers, CometD messages) is parsed with fractions as ``Decimal``, and every body it sends is written
with a ``Decimal`` as a JSON number carrying exactly its digits. Integers are exact in JSON and Python
anyway. So no value passes through a binary float on its way: ``123.456789012345678`` and ``2**59 + 1``
arrive as sent (Salesforce itself keeps at most 18 digits, see docs/salesforce.md).

Record ids (:func:`normalize_sfid`, :func:`canonical_sfid`): Salesforce accepts an id in its 15-character
case-sensitive form and its 18-character form (a checksum suffix that encodes the case of the first 15);
sfsync compares ids, so every id that enters it is turned into the 18-character form first. Id and
reference fields (describe types ``id``, ``reference``) are normalised by :meth:`ObjectTypes.typed_values`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from sfsync.records import FieldPyValue

NUMBER_TYPES = frozenset({"double", "currency", "percent"})
INT_TYPES = frozenset({"int", "long"})
#: Describe types whose values are record ids (normalised to the 18-character form).
ID_TYPES = frozenset({"id", "reference"})
#: Fields the CDC body never carries and the catch-up query always reads.
SYSTEM_FIELDS = ("Id", "IsDeleted", "SystemModstamp", "LastModifiedDate")


def is_own_origin(origin: str | None, client: str) -> bool:
    """True when a Salesforce ``changeOrigin`` (or a local origin marker) names sfsync's client id: sfsync's
    REST calls send ``client=<id>`` in ``Sforce-Call-Options``; the bare id counts too. How both the CDC
    producer (no In Queue for an echo) and the processor (echo by value) know sfsync's own write."""
    if not origin:
        return False
    if origin == client:
        return True
    return any(part.strip() == f"client={client}" for part in origin.split(";"))


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

    def queryable(self, names: Iterable[str]) -> list[str]:
        """``names`` a SOQL select list may hold, in order, once each: fields the describe knows, never a
        compound address/location field (its components are selected instead)."""
        out: list[str] = []
        for name in names:
            kind = self.types.get(name)
            if kind is None or kind in ("address", "location") or name in out:
                continue
            out.append(name)
        return out

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
    if isinstance(raw, Decimal):
        return raw if raw.is_finite() else str(raw)
    if isinstance(raw, float):
        return Decimal(repr(raw))
    return dumps_exact(raw, sort_keys=True, allow_nan=True)


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
            if isinstance(raw, Decimal) and raw.is_finite() and raw == raw.to_integral_value():
                return int(raw)
            if isinstance(raw, str):
                return int(raw)
        elif kind in NUMBER_TYPES:
            if isinstance(raw, bool):
                return _fallback(raw)
            if isinstance(raw, int | float | str | Decimal):
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
        elif kind in ID_TYPES and isinstance(raw, str):
            return canonical_sfid(raw)
        elif isinstance(raw, str):
            return raw
        elif kind is not None and isinstance(raw, int | float | Decimal) and not isinstance(raw, bool):
            return str(raw)
    except (ValueError, InvalidOperation, OverflowError):
        return raw if isinstance(raw, str) else _fallback(raw)
    return _fallback(raw)


def format_datetime(value: datetime) -> str:
    """An aware datetime as Salesforce writes it: ``2024-04-26T18:38:05.000Z`` (UTC, milliseconds)."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def to_json_value(value: FieldPyValue) -> Any:
    """A typed value as Salesforce REST JSON: dates/times as ISO text, bytes as base64 text; ``None`` stays
    null (which clears the field). A ``Decimal`` stays a ``Decimal``: :func:`dumps_exact` (which every body
    sent to Salesforce goes through) writes it as a JSON number with exactly its digits, never via float."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal):
        return value  # exact: written as a JSON number with its digits by dumps_exact
    if isinstance(value, datetime):
        return format_datetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


# --------------------------------------------------------------------------- exact JSON


def loads_exact(text: str | bytes | bytearray) -> Any:
    """JSON with every number kept exactly: fractions (and exponents) as ``Decimal``, integers as ``int``."""
    return json.loads(text, parse_float=Decimal)


def decimal_text(value: Decimal) -> str:
    """A finite ``Decimal`` as a JSON number in plain notation, all its digits (``ValueError`` for NaN/inf,
    which JSON and Salesforce have no number for)."""
    if not value.is_finite():
        raise ValueError(f"{value} has no JSON number")
    return format(value, "f")


def dumps_exact(document: Any, **options: Any) -> str:
    """``json.dumps`` that writes a ``Decimal`` as a JSON number with exactly its digits (``options`` go to
    ``json.dumps``; ``default`` is taken). ``ValueError`` for a NaN/infinite Decimal or float.

    Each Decimal is first written as a string wrapped in a random per-call marker, then unquoted: the C
    encoder does the work, and no string of the document can carry the marker.
    """
    numbers: list[str] = []
    marker = secrets.token_hex(8)

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            numbers.append(decimal_text(value))
            return f"{marker}{len(numbers) - 1}{marker}"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    options.setdefault("allow_nan", False)
    text = json.dumps(document, default=default, **options)
    if not numbers:
        return text
    return re.sub(f'"{marker}(\\d+){marker}"', lambda m: numbers[int(m.group(1))], text)


# --------------------------------------------------------------------------- record ids

#: The checksum alphabet of 18-character ids: character n says which of five characters are upper case.
SFID_SUFFIX_ALPHABET = string.ascii_uppercase + "012345"
_SFID_CHARS = frozenset(string.ascii_letters + string.digits)


def sfid_suffix(id15: str) -> str:
    """The three checksum characters of a 15-character id: per 5-character chunk, bit ``i`` set when its
    ``i``-th character is an upper-case letter, as a character of :data:`SFID_SUFFIX_ALPHABET`."""
    out = []
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(id15[chunk * 5:chunk * 5 + 5]) if "A" <= ch <= "Z")
        out.append(SFID_SUFFIX_ALPHABET[bits])
    return "".join(out)


def normalize_sfid(sfid: str) -> str:
    """The 18-character form of a Salesforce record id.

    A 15-character id (case-sensitive) gets its checksum suffix. An 18-character id is checked against its
    suffix, which is case-insensitive and encodes the case of the first 15 characters: an id whose letters
    were folded to one case (a case-insensitive store upper- or lower-cased it) gets its case back; a
    mixed-case id whose suffix does not match is refused. The result's suffix is upper case.

    Raises ``ValueError`` naming the bad value when it is not a Salesforce id (length other than 15/18,
    a character other than ``[A-Za-z0-9]``, a suffix that does not match).
    """
    if not isinstance(sfid, str) or len(sfid) not in (15, 18) or not _SFID_CHARS.issuperset(sfid):
        raise ValueError(f"{sfid!r} is not a Salesforce id (15 or 18 letters and digits)")
    if len(sfid) == 15:
        return sfid + sfid_suffix(sfid)
    base, suffix = sfid[:15], sfid[15:].upper()
    restored: list[str] = []
    for chunk, code in enumerate(suffix):
        bits = SFID_SUFFIX_ALPHABET.find(code)
        if bits < 0:
            raise ValueError(f"{sfid!r} is not a Salesforce id (checksum character {code!r})")
        for i, ch in enumerate(base[chunk * 5:chunk * 5 + 5]):
            upper = bool(bits >> i & 1)
            if upper and not ch.isalpha():
                raise ValueError(f"{sfid!r} is not a Salesforce id (its checksum does not match)")
            restored.append(ch.upper() if upper else ch.lower())
    fixed = "".join(restored)
    folded = base in (base.lower(), base.upper())
    if fixed != base and not folded:
        raise ValueError(f"{sfid!r} is not a Salesforce id (its checksum does not match)")
    return fixed + suffix


def is_sfid(value: object) -> bool:
    """True when ``value`` is a 15- or 18-character Salesforce id (see :func:`normalize_sfid`)."""
    if not isinstance(value, str):
        return False
    try:
        normalize_sfid(value)
    except ValueError:
        return False
    return True


def canonical_sfid(value: str | None) -> str | None:
    """How an id entering sfsync is kept: the 18-character form of a Salesforce id; ``None`` and a value
    that is no Salesforce id at all are returned unchanged (there is nothing to normalise: the side it is
    written to refuses it with its own error, e.g. Salesforce's ``MALFORMED_ID``, and the record fails with
    that reason instead of being dropped here)."""
    if value is None:
        return None
    try:
        return normalize_sfid(value)
    except ValueError:
        return value
