"""Value typing from describe and outbound JSON values (pure)."""

from __future__ import annotations

import random
import re
import string
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from sfsync.salesforce.values import (
    ObjectTypes,
    canonical_sfid,
    dumps_exact,
    format_datetime,
    is_sfid,
    loads_exact,
    normalize_sfid,
    to_json_value,
    typed_value,
)

DESCRIBE = {
    "name": "Account",
    "fields": [
        {"name": "Id", "type": "id"},
        {"name": "Name", "type": "string"},
        {"name": "NumberOfEmployees", "type": "int"},
        {"name": "AnnualRevenue", "type": "currency"},
        {"name": "Share__c", "type": "percent"},
        {"name": "Active__c", "type": "boolean"},
        {"name": "Opened__c", "type": "date"},
        {"name": "LastModifiedDate", "type": "datetime"},
        {"name": "Opens__c", "type": "time"},
        {"name": "BillingCity", "type": "string", "compoundFieldName": "BillingAddress"},
        {"name": "BillingStreet", "type": "textarea", "compoundFieldName": "BillingAddress"},
        {"name": "BillingAddress", "type": "address"},
        {"name": "FirstName", "type": "string"},
        {"name": "Geo__Latitude__s", "type": "double", "compoundFieldName": "Geo__c"},
        {"name": "Geo__c", "type": "location"},
    ],
}


def test_values_are_typed_by_describe() -> None:
    types = ObjectTypes.from_describe(DESCRIBE)
    body = {
        "ChangeEventHeader": {"x": 1},
        "Name": "Acme", "NumberOfEmployees": 12, "AnnualRevenue": 1234.5, "Share__c": 0.1,
        "Active__c": True, "Opened__c": "2024-05-01", "LastModifiedDate": "2024-04-26T18:38:05.000Z",
        "Opens__c": "09:30:00.000Z", "BillingAddress": {"City": "Paris", "Street": "1 rue"},
        "Name2": None, "Geo__c": {"Latitude": 48.85},
    }
    values = types.typed_values(body)
    assert values == {
        "Name": "Acme", "NumberOfEmployees": 12, "AnnualRevenue": Decimal("1234.5"), "Share__c": Decimal("0.1"),
        "Active__c": True, "Opened__c": date(2024, 5, 1),
        "LastModifiedDate": datetime(2024, 4, 26, 18, 38, 5, tzinfo=UTC), "Opens__c": time(9, 30),
        "BillingCity": "Paris", "BillingStreet": "1 rue", "Name2": None, "Geo__Latitude__s": Decimal("48.85"),
    }
    assert type(values["NumberOfEmployees"]) is int


def test_compound_names_are_flattened() -> None:
    types = ObjectTypes.from_describe(DESCRIBE)
    assert types.field_names(["BillingAddress.City", "Name", "Name.FirstName", "Geo__c.Latitude"]) == [
        "BillingCity", "Name", "FirstName", "Geo__Latitude__s"]
    assert types.field_name("Unknown.Part") == "Unknown.Part"


def test_bad_values_are_kept_not_fatal() -> None:
    assert typed_value("int", "twelve") == "twelve"
    assert typed_value("date", "not a date") == "not a date"
    assert typed_value("double", 1.5) == Decimal("1.5")
    assert typed_value(None, 2.5) == Decimal("2.5")
    assert typed_value("string", {"a": 1}) == '{"a": 1}'
    assert typed_value("boolean", "true") is True
    assert typed_value("datetime", 1714156685000) == datetime(2024, 4, 26, 18, 38, 5, tzinfo=UTC)


