"""Inbound end to end: Salesforce (emulator) -> CDC producer -> processor -> PostgreSQL sink.

Every role runs as its own process, started the way deploy/ starts it. Assertions read the local
database and Kafka, never the roles' internals.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from sfsync.kafka.topics import TopicNames
from sfsync.records import Alert
from sfsync.serde import Serde

INBOUND_ROLES = ["postgres-sink", "processor", "salesforce-producer"]
TRICKLE_S = 60.0  # how long to wait for an arrival at all; speed is measured in bench/


def composite(sf: Any, method: str, path: str, **kw: Any) -> Any:
    return sf.restful(f"composite/sobjects{path}", method=method, **kw)


def create_many(sf: Any, sobject: str, records: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(records), 200):
        chunk = [{"attributes": {"type": sobject}, **r} for r in records[i:i + 200]]
        results = composite(sf, "POST", "", json={"allOrNone": True, "records": chunk})
        assert all(r["success"] for r in results), results
        ids += [r["id"] for r in results]
    return ids


def update_many(sf: Any, sobject: str, updates: list[dict[str, Any]]) -> None:
    for i in range(0, len(updates), 200):
        chunk = [{"attributes": {"type": sobject}, **u} for u in updates[i:i + 200]]
        results = composite(sf, "PATCH", "", json={"allOrNone": True, "records": chunk})
        assert all(r["success"] for r in results), results


def local_rows(p: Any, table: str, columns: str) -> dict[str, tuple[Any, ...]]:
    with p.db() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(f"select sfid, {columns} from {table} where sfid is not null")}


@pytest.fixture(scope="module")
def inbound(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    with p.db() as conn:  # for the poison-record test: a typed column and a NOT NULL the org does not enforce
        conn.execute("alter table accounts add column account_number integer")
    p.raw["objects"]["Account"]["fields"].append(
        {"column": "account_number", "field": "AccountNumber", "type": "integer"})
    p.rewrite_config()
    p.start(INBOUND_ROLES)
    p.wait_ready()
    return p


def test_single_calls_create_update_delete_undelete(inbound: Any) -> None:
    sf = inbound.sf()
    acc = sf.Account.create({"Name": "Acme", "Phone": "+1 555 0100", "Website": "https://acme.test",
                             "Industry": "Retail", "AccountNumber": "7"})["id"]
    con = sf.Contact.create({"FirstName": "Ada", "LastName": "Lovelace", "Email": "Ada@Example.COM",
                             "Title": "Countess", "AccountId": acc})["id"]
    inbound.wait_until(lambda: local_rows(inbound, "contacts", "first_name").get(con), TRICKLE_S, "contact created")
    with inbound.db() as conn:
        account = conn.execute("select id, name, phone, website, industry, account_number from accounts "
                               "where sfid = %s", [acc]).fetchone()
        assert account[1:] == ("Acme", "+1 555 0100", "https://acme.test", "Retail", 7)
        contact = conn.execute("select first_name, last_name, email, title, account_id from contacts where sfid = %s",
                               [con]).fetchone()
        assert contact == ("Ada", "Lovelace", "ada@example.com", "Countess", account[0])  # linked through the sfid

    sf.Contact.update(con, {"Title": "Analyst", "Phone": "+44 20 0000"})
    inbound.wait_until(lambda: local_rows(inbound, "contacts", "title, phone").get(con) == ("Analyst", "+44 20 0000"),
                       TRICKLE_S, "contact updated")
    sf.Contact.delete(con)
    inbound.wait_until(lambda: con not in local_rows(inbound, "contacts", "title"), TRICKLE_S, "contact deleted")
    assert inbound.emulator.control.undelete([con])
    inbound.wait_until(lambda: local_rows(inbound, "contacts", "last_name").get(con) == ("Lovelace",), TRICKLE_S,
                       "contact undeleted")


def test_collections_of_200(inbound: Any) -> None:
    sf = inbound.sf()
    ids = create_many(sf, "Contact", [{"FirstName": f"F{i}", "LastName": f"L{i}", "Email": f"c{i}@x.test"}
                                      for i in range(200)])
    inbound.wait_until(lambda: set(ids) <= set(local_rows(inbound, "contacts", "last_name")), TRICKLE_S,
                       "200 contacts")
    update_many(sf, "Contact", [{"id": sfid, "Title": f"T{i}"} for i, sfid in enumerate(ids)])
    expected = {sfid: (f"F{i}", f"L{i}", f"c{i}@x.test", f"T{i}") for i, sfid in enumerate(ids)}

    def matches() -> bool:
        rows = local_rows(inbound, "contacts", "first_name, last_name, email, title")
        return all(rows.get(k) == v for k, v in expected.items())

    inbound.wait_until(matches, TRICKLE_S, "200 contact updates")
    results = composite(sf, "DELETE", "", params={"ids": ",".join(ids[:100]), "allOrNone": "true"})
    assert all(r["success"] for r in results)
    inbound.wait_until(lambda: not set(ids[:100]) & set(local_rows(inbound, "contacts", "title")), TRICKLE_S,
                       "100 contacts deleted")
    rows = local_rows(inbound, "contacts", "title")
    assert set(ids[100:]) <= set(rows)


@pytest.mark.parametrize("victim", ["salesforce-producer", "processor", "postgres-sink"])
def test_kill_9_mid_stream_loses_nothing(inbound: Any, victim: str) -> None:
    sf = inbound.sf()
    ids = create_many(sf, "Account", [{"Name": f"{victim}-{i}", "Phone": "0"} for i in range(500)])
    rounds = 10  # 5,000 updates
    writer_done = threading.Event()

    def write() -> None:
        for r in range(1, rounds + 1):
            update_many(sf, "Account", [{"id": sfid, "Phone": str(r)} for sfid in ids])
        writer_done.set()

    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(1.0)
    inbound.roles.kill(victim, signal.SIGKILL)
    time.sleep(1.0)
    inbound.roles.start(victim)
    thread.join(120)
    assert writer_done.is_set()

    def converged() -> bool:
        rows = local_rows(inbound, "accounts", "name, phone")
        return all(rows.get(sfid) == (f"{victim}-{i}", str(rounds)) for i, sfid in enumerate(ids))

    inbound.wait_until(converged, 90, f"convergence after kill -9 of {victim}", interval=0.5)
    with inbound.db() as conn:
        dupes = conn.execute("select sfid, count(*) from accounts group by sfid having count(*) > 1").fetchall()
        named = conn.execute("select count(*) from accounts where name like %s", [f"{victim}-%"]).fetchone()
    assert dupes == [] and named == (500,)


def test_poison_records_go_to_the_dlq_and_the_rest_arrive(inbound: Any) -> None:
    from sfsync.failures import parse_failure_headers

    with inbound.db() as conn:
        conn.execute("alter table accounts alter column website set default null")
        conn.execute("update accounts set website = '' where website is null")
        conn.execute("alter table accounts alter column website set not null")
    sf = inbound.sf()
    bad_type = sf.Account.create({"Name": "bad-number", "AccountNumber": "not-a-number", "Website": "w"})["id"]
    no_site = sf.Account.create({"Name": "no-website"})["id"]
    good = sf.Account.create({"Name": "after-poison", "Website": "https://ok.test"})["id"]
    inbound.wait_until(lambda: good in local_rows(inbound, "accounts", "name"), TRICKLE_S, "the record after poison")
    rows = local_rows(inbound, "accounts", "name")
    assert bad_type not in rows and no_site not in rows
    names = TopicNames(inbound.prefix)

    def dead_letters() -> dict[str, Any] | None:
        infos = [parse_failure_headers(m.headers()) for m in inbound.read_topic(names.dlq("postgres"), 8)]
        return {i.message: i for i in infos} if len(infos) >= 2 else None

    letters = inbound.wait_until(dead_letters, TRICKLE_S, "two dead letters", interval=0.5)
    reasons = "\n".join(letters)
    assert "AccountNumber -> account_number: cannot coerce a str value to integer" in reasons
    not_null = [info for info in letters.values() if info.error_class == "SQLSTATE 23502"]
    assert not_null and "website" in not_null[0].message
    with inbound.db() as conn:
        conn.execute("alter table accounts alter column website drop not null")


def test_a_tagged_value_sfsync_did_not_write_flows_like_salesforce_automation(inbound: Any) -> None:
    """Echo by value (issue 11): a change carrying sfsync's origin is a no-op only where its values are what
    sfsync wrote. Here sfsync wrote nothing: the tagged value is Salesforce's own (a flow or trigger acting
    during sfsync's write looks exactly so) and reaches PostgreSQL.

    Before echo by value it was dropped by its tag, and the local row never saw it."""
    sf = inbound.sf()
    acc = sf.Account.create({"Name": "echo-base", "Phone": "1"})["id"]
    inbound.wait_until(lambda: acc in local_rows(inbound, "accounts", "name"), TRICKLE_S, "echo base")
    sf.Account.update(acc, {"Phone": "set-by-a-flow"}, headers={"Sforce-Call-Options": "client=sfsync"})
    inbound.wait_until(lambda: local_rows(inbound, "accounts", "phone").get(acc) == ("set-by-a-flow",),
                       TRICKLE_S, "the tagged value in PostgreSQL")


def seeded_account(p: Any, name: str) -> str:
    """An Account created without any change event (as if its events were lost)."""
    p.emulator.control.seed("Account", 1, {"Name": name, "Phone": "seeded"}, emit_events=False)
    found = p.sf().query(f"select Id from Account where Name = '{name}'")["records"]
    assert len(found) == 1
    return str(found[0]["Id"])


def test_gap_event_is_repaired_from_current_values(inbound: Any) -> None:
    acc = seeded_account(inbound, "gap-update")
    assert acc not in local_rows(inbound, "accounts", "name")
    inbound.emulator.control.emit_gap("Account", "GAP_UPDATE", [acc])
    inbound.wait_until(lambda: local_rows(inbound, "accounts", "name, phone").get(acc) == ("gap-update", "seeded"),
                       TRICKLE_S, "GAP_UPDATE repaired by reading the record")


def test_gap_overflow_is_repaired_by_catch_up(inbound: Any) -> None:
    acc = seeded_account(inbound, "gap-overflow")
    inbound.emulator.control.emit_gap("Account", "GAP_OVERFLOW")
    inbound.wait_until(lambda: acc in local_rows(inbound, "accounts", "name"), TRICKLE_S, "GAP_OVERFLOW catch-up")


def test_replay_id_outside_retention_catches_up_and_alerts(inbound: Any) -> None:
    sf = inbound.sf()
    inbound.roles.kill("salesforce-producer", signal.SIGTERM)
    missed = sf.Account.create({"Name": "while-producer-was-down"})["id"]
    newest = inbound.emulator.control.events(limit=1)["last_replay_id"]
    inbound.emulator.control.truncate_events(newest)  # the stored replay id is now outside retention
    inbound.roles.start("salesforce-producer")
    inbound.wait_until(lambda: missed in local_rows(inbound, "accounts", "name"), TRICKLE_S,
                       "catch-up after lost retention")
    names = TopicNames(inbound.prefix)
    alerts = [Serde().decode(m.value(), Alert) for m in inbound.read_topic(names.alerts, 5)]
    assert any(a.kind.value == "replay_gap" for a in alerts), alerts
