"""Custom fields added and deleted while the org runs (schema drift), through the control API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from simple_salesforce import Salesforce

from sfsync.devstack.emulator import EmulatorHandle

from .conftest import Raw

FIELD = "Emu_Drift__c"
UPSERT = "composite/sobjects/Contact/Local_Id__c"


@pytest.fixture
def field(org: EmulatorHandle) -> Iterator[str]:
    described = org.control.add_field("Contact", FIELD, "string", length=20, label="Drift")
    assert described["name"] == FIELD and described["length"] == 20 and described["custom"] is True
    yield FIELD
    with contextlib.suppress(httpx.HTTPStatusError):  # the session emulator's schema as it was
        org.control.delete_field("Contact", FIELD)


def _names(sf: Salesforce) -> set[str]:
    described: dict[str, Any] = sf.restful("sobjects/Contact/describe") or {}
    return {f["name"] for f in described["fields"]}


def test_a_deleted_field_is_gone_everywhere_and_comes_back_empty(org: EmulatorHandle, sf: Salesforce, raw: Raw,
                                                                 field: str) -> None:
    assert field in _names(sf)
    records: list[dict[str, Any]] = [
        {"attributes": {"type": "Contact"}, "Local_Id__c": f"k{i}", "LastName": f"L{i}", field: f"v{i}"}
        for i in range(2)]
    body = {"allOrNone": False, "records": records}
    assert all(r["success"] for r in raw.call("PATCH", UPSERT, json=body).json())
    assert {r[field] for r in sf.query(f"select {field} from Contact")["records"]} == {"v0", "v1"}

    assert org.control.delete_field("contact", field.lower()) == {"deleted": f"Contact.{field}"}
    assert field not in _names(sf)
    answer = raw.call("PATCH", UPSERT, json=body).json()  # each record fails on its own, as Salesforce does
    assert [r["errors"][0]["statusCode"] for r in answer] == ["INVALID_FIELD", "INVALID_FIELD"]
    assert answer[0]["errors"][0]["fields"] == [field]
    query = raw.call("GET", "query", params={"q": f"select {field} from Contact"})
    assert query.status_code == 400 and query.json()[0]["errorCode"] == "INVALID_FIELD"
    without = {"allOrNone": False, "records": [{k: v for k, v in r.items() if k != field} for r in records]}
    assert all(r["success"] for r in raw.call("PATCH", UPSERT, json=without).json())

    org.control.add_field("Contact", field, "string", length=20)
    assert field in _names(sf)
    assert [r[field] for r in sf.query(f"select {field} from Contact")["records"]] == [None, None]  # a new field


def test_only_custom_fields_of_known_objects_can_be_changed(org: EmulatorHandle) -> None:
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.delete_field("Contact", "LastName")
    assert info.value.response.status_code == 422
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.delete_field("Contact", "Nope__c")
    assert info.value.response.status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.delete_field("Nope", "Nope__c")
    assert info.value.response.status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.add_field("Contact", "NotCustom", "string")
    assert info.value.response.status_code == 422
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.add_field("Contact", "Bad__c", "string", noSuchKey=1)
    assert info.value.response.status_code == 422


def test_an_external_id_field_added_at_run_time_is_indexed(org: EmulatorHandle, raw: Raw) -> None:
    org.control.add_field("Account", "Ext_Drift__c", "string", length=20, externalId=True, unique=True)
    try:
        body = {"allOrNone": False, "records": [{"attributes": {"type": "Account"}, "Ext_Drift__c": "a1",
                                                 "Name": "A"}]}
        first = raw.call("PATCH", "composite/sobjects/Account/Ext_Drift__c", json=body).json()
        again = raw.call("PATCH", "composite/sobjects/Account/Ext_Drift__c", json=body).json()
        assert first[0]["created"] is True and again[0]["created"] is False and again[0]["id"] == first[0]["id"]
    finally:
        org.control.delete_field("Account", "Ext_Drift__c")
