"""Object and field definitions of the emulated org, their describe output, and value validation.

The built-in org has Account, Contact, Lead, Case and User with their usual standard fields, an
external id ``Local_Id__c`` on each, and (on Account, Contact and Lead) custom fields of the types a
mapping checker must refuse: multipicklist, location, encryptedstring and rich-text textarea (the
standard compound address fields cover the address type); Attachment, with its base64 ``Body``, has
neither custom fields nor an external id, as in a real org. A YAML file adds objects and fields::

    objects:
      Invoice__c:            # new custom object (gets Id, Name, OwnerId and the system fields)
        label: Invoice
        keyPrefix: a01       # optional; assigned if absent
        fields:
          Amount__c: {type: currency, precision: 18, scale: 2}
          Code__c: {type: string, length: 20, externalId: true, unique: true}
      Contact:               # existing object: extra fields only
        fields:
          Nickname__c: {type: string, length: 40}
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from sfsync.emulator.errors import SfError
from sfsync.emulator.ids import normalize

STRING_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox", "encryptedstring"}
)
NUMBER_TYPES = frozenset({"double", "currency", "percent"})
SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "address": "urn:address",
    "location": "urn:location",
    "base64": "xsd:base64Binary",
}
ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def format_datetime(moment: datetime) -> str:
    """Salesforce's REST datetime form, ``2024-05-01T12:34:56.000+0000`` (UTC, millisecond precision)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime:
    """Parse an ISO-8601 datetime as clients send it (``Z``, ``+0000`` or ``+00:00``; naive means UTC)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    match = re.search(r"([+-])(\d{2})(\d{2})$", value)
    if match and value[match.start() - 1 : match.start()] != ":":
        value = value[: match.start()] + f"{match.group(1)}{match.group(2)}:{match.group(3)}"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _number_text(value: int | float | Decimal) -> str:
    """A number written into a text field: a Decimal in plain notation, others as ``str``."""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _trimmed(number: Decimal) -> Decimal:
    """``number`` without trailing fraction zeros beyond the first (``10.50`` -> ``10.5``, ``10.00`` ->
    ``10.0``), in plain notation: how Salesforce's JSON writes a stored decimal."""
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0")
        if text.endswith("."):
            text += "0"
    return Decimal(text)


