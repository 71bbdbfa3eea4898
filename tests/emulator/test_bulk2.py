"""Bulk API 2.0 query jobs through simple-salesforce's sf.bulk2."""

from __future__ import annotations

import csv
import io

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sfsync.devstack.emulator import EmulatorHandle


def test_bulk2_query_pages_csv(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.seed("Account", 25, {"Name": "Bulk {i}", "NumberOfEmployees": 3}, emit_events=False)
    sf.Account.create({"Name": 'Quote "q", comma', "Type": "Customer"})
    pages = list(sf.bulk2.Account.query("SELECT Id, Name, NumberOfEmployees, Type, Owner.Name FROM Account",
                                        max_records=10, wait=0.05))
    assert len(pages) == 3
    rows = [row for page in pages for row in csv.DictReader(io.StringIO(page))]
    assert len(rows) == 26
    assert list(rows[0]) == ["Id", "Name", "NumberOfEmployees", "Type", "Owner.Name"]
    assert rows[0]["Name"] == "Bulk 0" and rows[0]["NumberOfEmployees"] == "3" and rows[0]["Type"] == ""
    assert rows[0]["Owner.Name"] == "Emulator Admin"
    assert rows[-1]["Name"] == 'Quote "q", comma' and rows[-1]["Type"] == "Customer"


def test_bulk2_query_all_and_bad_query(sf: Salesforce) -> None:
    record_id = sf.Account.create({"Name": "Del"})["id"]
    sf.Account.delete(record_id)
    pages = list(sf.bulk2.Account.query_all("SELECT Id, IsDeleted FROM Account", wait=0.05))
    assert list(csv.DictReader(io.StringIO(pages[0]))) == [{"Id": record_id, "IsDeleted": "true"}]
    with pytest.raises(SalesforceMalformedRequest) as info:
        list(sf.bulk2.Account.query("SELECT Nope FROM Account", wait=0.05))
    assert info.value.content[0]["errorCode"] == "INVALID_FIELD"