def test_outbound_json_values() -> None:
    assert to_json_value(Decimal("10.50")) == 10.5
    assert to_json_value(Decimal("12")) == 12
    assert to_json_value(date(2024, 1, 2)) == "2024-01-02"
    assert to_json_value(datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)) == "2024-01-02T03:04:05.678Z"
    assert to_json_value(time(9, 30)) == "09:30:00.000Z"
    assert to_json_value(b"hi") == "aGk="
    assert to_json_value(None) is None and to_json_value(True) is True
    assert format_datetime(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00.000Z"


# --------------------------------------------------------------------------- exact numbers and ids (issue 10, 11)


def test_exact_json_keeps_every_digit() -> None:
    document = {"records": [{"Amount__c": Decimal("12345678901234567.891"), "Big__c": 2**60 + 1,
                             "Small__c": Decimal("1E-7"), "Neg__c": Decimal("-0.10"), "Name": "x\u0000y"}]}
    text = dumps_exact(document, separators=(",", ":"))
    assert '"Amount__c":12345678901234567.891' in text and f'"Big__c":{2**60 + 1}' in text
    assert '"Small__c":0.0000001' in text and '"Neg__c":-0.10' in text
    assert loads_exact(text) == document
    assert dumps_exact({"a": 1}) == '{"a": 1}'
    assert dumps_exact(["a marker-looking string", Decimal("2")]) == '["a marker-looking string", 2]'
    with pytest.raises(ValueError):
        dumps_exact({"x": Decimal("NaN")})
    with pytest.raises(TypeError):
        dumps_exact({"x": object()})
    assert to_json_value(Decimal("12345678901234567.891")) == Decimal("12345678901234567.891")
    assert dumps_exact(to_json_value(Decimal(2**60 + 1))) == str(2**60 + 1)
    assert typed_value("currency", Decimal("12345678901234567.891")) == Decimal("12345678901234567.891")
    assert typed_value("long", Decimal("1152921504606846977")) == 2**60 + 1
    assert typed_value("long", 2**60 + 1) == 2**60 + 1
    assert typed_value("string", Decimal("1.50")) == "1.50"
    assert typed_value(None, Decimal("1.50")) == Decimal("1.50")


def _independent_suffix(id15: str) -> str:
    """The checksum as Salesforce's documentation explains it: reverse each chunk of five, write 1 for an
    upper-case letter and 0 otherwise, read the five bits as a binary number, look it up in A-Z0-5."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    chunks = [id15[i:i + 5] for i in (0, 5, 10)]
    return "".join(alphabet[int("".join("1" if c.isupper() else "0" for c in reversed(chunk)), 2)]
                   for chunk in chunks)


def test_normalize_sfid_known_pairs_and_an_independent_implementation() -> None:
    known = {"001000000000001": "001000000000001AAA", "001A0000006Vm9r": "001A0000006Vm9rIAC",
             "0018d00000003D7": "0018d00000003D7AAI", "a0XZZZZZzzzzzAB": "a0XZZZZZzzzzzAB2HY"}  # the last: by hand
    for id15, id18 in known.items():
        assert normalize_sfid(id15) == id18 == id15 + _independent_suffix(id15)
        assert normalize_sfid(id18) == id18 and normalize_sfid(id18[:15] + id18[15:].lower()) == id18
        # the 18-character form is case-insensitive: an id folded to one case gets its case back
        assert normalize_sfid(id18.lower()) == id18 and normalize_sfid(id18.upper()) == id18
    rng = random.Random(11)
    chars = string.ascii_letters + string.digits
    for _ in range(2000):
        id15 = "".join(rng.choice(chars) for _ in range(15))
        assert normalize_sfid(id15) == id15 + _independent_suffix(id15)
        assert normalize_sfid(normalize_sfid(id15)) == normalize_sfid(id15)


def test_normalize_sfid_agrees_with_the_emulator_ids() -> None:
    from sfsync.emulator import ids

    for prefix, counter in (("001", 1), ("003", 12345), ("00Q", 62**5 + 7), ("a0X", 62**9 - 1)):
        made = ids.make_id(prefix, counter)
        assert normalize_sfid(made) == made == ids.normalize(made[:15]) == normalize_sfid(made[:15])


def test_bad_ids_raise_naming_the_value_and_canonical_sfid_leaves_them() -> None:
    for bad in ("001XX", "001000000000000003", "0018d00000003D7AAA", "0018d00000003D7-AI", "", "001*"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            normalize_sfid(bad)
        assert canonical_sfid(bad) == bad and not is_sfid(bad)
    assert canonical_sfid(None) is None and canonical_sfid("0018d00000003D7") == "0018d00000003D7AAI"
    assert is_sfid("0018d00000003D7") and not is_sfid(15)
    types = ObjectTypes.from_describe({"name": "Contact", "fields": [
        {"name": "Id", "type": "id"}, {"name": "AccountId", "type": "reference"}, {"name": "Title", "type": "string"}]})
    assert types.typed_values({"Id": "0038d00000004Xy", "AccountId": "0018d00000003D7", "Title": "0018d00000003D7"}) \
        == {"Id": "0038d00000004XyAAI", "AccountId": "0018d00000003D7AAI", "Title": "0018d00000003D7"}
    assert types.typed_value("AccountId", "not an id") == "not an id"
