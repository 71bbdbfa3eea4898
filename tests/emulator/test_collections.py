"""sObject Collections via sf.restful(): create, update, upsert, delete, retrieve, allOrNone."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sfsync.devstack.emulator import EmulatorHandle

ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "message": "Record rolled back because not all records were valid and the request was using "
                          "AllOrNone header", "fields": []}


def _contacts(*names: str | None) -> list[dict]:
    return [{"attributes": {"type": "Contact"}, **({"LastName": n} if n else {})} for n in names]


def test_create_partial_success(sf: Salesforce) -> None:
    result = sf.restful("composite/sobjects", method="POST",
                        json={"allOrNone": False, "records": _contacts("A", None, "C")})
    assert [r["success"] for r in result] == [True, False, True]
    assert result[1] == {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                                       "message": "Required fields are missing: [LastName]",
                                                       "fields": ["LastName"]}]}
    assert result[0]["id"].startswith("003") and result[0]["errors"] == []
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 2


def test_create_all_or_none_rolls_back(sf: Salesforce) -> None:
    result = sf.restful("composite/sobjects", method="POST",
                        json={"allOrNone": True, "records": _contacts("A", None, "C")})
    assert result[0] == {"success": False, "errors": [ROLLED_BACK]} or result[0]["errors"] == [ROLLED_BACK]
    assert result[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert result[2]["errors"] == [ROLLED_BACK]
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0


def test_update_and_delete_collections(sf: Salesforce) -> None:
    ids = [r["id"] for r in sf.restful("composite/sobjects", method="POST",
                                       json={"records": _contacts("A", "B")})]
    updated = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Contact"}, "id": ids[0], "Title": "CEO"},
        {"attributes": {"type": "Contact"}, "id": "003000000000000", "Title": "x"},
    ]})
    assert updated[0] == {"id": ids[0], "success": True, "errors": []}
    assert updated[1]["success"] is False and updated[1]["id"] == "003000000000000"
    assert updated[1]["errors"][0]["statusCode"] in ("NOT_FOUND", "MALFORMED_ID")
    assert sf.Contact.get(ids[0])["Title"] == "CEO"
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join([*ids, "bogus"])})
    assert [d["success"] for d in deleted] == [True, True, False]
    assert deleted[2]["errors"][0]["statusCode"] == "MALFORMED_ID"
    again = sf.restful("composite/sobjects", method="DELETE", params={"ids": ids[0]})
    assert again[0]["errors"][0] == {"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}


def test_upsert_collection_by_external_id(sf: Salesforce) -> None:
    existing = sf.Contact.create({"LastName": "Old", "Local_Id__c": "k1"})["id"]
    records = [{"attributes": {"type": "Contact"}, "Local_Id__c": key, "LastName": f"N{key}"}
               for key in ("k1", "k2", "k3")]
    result = sf.restful("composite/sobjects/Contact/Local_Id__c", method="PATCH",
                        json={"allOrNone": False, "records": records})
    assert result[0] == {"id": existing, "success": True, "errors": [], "created": False}
    assert [r["created"] for r in result[1:]] == [True, True]
    assert sf.Contact.get(existing)["LastName"] == "Nk1"
    dup = sf.restful("composite/sobjects/Contact/Local_Id__c", method="PATCH", json={"records": [
        {"attributes": {"type": "Contact"}, "Local_Id__c": "k9", "LastName": "a"},
        {"attributes": {"type": "Contact"}, "Local_Id__c": "K9", "LastName": "b"}]})
    assert [r["errors"][0]["statusCode"] for r in dup] == ["DUPLICATE_EXTERNAL_ID", "DUPLICATE_EXTERNAL_ID"]


def test_retrieve_collection(sf: Salesforce) -> None:
    record_id = sf.Account.create({"Name": "R"})["id"]
    missing = "001" + record_id[3:14] + ("A" if record_id[14] != "A" else "B")
    got = sf.restful("composite/sobjects/Account", params={"ids": f"{record_id},{missing}", "fields": "Id,Name"})
    assert got[0] == {"attributes": {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{record_id}"},
                      "Id": record_id, "Name": "R"}
    assert got[1] is None
    posted = sf.restful("composite/sobjects/Account", method="POST", json={"ids": [record_id], "fields": ["Name"]})
    assert posted[0]["Name"] == "R"


def test_more_than_200_records_refused(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.restful("composite/sobjects", method="POST", json={"records": _contacts(*["x"] * 201)})
    assert info.value.content[0]["errorCode"] == "EXCEEDED_MAX_SIZE_REQUEST"


def test_stats_count_calls_and_records(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.reset_stats()
    for start in range(0, 450, 200):
        batch = [{"attributes": {"type": "Account"}, "Name": f"A{i}", "Local_Id__c": f"a{i}"}
                 for i in range(start, min(start + 200, 450))]
        sf.restful("composite/sobjects/Account/Local_Id__c", method="PATCH", json={"records": batch})
    stats = org.control.stats()
    assert stats["api_calls"] == {"PATCH composite/sobjects/{type}/{field}": 3}
    assert stats["api_calls_total"] == 3
    assert stats["records_per_collection_call"] == [200, 200, 50]
    assert stats["collection_records_total"] == 450 and stats["events_emitted"] == 450


def test_undelete_restores_from_recycle_bin(org: EmulatorHandle, sf: Salesforce) -> None:
    record_id = sf.Account.create({"Name": "Phoenix", "Local_Id__c": "p1"})["id"]
    sf.Account.delete(record_id)
    result = org.control.undelete([record_id, "001000000000000"])
    assert result[0] == {"id": record_id, "success": True, "errors": []}
    assert result[1]["success"] is False
    assert sf.Account.get_by_custom_id("Local_Id__c", "p1")["Name"] == "Phoenix"