@dataclass
class FieldDef:
    """One field of an sObject, with the describe attributes the clients read.

    ``required`` (derived) means Salesforce reports REQUIRED_FIELD_MISSING when the field is absent
    on create or nulled on update.
    """

    name: str
    type: str
    label: str = ""
    length: int = 0
    precision: int = 0
    scale: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    default_value: Any = None
    unique: bool = False
    external_id: bool = False
    case_sensitive: bool = False
    custom: bool = False
    calculated: bool = False
    auto_number: bool = False
    picklist_values: tuple[str, ...] = ()
    restricted_picklist: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    compound_field_name: str | None = None
    html_formatted: bool = False
    extra_type_info: str | None = None
    id_lookup: bool = False

    def __post_init__(self) -> None:
        if not self.label:
            self.label = re.sub(r"__c$|__s$", "", self.name).replace("_", " ")
        if self.type in STRING_TYPES and not self.length:
            self.length = 255

    @property
    def required(self) -> bool:
        """True when the field must have a value (not nillable, writable, no default)."""
        return not self.nillable and self.createable and not self.defaulted_on_create

    def describe(self) -> dict[str, Any]:
        """The field's entry in ``fields[]`` of an sObject describe."""
        is_text = self.type in STRING_TYPES or self.type in ("id", "reference")
        return {
            "aggregatable": self.type not in ("textarea", "address", "location"),
            "autoNumber": self.auto_number,
            "byteLength": self.length * 3 if is_text else 0,
            "calculated": self.calculated,
            "caseSensitive": self.case_sensitive,
            "compoundFieldName": self.compound_field_name,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default_value,
            "defaultedOnCreate": self.defaulted_on_create,
            "dependentPicklist": False,
            "deprecatedAndHidden": False,
            "digits": 9 if self.type == "int" else 0,
            "encrypted": self.type == "encryptedstring",
            "externalId": self.external_id,
            "extraTypeInfo": self.extra_type_info,
            "filterable": self.type not in ("textarea", "address", "location"),
            "groupable": self.type in STRING_TYPES | {"id", "reference", "boolean", "date", "int"},
            "htmlFormatted": self.html_formatted,
            "idLookup": self.id_lookup,
            "label": self.label,
            "length": self.length if is_text else 0,
            "name": self.name,
            "nameField": self.name == "Name",
            "nillable": self.nillable,
            "picklistValues": [
                {"active": True, "defaultValue": value == self.default_value, "label": value, "validFor": None,
                 "value": value}
                for value in self.picklist_values
            ],
            "polymorphicForeignKey": len(self.reference_to) > 1,
            "precision": self.precision,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted_picklist,
            "scale": self.scale,
            "soapType": SOAP_TYPES.get(self.type, "xsd:string"),
            "sortable": self.type not in ("textarea", "multipicklist", "address", "location"),
            "type": self.type,
            "unique": self.unique,
            "updateable": self.updateable,
        }

    def coerce(self, value: Any) -> Any:
        """Validate ``value`` for this field and return its stored (JSON-ready) form.

        Raises SfError with Salesforce's codes: INVALID_TYPE_ON_FIELD_IN_RECORD, STRING_TOO_LONG,
        INVALID_EMAIL_ADDRESS, INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST, MALFORMED_ID.
        """
        if value is None or value == "":
            return None
        kind = self.type
        if kind in STRING_TYPES:
            return self._coerce_text(value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise self._bad_type(value)
        if kind == "int":
            return self._coerce_int(value)
        if kind in NUMBER_TYPES:
            return self._coerce_number(value)
        if kind == "date":
            return self._coerce_date(value)
        if kind == "datetime":
            if not isinstance(value, str):
                raise self._bad_type(value)
            try:
                return format_datetime(parse_datetime(value))
            except ValueError:
                raise self._bad_type(value) from None
        if kind in ("reference", "id"):
            normal = normalize(value)
            if normal is None:
                raise SfError(
                    "MALFORMED_ID", f"{self.label}: id value of incorrect type: {value}", [self.name]
                )
            return normal
        return value

    def _coerce_text(self, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise self._bad_type(value)
        text = value if isinstance(value, str) else _number_text(value)
        if len(text) > self.length:
            raise SfError(
                "STRING_TOO_LONG",
                f"{self.label}: data value too large: {text[:40]} (max length={self.length})",
                [self.name],
            )
        if self.type == "email" and not _EMAIL_RE.match(text):
            raise SfError("INVALID_EMAIL_ADDRESS", f"{self.label}: invalid email address: {text}", [self.name])
        if self.restricted_picklist and self.picklist_values:
            allowed = set(self.picklist_values)
            parts = text.split(";") if self.type == "multipicklist" else [text]
            bad = [part for part in parts if part not in allowed]
            if bad:
                raise SfError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{self.label}: bad value for restricted picklist field: {bad[0]}",
                    [self.name],
                )
        return text

    def _coerce_int(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self._bad_type(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise self._bad_type(value)

    def _coerce_number(self, value: Any) -> Decimal | int:
        """A number as Salesforce stores it: an exact decimal, rounded half up to ``scale`` places (a scale-0
        field keeps a fraction as sent: the emulator's simplification), an ``int`` when it is integral and
        the scale is 0. More than ``precision - scale`` integer digits: NUMBER_OUTSIDE_VALID_RANGE."""
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise self._bad_type(value)
        try:
            if isinstance(value, float):  # a value that reached us as a float: its shortest repr
                number = Decimal(repr(value))
            else:
                number = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            raise self._bad_type(value) from None
        if not number.is_finite():
            raise self._bad_type(value)
        if self.scale:
            digits = max(number.adjusted() + 1, 1) + self.scale + 1
            number = number.quantize(Decimal(1).scaleb(-self.scale), rounding=ROUND_HALF_UP,
                                     context=Context(prec=max(digits, 28)))
        if self.precision and number.adjusted() + 1 > self.precision - self.scale:
            raise SfError("NUMBER_OUTSIDE_VALID_RANGE",
                          f"{self.label}: value outside of valid range on numeric field: {value}", [self.name])
        if number == number.to_integral_value() and not self.scale:
            return int(number)
        return _trimmed(number)

    def _coerce_date(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._bad_type(value)
        text = value[:10] if "T" in value else value
        if not _DATE_RE.match(text):
            raise self._bad_type(value)
        try:
            date.fromisoformat(text)
        except ValueError:
            raise self._bad_type(value) from None
        return text

    def _bad_type(self, value: Any) -> SfError:
        return SfError(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            f"{self.label}: value not of required type: {value}",
            [self.name],
        )


@dataclass
class ObjectDef:
    """An sObject type: its fields in describe order plus derived lookup tables.

    ``compounds`` maps a compound field (``BillingAddress``, ``Name`` on Contact, a location) to its
    components as ``(component field, CDC key)`` pairs; CDC payloads nest components under it.
    """

    name: str
    label: str
    label_plural: str
    key_prefix: str
    custom: bool = False
    deletable: bool = True
    fields: dict[str, FieldDef] = field(default_factory=dict)
    compounds: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the case-insensitive field lookup and the relationship map after field changes."""
        self.by_lower: dict[str, FieldDef] = {name.lower(): fdef for name, fdef in self.fields.items()}
        self.relationships: dict[str, FieldDef] = {
            fdef.relationship_name.lower(): fdef for fdef in self.fields.values() if fdef.relationship_name
        }
        self.external_ids: dict[str, FieldDef] = {
            name: fdef for name, fdef in self.fields.items() if fdef.external_id
        }
        self.component_of: dict[str, tuple[str, str]] = {
            component: (compound, key)
            for compound, parts in self.compounds.items()
            for component, key in parts
        }

    def add(self, fdef: FieldDef) -> None:
        """Add (or replace) a field and refresh lookups."""
        self.fields[fdef.name] = fdef
        self.reindex()

    def field(self, name: str) -> FieldDef | None:
        """Case-insensitive field lookup."""
        return self.by_lower.get(name.lower())

    @property
    def channel(self) -> str:
        """The CDC channel of this object (``/data/AccountChangeEvent``, ``/data/Foo__ChangeEvent``)."""
        base = self.name[:-1] if self.name.endswith("__c") else self.name
        return f"/data/{base}ChangeEvent"

    @property
    def event_schema_id(self) -> str:
        """A stable opaque schema id for this object's change events."""
        digest = hashlib.sha256(("|".join(self.fields)).encode()).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def global_entry(self, version: str) -> dict[str, Any]:
        """The object's entry in the global describe ``sobjects`` list."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "activateable": False,
            "createable": True,
            "custom": self.custom,
            "customSetting": False,
            "deletable": self.deletable,
            "deprecatedAndHidden": False,
            "feedEnabled": False,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label_plural,
            "layoutable": True,
            "mergeable": self.name in ("Account", "Contact", "Lead"),
            "mruEnabled": True,
            "name": self.name,
            "queryable": True,
            "replicateable": True,
            "retrieveable": True,
            "searchable": True,
            "triggerable": True,
            "undeletable": self.deletable,
            "updateable": True,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def describe(self, version: str, children: list[dict[str, Any]]) -> dict[str, Any]:
        """The full ``sobjects/{name}/describe`` document."""
        doc = self.global_entry(version)
        doc.update(
            {
                "childRelationships": children,
                "fields": [fdef.describe() for fdef in self.fields.values()],
                "recordTypeInfos": [],
                "supportedScopes": [{"label": "All", "name": "everything"}],
            }
        )
        return doc


def _system_fields(owner: bool = True) -> list[FieldDef]:
    """Id, audit fields and (optionally) OwnerId, common to every object."""
    fields = [
        FieldDef("Id", "id", label="Record ID", length=18, nillable=False, createable=False, updateable=False,
                 defaulted_on_create=True, id_lookup=True),
        FieldDef("IsDeleted", "boolean", label="Deleted", nillable=False, createable=False, updateable=False,
                 defaulted_on_create=True, default_value=False),
    ]
    if owner:
        fields.append(
            FieldDef("OwnerId", "reference", label="Owner ID", length=18, nillable=False, defaulted_on_create=True,
                     reference_to=("User",), relationship_name="Owner")
        )
    for name, label in (("CreatedDate", "Created Date"), ("LastModifiedDate", "Last Modified Date"),
                        ("SystemModstamp", "System Modstamp")):
        fields.append(FieldDef(name, "datetime", label=label, nillable=False, createable=False, updateable=False,
                               defaulted_on_create=True))
    for name, rel in (("CreatedById", "CreatedBy"), ("LastModifiedById", "LastModifiedBy")):
        fields.append(FieldDef(name, "reference", length=18, nillable=False, createable=False, updateable=False,
                               defaulted_on_create=True, reference_to=("User",), relationship_name=rel))
    return fields


def _address(prefix: str, compound: str) -> tuple[list[FieldDef], list[tuple[str, str]]]:
    """Component fields + the read-only compound address field."""
    lengths = {"Street": 255, "City": 40, "State": 80, "PostalCode": 20, "Country": 80}
    fields = [
        FieldDef(f"{prefix}{part}", "textarea" if part == "Street" else "string", length=lengths[part],
                 compound_field_name=compound)
        for part in ADDRESS_PARTS
    ]
    fields.append(FieldDef(compound, "address", createable=False, updateable=False))
    return fields, [(f"{prefix}{part}", part) for part in ADDRESS_PARTS]


def _refused_types() -> tuple[list[FieldDef], list[tuple[str, str]]]:
    """Custom fields of types a mapping checker must refuse (location compound included)."""
    fields = [
        FieldDef("Interests__c", "multipicklist", length=4099, custom=True,
                 picklist_values=("Sports", "Music", "Travel")),
        FieldDef("Geo__c", "location", custom=True, createable=False, updateable=False),
        FieldDef("Geo__Latitude__s", "double", label="Geo (Latitude)", precision=18, scale=15, custom=True,
                 compound_field_name="Geo__c"),
        FieldDef("Geo__Longitude__s", "double", label="Geo (Longitude)", precision=18, scale=15, custom=True,
                 compound_field_name="Geo__c"),
        FieldDef("Secret__c", "encryptedstring", length=175, custom=True),
        FieldDef("Rich_Notes__c", "textarea", length=32768, custom=True, html_formatted=True,
                 extra_type_info="richtextarea"),
    ]
    return fields, [("Geo__Latitude__s", "Latitude"), ("Geo__Longitude__s", "Longitude")]


def _local_id() -> FieldDef:
    return FieldDef("Local_Id__c", "string", label="Local Id", length=255, unique=True, external_id=True,
                    custom=True, id_lookup=True)


def _person_name(required_last: bool = True) -> tuple[list[FieldDef], list[tuple[str, str]]]:
    fields = [
        FieldDef("Salutation", "picklist", picklist_values=("Mr.", "Ms.", "Mrs.", "Dr.", "Prof."), length=40),
        FieldDef("FirstName", "string", label="First Name", length=40),
        FieldDef("LastName", "string", label="Last Name", length=80, nillable=not required_last),
        FieldDef("Name", "string", label="Full Name", length=121, nillable=False, createable=False,
                 updateable=False, calculated=False, defaulted_on_create=True),
    ]
    return fields, [("FirstName", "FirstName"), ("LastName", "LastName"), ("Salutation", "Salutation")]


def _build(name: str, label: str, plural: str, prefix: str, body: list[FieldDef],
           compounds: dict[str, list[tuple[str, str]]], owner: bool = True, deletable: bool = True) -> ObjectDef:
    fields = _system_fields(owner)
    fields[1:1] = body
    return ObjectDef(name=name, label=label, label_plural=plural, key_prefix=prefix, deletable=deletable,
                     fields={f.name: f for f in fields}, compounds=compounds)


def standard_objects() -> dict[str, ObjectDef]:
    """The built-in org schema: Account, Contact, Lead, Case, User, Attachment."""
    refused, geo = _refused_types()
    industries = ("Agriculture", "Banking", "Education", "Energy", "Retail", "Technology")
    lead_status = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted")

    bill, bill_parts = _address("Billing", "BillingAddress")
    account = _build("Account", "Account", "Accounts", "001", [
        FieldDef("Name", "string", label="Account Name", length=255, nillable=False),
        FieldDef("Type", "picklist", picklist_values=("Prospect", "Customer", "Partner", "Other")),
        FieldDef("Industry", "picklist", picklist_values=industries),
        FieldDef("AccountNumber", "string", label="Account Number", length=40),
        FieldDef("Phone", "phone", label="Account Phone", length=40),
        FieldDef("Website", "url", length=255),
        FieldDef("NumberOfEmployees", "int", label="Employees", precision=8),
        FieldDef("AnnualRevenue", "currency", label="Annual Revenue", precision=18, scale=0),
        FieldDef("ParentId", "reference", label="Parent Account ID", length=18, reference_to=("Account",),
                 relationship_name="Parent"),
        FieldDef("Description", "textarea", label="Account Description", length=32000),
        *bill, _local_id(), *refused,
    ], {"BillingAddress": bill_parts, "Geo__c": geo})

    name_fields, name_parts = _person_name()
    mail, mail_parts = _address("Mailing", "MailingAddress")
    contact = _build("Contact", "Contact", "Contacts", "003", [
        *name_fields,
        FieldDef("AccountId", "reference", label="Account ID", length=18, reference_to=("Account",),
                 relationship_name="Account"),
        FieldDef("Email", "email", length=80),
        FieldDef("Phone", "phone", label="Business Phone", length=40),
        FieldDef("MobilePhone", "phone", label="Mobile Phone", length=40),
        FieldDef("Title", "string", length=128),
        FieldDef("Birthdate", "date"),
        FieldDef("HasOptedOutOfEmail", "boolean", label="Email Opt Out", nillable=False, defaulted_on_create=True,
                 default_value=False),
        FieldDef("Description", "textarea", label="Contact Description", length=32000),
        *mail, _local_id(), *refused,
    ], {"Name": name_parts, "MailingAddress": mail_parts, "Geo__c": geo})

    lead_name, lead_name_parts = _person_name()
    lead_addr, lead_addr_parts = _address("", "Address")
    lead = _build("Lead", "Lead", "Leads", "00Q", [
        *lead_name,
        FieldDef("Company", "string", length=255, nillable=False),
        FieldDef("Email", "email", length=80),
        FieldDef("Phone", "phone", length=40),
        FieldDef("Title", "string", length=128),
        FieldDef("Status", "picklist", label="Lead Status", nillable=False, defaulted_on_create=True,
                 default_value="Open - Not Contacted", picklist_values=lead_status, restricted_picklist=True),
        FieldDef("LeadSource", "picklist", label="Lead Source", picklist_values=("Web", "Phone Inquiry", "Other")),
        FieldDef("IsConverted", "boolean", label="Converted", nillable=False, createable=False, updateable=False,
                 defaulted_on_create=True, default_value=False),
        FieldDef("Description", "textarea", length=32000),
        *lead_addr, _local_id(), *refused,
    ], {"Name": lead_name_parts, "Address": lead_addr_parts, "Geo__c": geo})

    case = _build("Case", "Case", "Cases", "500", [
        FieldDef("CaseNumber", "string", label="Case Number", length=30, nillable=False, createable=False,
                 updateable=False, defaulted_on_create=True, auto_number=True),
        FieldDef("Subject", "string", length=255),
        FieldDef("Description", "textarea", length=32000),
        FieldDef("Status", "picklist", nillable=False, defaulted_on_create=True, default_value="New",
                 picklist_values=("New", "Working", "Escalated", "Closed")),
        FieldDef("Priority", "picklist", nillable=False, defaulted_on_create=True, default_value="Medium",
                 picklist_values=("High", "Medium", "Low")),
        FieldDef("Origin", "picklist", label="Case Origin", picklist_values=("Phone", "Email", "Web")),
        FieldDef("AccountId", "reference", label="Account ID", length=18, reference_to=("Account",),
                 relationship_name="Account"),
        FieldDef("ContactId", "reference", label="Contact ID", length=18, reference_to=("Contact",),
                 relationship_name="Contact"),
        FieldDef("SuppliedEmail", "email", label="Web Email", length=80),
        FieldDef("IsClosed", "boolean", label="Closed", nillable=False, createable=False, updateable=False,
                 defaulted_on_create=True, default_value=False),
        _local_id(),
    ], {})

    user_name, user_name_parts = _person_name()
    user = _build("User", "User", "Users", "005", [
        FieldDef("Username", "string", length=80, nillable=False, unique=True, id_lookup=True),
        *[f for f in user_name if f.name != "Salutation"],
        FieldDef("Email", "email", length=128, nillable=False),
        FieldDef("Alias", "string", length=8, nillable=False),
        FieldDef("IsActive", "boolean", label="Active", nillable=False, defaulted_on_create=True, default_value=True),
        FieldDef("Title", "string", length=80),
        FieldDef("Phone", "phone", length=40),
        FieldDef("TimeZoneSidKey", "picklist", label="Time Zone", nillable=False, defaulted_on_create=True,
                 default_value="America/Los_Angeles", picklist_values=("America/Los_Angeles", "Europe/Paris", "GMT")),
        _local_id(),
    ], {"Name": [p for p in user_name_parts if p[0] != "Salutation"]}, owner=False, deletable=False)

    # Attachment: where an org's base64 content lives (custom fields cannot be base64, and Attachment takes no
    # custom fields, so it has no Local_Id__c either); its parent is polymorphic and fixed once created.
    attachment = _build("Attachment", "Attachment", "Attachments", "00P", [
        FieldDef("ParentId", "reference", label="Parent ID", length=18, nillable=False, updateable=False,
                 reference_to=("Account", "Contact", "Lead", "Case"), relationship_name="Parent"),
        FieldDef("Name", "string", label="File Name", length=255, nillable=False),
        FieldDef("IsPrivate", "boolean", label="Private", nillable=False, defaulted_on_create=True,
                 default_value=False),
        FieldDef("ContentType", "string", label="Content Type", length=120),
        FieldDef("BodyLength", "int", label="Body Length", precision=18, createable=False, updateable=False),
        FieldDef("Body", "base64", nillable=False),
        FieldDef("Description", "textarea", length=500),
    ], {})

    return {obj.name: obj for obj in (account, contact, lead, case, user, attachment)}


_YAML_KEYS = {
    "label": "label", "length": "length", "precision": "precision", "scale": "scale",
    "nillable": "nillable", "createable": "createable", "updateable": "updateable",
    "unique": "unique", "externalId": "external_id", "caseSensitive": "case_sensitive",
    "defaultValue": "default_value", "defaultedOnCreate": "defaulted_on_create",
    "restrictedPicklist": "restricted_picklist", "relationshipName": "relationship_name",
    "htmlFormatted": "html_formatted", "extraTypeInfo": "extra_type_info",
}


def _field_from_yaml(obj_name: str, name: str, spec: dict[str, Any]) -> FieldDef:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"objects.{obj_name}.fields.{name}: needs a mapping with a 'type'")
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "type":
            continue
        if key == "picklistValues":
            kwargs["picklist_values"] = tuple(str(v) for v in value)
        elif key == "referenceTo":
            kwargs["reference_to"] = tuple([value] if isinstance(value, str) else value)
        elif key in _YAML_KEYS:
            kwargs[_YAML_KEYS[key]] = value
        else:
            raise ValueError(f"objects.{obj_name}.fields.{name}: unknown key {key!r}")
    kwargs.setdefault("custom", name.endswith("__c"))
    if kwargs.get("external_id"):
        kwargs.setdefault("id_lookup", True)
    if spec["type"] == "reference" and "relationship_name" not in kwargs:
        kwargs["relationship_name"] = name[:-3] + "__r" if name.endswith("__c") else name.removesuffix("Id")
    return FieldDef(name, str(spec["type"]), **kwargs)


def load_extra_schema(objects: dict[str, ObjectDef], path: Path) -> None:
    """Add the objects and fields described in the YAML file at ``path`` to ``objects`` (in place)."""
    doc = yaml.safe_load(path.read_text()) or {}
    used = {obj.key_prefix for obj in objects.values()}
    for obj_name, spec in (doc.get("objects") or {}).items():
        spec = spec or {}
        obj = objects.get(obj_name)
        if obj is None:
            prefix = spec.get("keyPrefix") or next(
                f"a{n:02d}" for n in range(100) if f"a{n:02d}" not in used
            )
            used.add(prefix)
            label = spec.get("label", obj_name.removesuffix("__c").replace("_", " "))
            obj = _build(obj_name, label, spec.get("labelPlural", label + "s"), prefix,
                         [FieldDef("Name", "string", label=f"{label} Name", length=80, nillable=False)], {})
            obj.custom = obj_name.endswith("__c")
            objects[obj_name] = obj
        for field_name, field_spec in (spec.get("fields") or {}).items():
            obj.add(_field_from_yaml(obj_name, field_name, field_spec))


class Schema:
    """All object definitions of the org plus lookups across objects (child relationships)."""

    def __init__(self, extra: Path | None = None) -> None:
        self.objects = standard_objects()
        if extra is not None:
            load_extra_schema(self.objects, extra)
        self.by_lower = {name.lower(): obj for name, obj in self.objects.items()}
        self.by_prefix = {obj.key_prefix: obj for obj in self.objects.values()}

    def get(self, name: str) -> ObjectDef | None:
        """Case-insensitive object lookup."""
        return self.by_lower.get(name.lower())

    def require(self, name: str) -> ObjectDef:
        """The object named ``name`` or 404 NOT_FOUND (as the sobjects resource reports it)."""
        obj = self.get(name)
        if obj is None:
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        return obj

    def for_id(self, record_id: str) -> ObjectDef | None:
        """The object whose key prefix starts ``record_id``."""
        return self.by_prefix.get(record_id[:3])

    def children(self, parent: str) -> list[dict[str, Any]]:
        """childRelationships of ``parent`` for its describe."""
        out = []
        for obj in self.objects.values():
            for fdef in obj.fields.values():
                if parent in fdef.reference_to and fdef.name not in ("CreatedById", "LastModifiedById", "OwnerId"):
                    out.append({"cascadeDelete": False, "childSObject": obj.name, "field": fdef.name,
                                "relationshipName": obj.label_plural.replace(" ", "") if obj.name != parent
                                else "ChildAccounts", "restrictedDelete": False})
        return out

    def channels(self) -> dict[str, ObjectDef]:
        """CDC channel name -> object."""
        return {obj.channel: obj for obj in self.objects.values()}


def now_utc() -> datetime:
    """The current time (UTC)."""
    return datetime.now(UTC)
