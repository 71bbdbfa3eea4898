"""``delete_policy`` end to end, in both directions, and undeletes, with every role as its own process.

Objects: Account ``propagate`` (the default), Contact ``ignore``, Case ``unlink`` (the example config's).
"""

from __future__ import annotations

from typing import Any

import pytest

ROLES = ["salesforce-sink", "postgres-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 60.0


@pytest.fixture(scope="module")
def p(pipeline_factory: Any) -> Any:
    pipeline = pipeline_factory()
    pipeline.raw["objects"]["Contact"]["delete_policy"] = "ignore"
    pipeline.rewrite_config()
    pipeline.start(ROLES)
    pipeline.wait_ready()
    return pipeline


def row(p: Any, table: str, where: str, args: list[Any]) -> tuple[Any, ...] | None:
    with p.db() as conn:
        found = conn.execute(f"select * from {table} where {where}", args).fetchall()
    assert len(found) <= 1, found
    return found[0] if found else None


def count(p: Any, table: str, where: str, args: list[Any]) -> int:
    with p.db() as conn:
        return int(conn.execute(f"select count(*) from {table} where {where}", args).fetchone()[0])


def sf_record(p: Any, obj: str, sfid: str, fields: str) -> dict[str, Any] | None:
    found = p.sf().query_all(f"select {fields} from {obj} where Id = '{sfid}'")["records"]
    return dict(found[0]) if found else None


def local_create(p: Any, sql: str, args: list[Any], table: str) -> tuple[int, str]:
    with p.db() as conn:
        key = conn.execute(sql, args).fetchone()[0]
    sfid = p.wait_until(lambda: (row(p, table, "id = %s", [key]) or (None,) * 2)[1], ARRIVE_S,
                        f"{table} {key} created in Salesforce")
    return key, sfid


def wait_local_sfid(p: Any, table: str, sfid: str) -> tuple[Any, ...]:
    return p.wait_until(lambda: row(p, table, "sfid = %s", [sfid]), ARRIVE_S, f"{table} row of {sfid}")


def test_propagate_deletes_both_ways_and_an_undelete_brings_the_record_back(p: Any) -> None:
    key, sfid = local_create(p, "insert into accounts (name) values ('Local Acme') returning id", [], "accounts")
    with p.db() as conn:
        conn.execute("delete from accounts where id = %s", [key])
    p.wait_until(lambda: sf_record(p, "Account", sfid, "Id") is None, ARRIVE_S, "the local delete in Salesforce")

    remote = p.sf().Account.create({"Name": "Remote Acme"})["id"]
    wait_local_sfid(p, "accounts", remote)
    p.sf().Account.delete(remote)
    p.wait_until(lambda: row(p, "accounts", "sfid = %s", [remote]) is None, ARRIVE_S, "the Salesforce delete locally")
    assert p.emulator.control.undelete([remote])
    back = wait_local_sfid(p, "accounts", remote)
    assert back[1:3] == (remote, "Remote Acme") and count(p, "accounts", "name = 'Remote Acme'", []) == 1


def test_ignore_leaves_the_other_side_alone_both_ways(p: Any) -> None:
    key, sfid = local_create(p, "insert into contacts (last_name, email) values ('Kept', 'kept@x.test') "
                             "returning id", [], "contacts")
    with p.db() as conn:
        conn.execute("delete from contacts where id = %s", [key])
    remote = p.sf().Contact.create({"LastName": "Remote kept"})["id"]
    wait_local_sfid(p, "contacts", remote)
    p.sf().Contact.delete(remote)
    # a later change on each side shows the deletes were processed (and ignored) before it
    marker = p.sf().Contact.create({"LastName": "After"})["id"]
    wait_local_sfid(p, "contacts", marker)
    with p.db() as conn:
        after = conn.execute("insert into contacts (last_name) values ('After local') returning id").fetchone()[0]
    p.wait_until(lambda: (row(p, "contacts", "id = %s", [after]) or (None,) * 2)[1], ARRIVE_S, "later local change")
    kept = sf_record(p, "Contact", sfid, "LastName, Local_Id__c")
    assert kept is not None and (kept["LastName"], kept["Local_Id__c"]) == ("Kept", str(key))
    local = row(p, "contacts", "sfid = %s", [remote])  # (id, sfid, first_name, last_name, ...)
    assert local is not None and local[3] == "Remote kept"


def test_unlink_keeps_both_records_and_an_undelete_relinks_the_same_row(p: Any) -> None:
    # a Case created locally: its Salesforce record names the row in its external id
    key, sfid = local_create(p, "insert into cases (subject, status) values ('Local case', 'New') returning id", [],
                             "cases")
    p.sf().Case.delete(sfid)
    p.wait_until(lambda: row(p, "cases", "id = %s", [key])[1] is None, ARRIVE_S, "the local case unlinked")
    assert p.emulator.control.undelete([sfid])
    p.wait_until(lambda: row(p, "cases", "id = %s", [key])[1] == sfid, ARRIVE_S, "the local case relinked")
    with p.db() as conn:
        dump = conn.execute("select * from cases").fetchall()
    assert count(p, "cases", "subject = 'Local case'", []) == 1, dump

    # a Case created in Salesforce: nothing named the local row in Salesforce before the delete
    remote = p.sf().Case.create({"Subject": "Remote case", "Status": "New"})["id"]
    local_key = wait_local_sfid(p, "cases", remote)[0]
    p.sf().Case.delete(remote)
    p.wait_until(lambda: row(p, "cases", "id = %s", [local_key])[1] is None, ARRIVE_S, "the remote case unlinked")
    assert p.emulator.control.undelete([remote])
    p.wait_until(lambda: row(p, "cases", "sfid = %s", [remote]), ARRIVE_S, "the undeleted case linked")
    assert row(p, "cases", "sfid = %s", [remote])[0] == local_key
    assert count(p, "cases", "subject = 'Remote case'", []) == 1
