"""REST record API through simple-salesforce, and exact error shapes over raw HTTPS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sfsync.devstack.emulator import EmulatorHandle
from sfsync.emulator.ids import normalize

from .conftest import Raw


def test_versions_list_and_old_version_refused(raw: Raw) -> None:
    versions = raw.call("GET", "/services/data/").json()
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions
    assert versions[0]["version"] == "42.0"
    old = raw.call("GET", "/services/data/v41.0/limits")
    assert old.status_code == 404
    assert old.json() == [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND",
                           "fields": []}]


def test_global_describe_lists_objects_with_key_prefixes(sf: Salesforce) -> None:
    described = sf.describe()
    prefixes = {o["name"]: o["keyPrefix"] for o in described["sobjects"]}
    assert prefixes == {"Account": "001", "Contact": "003", "Lead": "00Q", "Case": "500", "User": "005",
                        "Attachment": "00P"}
    account = next(o for o in described["sobjects"] if o["name"] == "Account")
    assert account["urls"]["describe"] == "/services/data/v59.0/sobjects/Account/describe"
    assert described["maxBatchSize"] == 200


def test_sobject_describe_field_attributes(sf: Salesforce) -> None:
    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert fields["Id"]["type"] == "id" and fields["Id"]["createable"] is False
    assert fields["LastName"]["nillable"] is False and fields["LastName"]["length"] == 80
    local = fields["Local_Id__c"]
    assert (local["externalId"], local["unique"], local["custom"], local["type"]) == (True, True, True, "string")
    assert fields["AccountId"]["referenceTo"] == ["Account"] and fields["AccountId"]["relationshipName"] == "Account"
    assert fields["MailingAddress"]["type"] == "address" and fields["MailingAddress"]["updateable"] is False
    assert fields["MailingCity"]["compoundFieldName"] == "MailingAddress"
    assert fields["Interests__c"]["type"] == "multipicklist"
    assert [p["value"] for p in fields["Interests__c"]["picklistValues"]] == ["Sports", "Music", "Travel"]
    assert fields["Geo__c"]["type"] == "location"
    assert fields["Secret__c"]["type"] == "encryptedstring"
    assert fields["Rich_Notes__c"]["extraTypeInfo"] == "richtextarea" and fields["Rich_Notes__c"]["htmlFormatted"]
    assert fields["CreatedDate"]["updateable"] is False and fields["CreatedDate"]["type"] == "datetime"
    assert sf.Lead.describe()["keyPrefix"] == "00Q"
    attachment = {f["name"]: f for f in sf.Attachment.describe()["fields"]}
    assert attachment["Body"]["type"] == "base64" and attachment["Body"]["soapType"] == "xsd:base64Binary"
    assert attachment["ParentId"]["referenceTo"] == ["Account", "Contact", "Lead", "Case"]
    assert (attachment["ParentId"]["createable"], attachment["ParentId"]["updateable"]) == (True, False)
    assert "Local_Id__c" not in attachment


def test_create_get_update_delete_roundtrip(sf: Salesforce) -> None:
    created = sf.Account.create({"Name": "Acme", "BillingCity": "Paris", "NumberOfEmployees": "42"})
    assert created["success"] is True and created["errors"] == []
    record_id = created["id"]
    assert len(record_id) == 18 and record_id.startswith("001") and normalize(record_id[:15]) == record_id
    record = sf.Account.get(record_id)
    assert record["attributes"] == {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{record_id}"}
    assert record["Name"] == "Acme" and record["NumberOfEmployees"] == 42 and record["IsDeleted"] is False
    assert record["BillingAddress"]["city"] == "Paris" and record["BillingAddress"]["street"] is None
    assert record["CreatedDate"].endswith("+0000") and record["OwnerId"].startswith("005")
    assert sf.Account.update(record_id, {"Phone": "555", "BillingCity": None}) == 204
    updated = sf.Account.get(record_id[:15])
    assert updated["Phone"] == "555" and updated["BillingAddress"] is None
    assert sf.Account.delete(record_id) == 204


def test_get_with_fields_parameter(sf: Salesforce, raw: Raw) -> None:
    record_id = sf.Contact.create({"LastName": "Doe", "FirstName": "Jane"})["id"]
    body = raw.call("GET", f"sobjects/Contact/{record_id}", params={"fields": "Name,email"}).json()
    assert body == {"attributes": {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{record_id}"},
                    "Name": "Jane Doe", "Email": None}


def test_required_field_missing(raw: Raw) -> None:
    response = raw.call("POST", "sobjects/Account/", json={"Phone": "1"})
    assert response.status_code == 400
    assert response.json() == [{"message": "Required fields are missing: [Name]",
                                "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Name"]}]


def test_unknown_field_is_invalid_field(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Account.create({"Name": "x", "Bogus__c": 1})
    assert info.value.content == [{"message": "No such column 'Bogus__c' on sobject of type Account",
                                   "errorCode": "INVALID_FIELD", "fields": ["Bogus__c"]}]


def test_read_only_fields_are_refused(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Account.create({"Name": "x", "CreatedDate": "2024-01-01T00:00:00Z", "IsDeleted": True})
    error = info.value.content[0]
    assert error["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert error["fields"] == ["IsDeleted", "CreatedDate"] or error["fields"] == ["CreatedDate", "IsDeleted"]
    assert error["message"].startswith("Unable to create/update fields: ")


def test_value_validation_errors(sf: Salesforce) -> None:
    cases = [
        ({"Name": "x" * 256}, "STRING_TOO_LONG", ["Name"]),
        ({"Name": "x", "NumberOfEmployees": "many"}, "INVALID_TYPE_ON_FIELD_IN_RECORD", ["NumberOfEmployees"]),
        ({"Name": "x", "ParentId": "not-an-id"}, "MALFORMED_ID", ["ParentId"]),
    ]
    for body, code, fields in cases:
        with pytest.raises(SalesforceMalformedRequest) as info:
            sf.Account.create(body)
        assert (info.value.content[0]["errorCode"], info.value.content[0]["fields"]) == (code, fields)
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.create({"LastName": "x", "Email": "not-an-email"})
    assert info.value.content[0]["errorCode"] == "INVALID_EMAIL_ADDRESS"
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Lead.create({"LastName": "x", "Company": "c", "Status": "Bogus"})
    assert info.value.content[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


def test_bad_and_unknown_ids(sf: Salesforce, raw: Raw) -> None:
    response = raw.call("PATCH", "sobjects/Account/001xyz", json={"Name": "x"})
    assert response.status_code == 400
    assert response.json() == [{"message": "Account ID: id value of incorrect type: 001xyz",
                                "errorCode": "MALFORMED_ID", "fields": ["Id"]}]
    contact_id = sf.Contact.create({"LastName": "x"})["id"]
    assert raw.call("GET", f"sobjects/Account/{contact_id}").json()[0]["errorCode"] == "MALFORMED_ID"
    missing = "001" + contact_id[3:15]
    response = raw.call("GET", f"sobjects/Account/{missing}")
    assert response.status_code == 404
    assert response.json()[0] == {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND",
                                  "fields": []}
    assert raw.call("GET", "sobjects/Nope__c/describe").json()[0]["errorCode"] == "NOT_FOUND"


def test_deleted_record_is_entity_is_deleted(sf: Salesforce) -> None:
    record_id = sf.Account.create({"Name": "Gone"})["id"]
    sf.Account.delete(record_id)
    for call in (lambda: sf.Account.get(record_id), lambda: sf.Account.update(record_id, {"Name": "x"}),
                 lambda: sf.Account.delete(record_id)):
        with pytest.raises(SalesforceResourceNotFound) as info:
            call()
        assert info.value.content == [{"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED",
                                       "fields": []}]


def test_unique_external_id_duplicate_value(sf: Salesforce) -> None:
    first = sf.Account.create({"Name": "A", "Local_Id__c": "K-1"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Account.create({"Name": "B", "Local_Id__c": "k-1"})
    assert info.value.content[0] == {
        "message": f"duplicate value found: Local_Id__c duplicates value on record with id: {first}",
        "errorCode": "DUPLICATE_VALUE", "fields": []}


def test_upsert_by_external_id_creates_then_updates(sf: Salesforce, raw: Raw) -> None:
    created = raw.call("PATCH", "sobjects/Contact/Local_Id__c/L-7", json={"LastName": "Seven"})
    assert created.status_code == 201
    body = created.json()
    assert body["created"] is True and body["success"] is True and body["id"].startswith("003")
    assert sf.Contact.upsert("Local_Id__c/L-7", {"Email": "s@example.com"}) == 200
    again = raw.call("PATCH", "sobjects/Contact/Local_Id__c/L-7", json={"Title": "Boss"}).json()
    assert again == {"id": body["id"], "success": True, "errors": [], "created": False}
    record = sf.Contact.get_by_custom_id("Local_Id__c", "L-7")
    assert (record["Email"], record["Title"], record["Local_Id__c"]) == ("s@example.com", "Boss", "L-7")
    old = raw.call("PATCH", "/services/data/v45.0/sobjects/Contact/Local_Id__c/L-7", json={"Title": "x"})
    assert old.status_code == 204 and old.content == b""


def test_upsert_update_only_and_bad_external_field(raw: Raw) -> None:
    response = raw.call("PATCH", "sobjects/Contact/Local_Id__c/none", params={"updateOnly": "true"},
                        json={"LastName": "x"})
    assert response.status_code == 404 and response.json()[0]["errorCode"] == "NOT_FOUND"
    response = raw.call("PATCH", "sobjects/Contact/Email/a@b.c", json={"LastName": "x"})
    assert response.status_code == 404
    assert response.json()[0]["message"] == "Provided external ID field does not exist or is not accessible: Email"


def test_limits_header_and_request_limit_exceeded(org: EmulatorHandle, sf: Salesforce, raw: Raw) -> None:
    limits = sf.limits()
    assert limits["DailyApiRequests"]["Max"] == 1_000_000
    assert sf.api_usage["api-usage"].total == 1_000_000
    used_before = sf.api_usage["api-usage"].used
    sf.Account.create({"Name": "x"})
    sf.limits()
    assert sf.api_usage["api-usage"].used == used_before + 2
    org.control.set_limits(max=100, used=99)
    response = raw.call("GET", "limits")
    assert response.headers["Sforce-Limit-Info"] == "api-usage=100/100"
    assert response.json()["DailyApiRequests"] == {"Max": 100, "Remaining": 0}
    with pytest.raises(SalesforceRefusedRequest) as info:
        sf.Account.create({"Name": "y"})
    assert info.value.content == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def test_get_updated_and_deleted(sf: Salesforce) -> None:
    kept = sf.Account.create({"Name": "Kept"})["id"]
    gone = sf.Account.create({"Name": "Gone"})["id"]
    sf.Account.delete(gone)
    start = datetime.now(UTC) - timedelta(hours=1)  # the records above are seconds old, however slow the run
    end = datetime.now(UTC) + timedelta(minutes=2)
    updated = sf.Account.updated(start, end)
    assert kept in updated["ids"] and gone not in updated["ids"]
    assert updated["latestDateCovered"].endswith("+0000")
    deleted = sf.Account.deleted(start, end)
    assert [row["id"] for row in deleted["deletedRecords"]] == [gone]
    assert deleted["deletedRecords"][0]["deletedDate"].endswith("+0000")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Account.updated(end, start)
    assert info.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_malformed_json_body(raw: Raw) -> None:
    response = raw.call("POST", "sobjects/Account/", data="{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_user_records_and_defaults(sf: Salesforce) -> None:
    users = sf.query("SELECT Id, Username, Name FROM User")["records"]
    assert [(u["Username"], u["Name"]) for u in users] == [("admin@example.com", "Emulator Admin")]
    case = sf.Case.get(sf.Case.create({"Subject": "Help"})["id"])
    assert (case["Status"], case["Priority"], case["CaseNumber"]) == ("New", "Medium", "00001001")
    lead = sf.Lead.get(sf.Lead.create({"LastName": "L", "Company": "C"})["id"])
    assert lead["Status"] == "Open - Not Contacted" and lead["IsConverted"] is False
