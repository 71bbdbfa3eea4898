"""Extra schema from YAML (own emulator instance), id checksums, multiple external-id matches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from simple_salesforce.exceptions import SalesforceMoreThanOneRecord

from sfsync.devstack.emulator import EmulatorHandle, start_emulator
from sfsync.emulator.ids import make_id, normalize, to18

SCHEMA = """
objects:
  Invoice__c:
    label: Invoice
    keyPrefix: a0X
    fields:
      Amount__c: {type: currency, precision: 18, scale: 2}
      Number__c: {type: string, length: 20, externalId: true, unique: true}
      Account__c: {type: reference, referenceTo: Account}
  Contact:
    fields:
      Legacy_Code__c: {type: string, length: 10, externalId: true}
"""


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    state = tmp_path_factory.mktemp("custom-emulator")
    schema = Path(state) / "schema.yaml"
    schema.write_text(SCHEMA)
    handle = start_emulator(state / "state", schema)
    try:
        yield handle
    finally:
        handle.stop()


def test_id_checksums_match_salesforce() -> None:
    assert to18("001000000000001") == "001000000000001AAA"
    assert to18("0015000000Gv7qJ") == "0015000000Gv7qJAAR"
    record_id = make_id("001", 12345)
    assert len(record_id) == 18 and normalize(record_id[:15]) == record_id
    assert normalize(record_id.lower()[:15] + record_id[15:]) != record_id
    assert normalize(record_id[:15] + "ZZZ") is None and normalize("short") is None


def test_custom_object_from_yaml(custom: EmulatorHandle) -> None:
    sf = custom.salesforce()
    described = sf.Invoice__c.describe()
    assert described["keyPrefix"] == "a0X" and described["custom"] is True
    fields = {f["name"]: f for f in described["fields"]}
    assert fields["Amount__c"]["type"] == "currency" and fields["Number__c"]["externalId"] is True
    assert fields["Account__c"]["relationshipName"] == "Account__r"
    account = sf.Account.create({"Name": "Payer"})["id"]
    created = sf.Invoice__c.upsert("Number__c/INV-1", {"Name": "First", "Amount__c": 12.5, "Account__c": account},
                                   raw_response=True)
    assert created.status_code == 201 and created.json()["id"].startswith("a0X")
    row = sf.query("SELECT Name, Amount__c, Account__r.Name FROM Invoice__c")["records"][0]
    assert (row["Name"], row["Amount__c"], row["Account__r"]["Name"]) == ("First", 12.5, "Payer")


def test_non_unique_external_id_multiple_matches_is_300(custom: EmulatorHandle) -> None:
    sf = custom.salesforce()
    first = sf.Contact.create({"LastName": "A", "Legacy_Code__c": "X1"})["id"]
    second = sf.Contact.create({"LastName": "B", "Legacy_Code__c": "X1"})["id"]
    with pytest.raises(SalesforceMoreThanOneRecord) as info:
        sf.Contact.upsert("Legacy_Code__c/X1", {"Title": "t"})
    assert info.value.status == 300
    assert sorted(info.value.content) == sorted(
        f"/services/data/v59.0/sobjects/Contact/{i}" for i in (first, second))
