"""Custom validation rules (FIELD_CUSTOM_VALIDATION_EXCEPTION) through every write path, and their control API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sfsync.devstack.emulator import EmulatorHandle

from .conftest import Raw

CODE = "FIELD_CUSTOM_VALIDATION_EXCEPTION"
ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "message": "Record rolled back because not all records were valid and the request was using "
                          "AllOrNone header", "fields": []}
UPSERT = "composite/sobjects/Contact/Local_Id__c"


def _batch(n: int, bad: int) -> list[dict[str, Any]]:
    """``n`` new contacts; record ``bad`` has Title "Intern"."""
    return [{"attributes": {"type": "Contact"}, "Local_Id__c": f"c{i}", "LastName": f"L{i}",
             "Title": "Intern" if i == bad else "Engineer"} for i in range(n)]


def test_single_create_rejected(org: EmulatorHandle, sf: Salesforce) -> None:
    rule = org.control.add_validation_rule(object="contact", field="title", equals="Intern",
                                           message="Interns cannot be contacts")
    assert rule == {"id": rule["id"], "object": "Contact", "field": "Title", "equals": "Intern", "regex": None,
                    "error_code": CODE, "message": "Interns cannot be contacts", "fields": ["Title"], "fired": 0}
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.create({"LastName": "Kid", "Title": "Intern"})
    assert info.value.status == 400
    assert info.value.content == [{"message": "Interns cannot be contacts", "errorCode": CODE, "fields": ["Title"]}]
    assert sf.Contact.create({"LastName": "Boss", "Title": "CEO"})["success"] is True
    assert sf.query("SELECT LastName FROM Contact")["records"][0]["LastName"] == "Boss"
    assert org.control.stats()["events_emitted"] == 1
    assert org.control.validation_rules() == [{**rule, "fired": 1}]


def test_single_update_and_upsert_rejected(org: EmulatorHandle, raw: Raw) -> None:
    org.control.add_validation_rule(object="Account", field="Name", regex=r"^TEST-",
                                    error_code="FIELD_INTEGRITY_EXCEPTION", fields=[])
    created = raw.call("POST", "sobjects/Account", json={"Name": "Acme", "Local_Id__c": "a1"})
    assert created.status_code == 201
    record_id = created.json()["id"]
    default_message = "Validation rule failed: Account.Name"
    expected = [{"message": default_message, "errorCode": "FIELD_INTEGRITY_EXCEPTION", "fields": []}]
    patched = raw.call("PATCH", f"sobjects/Account/{record_id}", json={"Name": "TEST-acme"})
    assert (patched.status_code, patched.json()) == (400, expected)
    upserted = raw.call("PATCH", "sobjects/Account/Local_Id__c/a1", json={"Name": "TEST-1"})
    assert (upserted.status_code, upserted.json()) == (400, expected)
    inserted = raw.call("PATCH", "sobjects/Account/Local_Id__c/a2", json={"Name": "TEST-2"})
    assert (inserted.status_code, inserted.json()) == (400, expected)
    assert raw.call("GET", f"sobjects/Account/{record_id}").json()["Name"] == "Acme"
    assert raw.call("PATCH", f"sobjects/Account/{record_id}", json={"Name": "xTEST-"}).status_code == 204
    assert [e["payload"]["ChangeEventHeader"]["changeType"] for e in org.control.events()["events"]] == \
        ["CREATE", "UPDATE"]


def test_update_fails_on_resulting_value(org: EmulatorHandle, sf: Salesforce) -> None:
    """The rule sees the record as it would be saved, so an update not touching the field fails too."""
    record_id = sf.Contact.create({"LastName": "Old", "Title": "Intern"})["id"]
    org.control.add_validation_rule(object="Contact", field="Title", equals="Intern")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.update(record_id, {"Phone": "123"})
    assert info.value.content[0]["errorCode"] == CODE
    assert sf.Contact.update(record_id, {"Title": None, "Phone": "123"}) == 204


def test_collection_upsert_one_of_200_fails(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.add_validation_rule(object="Contact", field="Title", equals="Intern", message="No interns")
    result = sf.restful(UPSERT, method="PATCH", json={"allOrNone": False, "records": _batch(200, bad=137)})
    assert len(result) == 200
    assert result[137] == {"success": False,
                           "errors": [{"statusCode": CODE, "message": "No interns", "fields": ["Title"]}]}
    ok = [r for i, r in enumerate(result) if i != 137]
    assert all(r["success"] and r["created"] and r["errors"] == [] for r in ok)
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 199
    events = org.control.events()["events"]
    assert len(events) == 199 and org.control.stats()["events_emitted"] == 199
    assert {e["payload"]["ChangeEventHeader"]["recordIds"][0] for e in events} == {r["id"] for r in ok}
    assert {e["payload"]["ChangeEventHeader"]["sequenceNumber"] for e in events} == set(range(1, 200))


def test_collection_upsert_all_or_none_rolls_back(org: EmulatorHandle, sf: Salesforce) -> None:
    sf.Contact.create({"LastName": "Existing", "Local_Id__c": "c5"})
    org.control.add_validation_rule(object="Contact", field="Title", equals="Intern")
    before = org.control.events()["last_replay_id"]
    result = sf.restful(UPSERT, method="PATCH", json={"allOrNone": True, "records": _batch(200, bad=0)})
    assert result[0] == {"success": False, "errors": [
        {"statusCode": CODE, "message": "Validation rule failed: Contact.Title", "fields": ["Title"]}]}
    assert all(r["success"] is False and r["errors"] == [ROLLED_BACK] for r in result[1:])
    assert "created" not in result[1]
    rows = sf.query("SELECT LastName, Title FROM Contact")["records"]
    assert [(r["LastName"], r["Title"]) for r in rows] == [("Existing", None)]
    assert org.control.events(after=before)["events"] == []


def test_collection_create_and_update(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.add_validation_rule(object="Contact", field="Title", equals="Intern")
    created = sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Contact"}, "LastName": "A", "Title": "Intern"},
        {"attributes": {"type": "Contact"}, "LastName": "B"}]})
    assert created[0] == {"success": False, "errors": [
        {"statusCode": CODE, "message": "Validation rule failed: Contact.Title", "fields": ["Title"]}]}
    assert created[1]["success"] is True
    updated = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Contact"}, "id": created[1]["id"], "Title": "Intern"}]})
    assert updated == [{"id": created[1]["id"], "success": False, "errors": [
        {"statusCode": CODE, "message": "Validation rule failed: Contact.Title", "fields": ["Title"]}]}]
    assert sf.Contact.get(created[1]["id"])["Title"] is None


def test_null_equals_and_typed_values(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.add_validation_rule(object="Account", field="Phone", equals=None, message="Phone required")
    org.control.add_validation_rule(object="Account", field="NumberOfEmployees", equals="13")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Account.create({"Name": "No phone"})
    assert info.value.content[0]["message"] == "Phone required"
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Account.create({"Name": "Unlucky", "Phone": "1", "NumberOfEmployees": 13})
    assert info.value.content[0]["fields"] == ["NumberOfEmployees"]
    assert sf.Account.create({"Name": "Fine", "Phone": "1", "NumberOfEmployees": 12})["success"] is True


def test_reset_and_clear_remove_rules(org: EmulatorHandle) -> None:
    org.control.add_validation_rule(object="Contact", field="LastName", equals="X")
    org.control.reset()
    assert org.control.validation_rules() == []
    sf = org.salesforce()  # reset ended the old sessions
    assert sf.Contact.create({"LastName": "X"})["success"] is True
    first = org.control.add_validation_rule(object="Contact", field="LastName", equals="Y")
    second = org.control.add_validation_rule(object="Contact", field="LastName", equals="Z")
    org.control.remove_validation_rule(first["id"])
    assert [r["id"] for r in org.control.validation_rules()] == [second["id"]]
    org.control.clear_validation_rules()
    assert org.control.validation_rules() == []
    assert sf.Contact.create({"LastName": "Z"})["success"] is True


@pytest.mark.parametrize("body", [
    {"object": "Nope", "field": "Name", "equals": "x"},
    {"object": "Account", "field": "Nope__c", "equals": "x"},
    {"object": "Account", "field": "BillingAddress", "equals": "x"},
    {"object": "Account", "field": "Name"},
    {"object": "Account", "field": "Name", "equals": "x", "regex": "x"},
    {"object": "Account", "field": "Name", "regex": "("},
    {"object": "Account", "field": "NumberOfEmployees", "equals": "many"},
    {"object": "Account", "field": "Name", "equals": "x", "colour": "red"},
])
def test_bad_rule_refused(org: EmulatorHandle, body: dict[str, Any]) -> None:
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.add_validation_rule(**body)
    assert info.value.response.status_code == 422
    assert info.value.response.json()["error"]
    assert org.control.validation_rules() == []


def test_unknown_field_in_collection_upsert(org: EmulatorHandle, sf: Salesforce) -> None:
    records = _batch(3, bad=-1)
    records[1]["Bogus__c"] = 1
    result = sf.restful(UPSERT, method="PATCH", json={"allOrNone": False, "records": records})
    assert result[1] == {"success": False, "errors": [{
        "statusCode": "INVALID_FIELD", "message": "No such column 'Bogus__c' on sobject of type Contact",
        "fields": ["Bogus__c"]}]}
    assert [r["success"] for r in result] == [True, False, True]
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 2
