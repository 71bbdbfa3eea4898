"""Parent paths (``Owner.Name``): which envelopes are resolved, the queries, merging, the cache, child updates,
and the config rules for a path. Pure; describes are the emulator's own (offline)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from producers.salesforce.events import query_fields
from producers.salesforce.parents import (
    ParentCache,
    ParentPath,
    child_event_id,
    child_updates,
    children_query,
    merge,
    needs_parent,
    parent_ids,
    parent_paths,
    parent_query,
    parent_rows,
    reference_field_guess,
    split_path,
    touched_paths,
)
from sfsync.config import ConfigError, build_config
from sfsync.emulator.schema import Schema
from sfsync.records import ChangeEvent, Operation, Source
from sfsync.salesforce.values import ObjectTypes

SCHEMA = Schema()
ANN = "0058d0000000002AAA"
BOB = "0058d0000000003AAA"
C1 = "0038d0000000004AAA"
C2 = "0038d0000000005AAA"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def describe(name: str) -> dict[str, Any]:
    return SCHEMA.objects[name].describe("59.0", SCHEMA.children(name))


def config(fields: list[dict[str, Any]], **extra: Any) -> Any:
    return build_config({
        "salesforce": {"auth": {"username": "u", "password": "p"}},
        "objects": {"Contact": {"table": "contacts", "fields": [{"column": "last_name", "field": "LastName"},
                                                                *fields]}, **extra},
    })


REP = {"column": "assigned_rep", "field": "Owner.Name", "direction": "to_local"}
OWNER = ParentPath("Contact", "Owner.Name", "OwnerId", "User", "Name")
ACCOUNT = ParentPath("Contact", "Account.Industry", "AccountId", "Account", "Industry")


def event(op: Operation, values: dict[str, Any], changed: list[str] | None = None, sfid: str = C1,
          obj: str = "Contact") -> ChangeEvent:
    return ChangeEvent(source=Source.SALESFORCE, object=obj, operation=op, commit_ts=T0, source_position="7",
                       sfid=sfid, values=values, changed_fields=changed if changed is not None else sorted(values))


def test_paths_come_from_the_describe_relationship_names() -> None:
    cfg = config([REP, {"column": "industry", "field": "account.Industry", "direction": "to_local"}])
    paths = parent_paths(cfg.objects, {"Contact": describe("Contact")})
    assert paths == {"Contact": [OWNER, ParentPath("Contact", "account.Industry", "AccountId", "Account",
                                                   "Industry")]}
    assert parent_paths(cfg.objects, {}) == {}  # no describe: nothing resolved


def test_unknown_and_polymorphic_relationships_are_left_to_the_mapping_check() -> None:
    cfg = build_config({
        "salesforce": {"auth": {"username": "u", "password": "p"}},
        "objects": {"Attachment": {"table": "files", "fields": [
            {"column": "parent", "field": "Parent.Name", "direction": "to_local"},
            {"column": "nope", "field": "Nope.Name", "direction": "to_local"}]}},
    })
    assert parent_paths(cfg.objects, {"Attachment": describe("Attachment")}) == {}


def test_split_path_and_reference_names() -> None:
    assert split_path("Owner.Name") == ("Owner", "Name")
    assert split_path("Name") is None
    assert reference_field_guess("Owner") == "OwnerId"
    assert reference_field_guess("Region__r") == "Region__c"


@pytest.mark.parametrize(("op", "changed", "expected"), [
    (Operation.CREATE, None, True),
    (Operation.UNDELETE, None, True),
    (Operation.SNAPSHOT, None, True),
    (Operation.UPDATE, ["OwnerId", "LastModifiedDate"], True),
    (Operation.UPDATE, ["Title"], False),
    (Operation.DELETE, [], False),
])
def test_which_envelopes_are_resolved(op: Operation, changed: list[str] | None, expected: bool) -> None:
    assert needs_parent(event(op, {"OwnerId": ANN, "Title": "x"}, changed), OWNER) is expected
    assert not needs_parent(event(op, {"OwnerId": ANN}, changed, obj="Lead"), OWNER)  # another object


def test_merge_adds_the_values_and_the_changed_field() -> None:
    events = [event(Operation.CREATE, {"OwnerId": ANN, "LastName": "L"}, sfid=C1),
              event(Operation.UPDATE, {"OwnerId": None}, ["OwnerId"], sfid=C2),  # reference emptied
              event(Operation.UPDATE, {"Title": "T"}, ["Title"], sfid=C2)]
    assert parent_ids(events, [OWNER]) == {"User": {ANN}}
    merged = merge(events, [OWNER], {("User", ANN): {"Name": "Ann Rep"}})
    assert merged[0].values == {"OwnerId": ANN, "LastName": "L", "Owner.Name": "Ann Rep"}
    assert merged[0].changed_fields == ["LastName", "OwnerId", "Owner.Name"]
    assert merged[1].values == {"OwnerId": None, "Owner.Name": None}
    assert merged[1].changed_fields == ["OwnerId", "Owner.Name"]
    assert merged[2] is events[2]
    unknown = merge(events[:1], [OWNER], {})  # a parent Salesforce did not return (deleted, not visible)
    assert unknown[0].values["Owner.Name"] is None


def test_fifteen_character_references_are_matched_by_their_canonical_form() -> None:
    ev = event(Operation.CREATE, {"OwnerId": ANN[:15]})
    assert parent_ids([ev], [OWNER]) == {"User": {ANN}}
    assert merge([ev], [OWNER], {("User", ANN): {"Name": "Ann"}})[0].values["Owner.Name"] == "Ann"


def test_queries_quote_every_id() -> None:
    assert parent_query("User", {"Name"}, [ANN]) == f"SELECT Id, Name FROM User WHERE Id IN ('{ANN}')"
    assert parent_query("User", ["Name"], ["x' OR Name != '"]) == \
        "SELECT Id, Name FROM User WHERE Id IN ('x\\' OR Name != \\'')"
    assert children_query(OWNER, [ANN, BOB], 50) == \
        f"SELECT Id, OwnerId FROM Contact WHERE OwnerId IN ('{ANN}', '{BOB}') ORDER BY Id LIMIT 50"
    with pytest.raises(ValueError):
        parent_query("User", ["Name"], [])


def test_parent_rows_are_typed_by_the_parent_describe() -> None:
    types = ObjectTypes.from_describe(describe("User"))
    rows: list[dict[str, Any]] = [{"attributes": {}, "Id": ANN, "Name": "Ann", "IsActive": True}, {"Id": None}]
    assert parent_rows(rows, ["Name", "IsActive"], types) == {ANN: {"Name": "Ann", "IsActive": True}}


def test_a_rename_touches_name_through_its_parts() -> None:
    user = ObjectTypes.from_describe(describe("User"))
    rename = event(Operation.UPDATE, {"LastName": "Closer"}, ["LastName", "LastModifiedDate"], ANN, "User")
    assert touched_paths(rename, [OWNER, ACCOUNT], user) == [OWNER]
    assert touched_paths(event(Operation.UPDATE, {"Title": "x"}, ["Title"], ANN, "User"), [OWNER], user) == []
    assert touched_paths(event(Operation.CREATE, {"LastName": "x"}, None, ANN, "User"), [OWNER], user) == []


def test_child_updates_carry_only_the_path_and_deterministic_ids() -> None:
    rename = event(Operation.UPDATE, {"LastName": "Closer"}, ["LastName"], BOB, "User")
    rows = [{"Id": C1, "OwnerId": BOB}, {"Id": C2, "OwnerId": ANN}]
    ids = partial(child_event_id, "/data/UserChangeEvent")
    updates = child_updates(OWNER, rows, {BOB: (rename, {"Name": "Bob Closer"})}, ids)
    assert [(u.object, u.operation, u.sfid, u.values, u.changed_fields, u.commit_ts) for u in updates] == [
        ("Contact", Operation.UPDATE, C1, {"Owner.Name": "Bob Closer"}, ["Owner.Name"], T0)]
    again = child_updates(OWNER, rows, {BOB: (rename, {"Name": "Bob Closer"})}, ids)
    assert again[0].event_id == updates[0].event_id  # a replayed parent event re-emits the same envelope


def test_cache_is_bounded_and_needs_every_field() -> None:
    cache = ParentCache(size=2)
    cache.put(("User", ANN), {"Name": "Ann"})
    cache.put(("User", BOB), {"Name": "Bob"})
    assert cache.get(("User", ANN), ["Name"]) == {"Name": "Ann"}  # Ann is now the most recently used
    assert cache.get(("User", ANN), ["Name", "Title"]) is None  # a field it never looked up
    cache.put(("User", "005C"), {"Name": "Cy"})
    assert len(cache) == 2
    assert cache.peek(("User", BOB)) is None and cache.peek(("User", ANN)) is not None


def test_repair_queries_read_the_reference_field_of_a_path() -> None:
    types = ObjectTypes.from_describe(describe("Contact"))
    fields = query_fields(types, config([REP]).objects["Contact"])
    assert "OwnerId" in fields and "Owner.Name" not in fields


@pytest.mark.parametrize(("entry", "key", "message"), [
    ({"column": "r", "field": "Owner.Name"}, "direction", "set direction: to_local"),
    ({"column": "r", "field": "Owner.Name", "direction": "both"}, "direction", "set direction: to_local"),
    ({"column": "r", "field": "Owner.Name", "direction": "to_local", "reference": "User"}, "reference",
     "remove reference"),
    ({"column": "r", "field": "Account.Owner.Name", "direction": "to_local"}, "field", "one level"),
    ({"column": "r", "field": "Owner.", "direction": "to_local"}, "field", "parent path"),
])
def test_config_rules_of_a_path(entry: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config([entry])
    text = str(info.value)
    assert f"objects.Contact.fields[1].{key}" in text and message in text


# --------------------------------------------------------------------------- the adapter, against the emulator


def emulator_config(emulator: Any) -> Any:
    from sfsync.devstack.emulator import PASSWORD, USERNAME

    return build_config({
        "salesforce": {"login_url": emulator.url, "ca_bundle": str(emulator.ca_path),
                       "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME,
                                "password": PASSWORD}},
        "objects": {"Contact": {"table": "contacts", "fields": [REP]},
                    "User": {"table": "users", "fields": [{"column": "last_name", "field": "LastName",
                                                           "direction": "to_local"}]}},
    })


def test_the_adapter_queries_once_per_event_and_batches_children(org: Any) -> None:
    import asyncio

    from producers.salesforce.parents import ParentFields
    from sfsync.salesforce.rest import SalesforceClient

    sf = org.salesforce()
    users = [sf.User.create({"Username": f"u{i}@x.test", "FirstName": f"U{i}", "LastName": "Rep",
                             "Email": f"u{i}@x.test", "Alias": f"u{i}"})["id"] for i in range(2)]
    contacts = [sf.Contact.create({"LastName": f"C{i}", "OwnerId": users[i % 2]})["id"] for i in range(4)]
    cfg = emulator_config(org)
    client = SalesforceClient(cfg.salesforce)
    try:
        parents = ParentFields(cfg.objects, client.query_records, client.describe)
        for name in cfg.objects:
            parents.learn(name, client.describe(name))
        org.control.reset_stats()
        creates = [event(Operation.CREATE, {"OwnerId": users[i % 2]}, sfid=c) for i, c in enumerate(contacts)]
        resolved = asyncio.run(parents.resolve("Contact", creates))
        assert [e.values["Owner.Name"] for e in resolved] == ["U0 Rep", "U1 Rep", "U0 Rep", "U1 Rep"]
        again = asyncio.run(parents.resolve("Contact", creates[:1]))  # cached
        assert again[0].values["Owner.Name"] == "U0 Rep"
        for u in users:
            sf.User.update(u, {"LastName": "Closer"})
        renames = [event(Operation.UPDATE, {"LastName": "Closer"}, ["LastName"], u, "User") for u in users]
        children = asyncio.run(parents.children("User", "/data/UserChangeEvent", renames))
        assert [(obj, sorted((u.sfid, u.values["Owner.Name"]) for u in ups)) for obj, ups in children] == [
            ("Contact", sorted((c, f"U{i % 2} Closer") for i, c in enumerate(contacts)))]
        assert asyncio.run(parents.children("User", "/data/UserChangeEvent", renames)) == []  # no news
        queries = org.control.stats()["queries"]
        ids = ", ".join(f"'{u}'" for u in sorted(users))
        assert queries == [
            f"SELECT Id, Name FROM User WHERE Id IN ({ids})",  # both creates' owners: one query
            f"SELECT Id, Name FROM User WHERE Id IN ({ids})",  # the renames, re-read at once
            f"SELECT Id, OwnerId FROM Contact WHERE OwnerId IN ({ids}) ORDER BY Id LIMIT 2000",
            f"SELECT Id, Name FROM User WHERE Id IN ({ids})",  # the same renames again: same values, no children
        ]
    finally:
        client.close()
