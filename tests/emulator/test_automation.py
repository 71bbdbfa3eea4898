"""Field updates (Salesforce automation inside a save) through REST and sObject Collections, and their CDC
events: the automated values are saved and are in the save's change event, with the writer's origin."""

from __future__ import annotations

import httpx
import pytest
from simple_salesforce import Salesforce

from sfsync.devstack.emulator import EmulatorHandle


def test_an_update_that_matches_sets_the_fields_and_its_event_carries_them(org: EmulatorHandle,
                                                                          sf: Salesforce) -> None:
    update = org.control.add_field_update(object="contact", when_field="title", regex="^auto",
                                          set={"Title": "SET BY A FLOW", "Description": "Ops"})
    assert update == {"id": update["id"], "object": "Contact", "when_field": "Title", "regex": "^auto",
                      "set": {"Title": "SET BY A FLOW", "Description": "Ops"}, "fired": 0}
    cid = sf.Contact.create({"LastName": "Plain", "Title": "manual"})["id"]
    sf.Contact.update(cid, {"Title": "auto please"}, headers={"Sforce-Call-Options": "client=sfsync"})
    got = sf.Contact.get(cid)
    assert (got["Title"], got["Description"]) == ("SET BY A FLOW", "Ops")
    last = org.control.events()["events"][-1]["payload"]
    header = last["ChangeEventHeader"]
    assert header["changeType"] == "UPDATE" and header["changeOrigin"].endswith("client=sfsync")
    assert {"Title", "Description"} <= set(header["changedFields"])
    assert (last["Title"], last["Description"]) == ("SET BY A FLOW", "Ops")
    created = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Contact"}, "LastName": "Batch", "Title": "automatic"}]})
    assert sf.Contact.get(created[0]["id"])["Title"] == "SET BY A FLOW"
    assert [u["fired"] for u in org.control.field_updates()] == [2]


def test_a_bad_field_update_is_refused_with_the_reason(org: EmulatorHandle) -> None:
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.add_field_update(object="Contact", when_field="Nope__c", regex="x", set={})
    assert "unknown field 'Nope__c' on Contact" in info.value.response.text
