"""The mapping-check rules of ``sync_state`` / ``sync_metadata`` (pure: describe and table data in, problems out)."""

from __future__ import annotations

from sfsync.config.mapping import ObjectMapping
from sfsync.mappingcheck.rules import Column, SfField, SfObject, Table
from sfsync.mappingcheck.syncstate import check_sync_fields

MAPPING = ObjectMapping.model_validate({"table": "contacts", "fields": [{"column": "email", "field": "Email"}],
                                        "sync_state": {"error_column": None},
                                        "sync_metadata": {"salesforce_field": "Last_Sync__c"}})


def contact(*fields: SfField) -> dict[str, SfObject | None]:
    return {"Contact": SfObject("Contact", {f.name: f for f in fields})}


def contacts(**columns: str) -> dict[str, Table | None]:
    return {"contacts": Table("contacts", {n: Column(n, t) for n, t in columns.items()})}


GOOD_TABLE = contacts(sync_status="text", sync_status_at="timestamp with time zone",
                      synced_at="timestamp with time zone")


def test_a_fitting_table_and_field_pass() -> None:
    assert check_sync_fields({"Contact": MAPPING}, contact(SfField("Last_Sync__c", "datetime")), GOOD_TABLE) == []


def test_each_problem_names_its_entry() -> None:
    found = check_sync_fields(
        {"Contact": MAPPING}, contact(SfField("Last_Sync__c", "date", updateable=False)),
        contacts(sync_status="integer", sync_status_at="timestamp with time zone"))
    assert [str(p) for p in found] == [
        "objects.Contact.sync_state.status_column: column sync_status is integer; it needs text",
        "objects.Contact.sync_state.synced_at_column: table public.contacts has no column synced_at",
        "objects.Contact.sync_metadata.salesforce_field (Contact.Last_Sync__c): date field; the sync time needs a "
        "datetime field",
        "objects.Contact.sync_metadata.salesforce_field (Contact.Last_Sync__c): not createable and updateable by "
        "this user; sfsync writes the sync time on every create and update",
    ]
    missing = check_sync_fields({"Contact": MAPPING}, contact(SfField("Last_Synced__c", "datetime")), None)
    assert [str(p) for p in missing] == ["objects.Contact.sync_metadata.salesforce_field (Contact.Last_Sync__c): "
                                         "Contact has no field Last_Sync__c (did you mean Last_Synced__c?)"]
