"""Parent fields inbound end to end: a Contact's ``Owner.Name`` arrives in ``contacts.assigned_rep``.

Salesforce (emulator) -> CDC producer (resolves the path) -> processor -> PostgreSQL sink, every role its own
process. User is captured too (table ``users``), so a rename of the owner reaches the contacts it owns.
Assertions read the local database and the emulator's query log, never the roles' internals.
"""

from __future__ import annotations

from typing import Any

import pytest

ROLES = ["postgres-sink", "processor", "salesforce-producer"]
TRICKLE_S = 60.0  # hang guard only


def rep_of(p: Any, sfid: str) -> Any:
    with p.db() as conn:
        row = conn.execute("select assigned_rep from contacts where sfid = %s", [sfid]).fetchone()
    return row


def user_queries(p: Any) -> list[str]:
    return [q for q in p.emulator.control.stats()["queries"] if " FROM User " in q]


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: Any) -> Any:
    from sfsync.database.schema import init_schema

    p = pipeline_factory()
    with p.db() as conn:
        conn.execute("alter table contacts add column assigned_rep text")
        conn.execute("create table users (id bigserial primary key, sfid text unique, first_name text, "
                      "last_name text)")
    p.raw["objects"]["Contact"]["fields"].append(
        {"column": "assigned_rep", "field": "Owner.Name", "direction": "to_local"})
    p.raw["objects"]["User"] = {"table": "users", "fields": [
        {"column": "first_name", "field": "FirstName", "direction": "to_local"},
        {"column": "last_name", "field": "LastName", "direction": "to_local"}]}
    p.rewrite_config()
    init_schema(p.cfg, demo=True)
    p.start(ROLES)
    p.wait_ready()
    return p


def test_owner_name_arrives_on_create_on_owner_change_and_on_rename(pipeline: Any) -> None:
    sf = pipeline.sf()
    ann = sf.User.create({"Username": "ann@reps.test", "FirstName": "Ann", "LastName": "Rep",
                          "Email": "ann@reps.test", "Alias": "ann"})["id"]
    bob = sf.User.create({"Username": "bob@reps.test", "FirstName": "Bob", "LastName": "Seller",
                          "Email": "bob@reps.test", "Alias": "bob"})["id"]
    pipeline.wait_until(lambda: len(pipeline.local_ids("users")) >= 2, TRICKLE_S, "users synced")
    pipeline.emulator.control.reset_stats()

    first = sf.Contact.create({"LastName": "Lovelace", "OwnerId": ann})["id"]
    pipeline.wait_until(lambda: rep_of(pipeline, first) == ("Ann Rep",), TRICKLE_S, "owner name on create")
    second = sf.Contact.create({"LastName": "Hopper", "OwnerId": ann})["id"]
    pipeline.wait_until(lambda: rep_of(pipeline, second) == ("Ann Rep",), TRICKLE_S, "cached owner name")
    assert len(user_queries(pipeline)) == 1  # looked up once, cached per parent

    sf.Contact.update(first, {"OwnerId": bob})
    pipeline.wait_until(lambda: rep_of(pipeline, first) == ("Bob Seller",), TRICKLE_S, "owner name on owner change")
    sf.Contact.update(second, {"Title": "Admiral"})  # no reference change: nothing looked up
    pipeline.wait_until(lambda: pipeline.db().execute("select title from contacts where sfid = %s",
                                                      [second]).fetchone() == ("Admiral",), TRICKLE_S, "title")
    assert rep_of(pipeline, second) == ("Ann Rep",)
    assert len(user_queries(pipeline)) == 2

    sf.User.update(bob, {"LastName": "Closer"})  # the parent is captured: its children get the new name
    pipeline.wait_until(lambda: rep_of(pipeline, first) == ("Bob Closer",), TRICKLE_S, "owner renamed")
    assert rep_of(pipeline, second) == ("Ann Rep",)
    children = [q for q in pipeline.emulator.control.stats()["queries"] if "FROM Contact WHERE OwnerId" in q]
    assert children == [f"SELECT Id, OwnerId FROM Contact WHERE OwnerId IN ('{bob}') ORDER BY Id LIMIT 2000"]
