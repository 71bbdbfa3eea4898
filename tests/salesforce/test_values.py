"""Value typing from describe and outbound JSON values (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

from sfsync.salesforce.values import ObjectTypes, format_datetime, to_json_value, typed_value

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
