"""Pure mapping: Salesforce <-> local values, echoes, coercion failures, unchanged suppression."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.mapping import (
    Failed,
    Mapped,
    Skipped,
    is_own_origin,
    map_inbound,
    map_outbound,
)
from sfsync.config import build_config
from sfsync.records import ApplyOperation, ApplyTarget, ChangeEvent, Operation

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def cfg(**contact: Any) -> Any:
    fields = [
        {"column": "first_name", "field": "FirstName"},
        {"column": "email", "field": "Email", "transforms": ["strip", "lower"]},
        {"column": "rating", "field": "Rating__c", "value_map": {"hot": "Hot", "cold": "Cold"}},
        {"column": "score", "field": "Score__c", "type": "integer", "direction": "to_local"},
        {"column": "notes", "field": "Notes__c", "direction": "to_salesforce"},
        {"column": "account_id", "field": "AccountId", "reference": "Account"},
    ]
    return build_config({
        "salesforce": {"auth": {"username": "u", "password": "p"}},
        "objects": {
            "Contact": {"table": "contacts", "fields": fields, **contact},
            "Account": {"table": "accounts", "fields": [{"column": "name", "field": "Name"}]},
        },
    })


def sf_event(op: str = "update", origin: str | None = None, **values: Any) -> ChangeEvent:
    return ChangeEvent(source="salesforce", object="Contact", operation=op, commit_ts=NOW, source_position="7",
                       sfid="003000000000001AAA", changed_fields=list(values), values=values, origin=origin)


def pg_event(op: str = "update", **values: Any) -> ChangeEvent:
    return ChangeEvent(source="postgres", object="Contact", entity="contacts", operation=op, commit_ts=NOW,
                       source_position="9", local_key="42", changed_fields=list(values), values=values)


def test_inbound_maps_fields_value_maps_transforms_and_types() -> None:
    result = map_inbound(sf_event(FirstName="Ada", Email="  ADA@Example.COM ", Rating__c="Hot", Score__c="12",
                                  AccountId="001000000000001AAA", Notes__c="x", Local_Id__c="42"), cfg())
    assert isinstance(result, Mapped)
    c = result.command
    assert c.target is ApplyTarget.LOCAL and c.operation is ApplyOperation.UPSERT
    assert c.values == {"first_name": "Ada", "email": "ada@example.com", "rating": "hot", "score": 12,
                        "account_id": "001000000000001AAA"}
    assert "notes" not in c.values  # to_salesforce only
    assert c.local_key == "42" and c.sfid == "003000000000001AAA"
    assert result.unmapped_fields == ["Notes__c"]  # to_salesforce only: not applied inbound


def test_inbound_unknown_object_and_unmapped_only_are_skipped() -> None:
    other = ChangeEvent(source="salesforce", object="Lead", operation="update", commit_ts=NOW, source_position="1",
                        sfid="00Q000000000001AAA", values={"LastName": "x"})
    assert map_inbound(other, cfg()) == Skipped("unknown object Lead")
    assert map_inbound(sf_event(Department="Sales"), cfg()) == Skipped("no mapped field changed")


def test_inbound_echo_of_own_write_is_dropped_but_to_local_fields_apply() -> None:
    origin = "com/salesforce/api/rest/59.0;client=sfsync"
    assert map_inbound(sf_event(origin=origin, FirstName="Ada"), cfg()) == Skipped("echo of an sfsync write")
    mixed = map_inbound(sf_event(origin=origin, FirstName="Ada", Score__c=3), cfg())
    assert isinstance(mixed, Mapped) and mixed.command.values == {"score": 3}
    assert is_own_origin(origin, "sfsync") and not is_own_origin("client=other", "sfsync")


def test_inbound_value_that_cannot_be_coerced_fails_with_reason() -> None:
    result = map_inbound(sf_event(Score__c="twelve"), cfg())
    assert result == Failed("Score__c -> score: cannot coerce a str value to integer")


def test_inbound_delete_follows_policy() -> None:
    mapped = map_inbound(sf_event("delete"), cfg())
    assert isinstance(mapped, Mapped) and mapped.command.operation is ApplyOperation.DELETE
    assert isinstance(map_inbound(sf_event("delete"), cfg(delete_policy="ignore")), Skipped)


def test_outbound_maps_columns_forward() -> None:
    result = map_outbound(pg_event(first_name="Ada", email=" ADA@X.org", rating="cold", notes="n", score=5,
                                   account_id=7), cfg())
    assert isinstance(result, Mapped)
    c = result.command
    assert c.target is ApplyTarget.SALESFORCE and c.object == "Contact" and c.local_key == "42"
    assert c.values == {"FirstName": "Ada", "Email": "ada@x.org", "Rating__c": "Cold", "Notes__c": "n",
                        "AccountId": 7}
    assert "Score__c" not in c.values  # to_local only


def test_outbound_update_carries_only_the_changed_columns_of_the_row_image() -> None:
    # the relay sends the whole row; its unchanged columns may be older than Salesforce's values
    ev = ChangeEvent(source="postgres", object="Contact", entity="contacts", operation="update", commit_ts=NOW,
                     source_position="1", local_key="1", changed_fields=["notes"],
                     values={"first_name": "Ada", "notes": "n", "email": "a@x.org"})
    mapped = map_outbound(ev, cfg())
    assert isinstance(mapped, Mapped) and mapped.command.values == {"Notes__c": "n"}
    created = map_outbound(replace(ev, operation=Operation.CREATE), cfg())
    assert isinstance(created, Mapped)
    assert created.command.values == {"FirstName": "Ada", "Notes__c": "n", "Email": "a@x.org"}


def test_outbound_by_table_name_and_unmapped_update() -> None:
    ev = ChangeEvent(source="postgres", object="", entity="contacts", operation="update", commit_ts=NOW,
                     source_position="1", local_key="1", values={"first_name": "B"}, changed_fields=["first_name"])
    mapped = map_outbound(ev, cfg())
    assert isinstance(mapped, Mapped) and mapped.command.object == "Contact"
    assert map_outbound(pg_event(score=1), cfg()) == Skipped("no mapped column changed")


@given(st.text())
def test_value_map_round_trips(text: str) -> None:
    c = cfg()
    out = map_outbound(pg_event(rating=text), c)
    assert isinstance(out, Mapped)
    back = map_inbound(sf_event(Rating__c=out.command.values["Rating__c"]), c)
    assert isinstance(back, Mapped) and back.command.values["rating"] == text


def test_outbound_delete_follows_policy() -> None:
    deleted = replace(pg_event("delete"), sfid="003000000000001AAA")
    propagated = map_outbound(deleted, cfg())
    assert isinstance(propagated, Mapped) and propagated.command.operation is ApplyOperation.DELETE
    assert isinstance(map_outbound(deleted, cfg(delete_policy="ignore")), Skipped)
    unlinked = map_outbound(deleted, cfg(delete_policy="unlink"))
    assert isinstance(unlinked, Mapped)
    assert (unlinked.command.operation, unlinked.command.sfid, unlinked.command.values) == (
        ApplyOperation.UPSERT, "003000000000001AAA", {"Local_Id__c": None})
    assert map_outbound(pg_event("delete"), cfg(delete_policy="unlink")) == Skipped(
        "Contact record was never linked: nothing to unlink")
