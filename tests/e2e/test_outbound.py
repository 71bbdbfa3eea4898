"""Outbound end to end: PostgreSQL triggers -> outbox relay -> processor -> Salesforce sink (emulator).

Roles run as their own processes. Assertions read the emulator (through simple-salesforce and its
stats), the local database and Kafka.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from sfsync.failures import parse_failure_headers
from sfsync.kafka.topics import TopicNames
from sfsync.records import Alert, AlertKind
from sfsync.serde import Serde

OUTBOUND_ROLES = ["salesforce-sink", "processor", "postgres-producer"]
# Bounds on how long to wait for something to ARRIVE (a test fails only when it never does); speed is
# measured in bench/, not here.
TRICKLE_S = 60.0
BULK_S = 180.0


def sf_contacts(p: Any, where: str = "") -> dict[str, dict[str, Any]]:
    """Contacts in the emulator keyed by Local_Id__c (queryAll pages through everything)."""
    soql = f"select Id, Local_Id__c, FirstName, LastName, Email, Title, AccountId from Contact {where}"
    return {r["Local_Id__c"]: r for r in p.sf().query_all(soql)["records"] if r["Local_Id__c"]}


def insert_contacts(p: Any, n: int, tag: str) -> list[int]:
    with p.db() as conn, conn.transaction():
        rows = conn.execute(
            "insert into contacts (first_name, last_name, email, title) "
            "select 'F' || g, %s || '-' || g, %s || g || '@x.test', 'T' from generate_series(1, %s) g returning id",
            [tag, tag, n]).fetchall()
    return [r[0] for r in rows]


def wait_synced(p: Any, ids: list[int], timeout: float, what: str) -> dict[str, dict[str, Any]]:
    want = {str(i) for i in ids}

    def done() -> dict[str, dict[str, Any]] | None:
        have = sf_contacts(p)
        return have if want <= set(have) else None

    return p.wait_until(done, timeout, what, interval=0.5)


@pytest.fixture(scope="module")
def outbound(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.start(OUTBOUND_ROLES)
    p.wait_ready()
    return p


def test_single_statements_insert_update_delete(outbound: Any) -> None:
    with outbound.db() as conn:
        acc = conn.execute("insert into accounts (name, phone) values ('Local Co', '1') returning id").fetchone()[0]
        cid = conn.execute("insert into contacts (first_name, last_name, email, account_id) "
                           "values ('Grace', 'Hopper', ' Grace@Navy.MIL ', %s) returning id", [acc]).fetchone()[0]
    have = wait_synced(outbound, [cid], TRICKLE_S, "insert")
    sf_acc = outbound.sf().query(f"select Id, Name from Account where Local_Id__c = '{acc}'")["records"]
    assert len(sf_acc) == 1 and sf_acc[0]["Name"] == "Local Co"
    rec = have[str(cid)]
    assert (rec["FirstName"], rec["LastName"], rec["Email"], rec["AccountId"]) == (
        "Grace", "Hopper", "grace@navy.mil", sf_acc[0]["Id"])

    def sfid_filled() -> bool:
        with outbound.db() as conn:
            return conn.execute("select sfid from contacts where id = %s", [cid]).fetchone()[0] == rec["Id"]

    outbound.wait_until(sfid_filled, TRICKLE_S, "sfid written back")
    with outbound.db() as conn:
        conn.execute("update contacts set title = 'Rear Admiral' where id = %s", [cid])
    outbound.wait_until(lambda: sf_contacts(outbound).get(str(cid), {}).get("Title") == "Rear Admiral", TRICKLE_S,
                        "update")
    with outbound.db() as conn:
        conn.execute("delete from contacts where id = %s", [cid])
    outbound.wait_until(lambda: str(cid) not in sf_contacts(outbound), TRICKLE_S, "delete")


def test_10000_row_transaction_in_exactly_50_calls(outbound: Any) -> None:
    """A backlog goes out in full batches whatever the machine's speed (consumers/backlog.py)."""
    control = outbound.emulator.control
    control.reset_stats()
    ids = insert_contacts(outbound, 10_000, "bulk")
    have = wait_synced(outbound, ids, BULK_S, "10,000 inserts")
    stats = control.stats()
    data_calls = sum(n for k, n in stats["api_calls"].items() if "composite/sobjects" in k)
    assert data_calls == 50, stats["api_calls"]
    bulk = [r for k, r in have.items() if r["LastName"].startswith("bulk-")]
    assert len(bulk) == 10_000 and len({r["Id"] for r in bulk}) == 10_000  # no duplicates

    def all_linked() -> bool:
        with outbound.db() as conn:
            return conn.execute("select count(*) from contacts where last_name like 'bulk-%%' and sfid is null"
                                ).fetchone()[0] == 0

    outbound.wait_until(all_linked, BULK_S, "sfid on every created row", interval=0.5)


@pytest.mark.parametrize("victim", ["postgres-producer", "salesforce-sink"])
def test_kill_9_relay_and_sink_every_row_arrives_once(outbound: Any, victim: str) -> None:
    tag = f"kill-{victim}"
    result: list[int] = []
    writer = threading.Thread(target=lambda: [result.extend(insert_contacts(outbound, 250, tag)) for _ in range(8)])
    writer.start()
    time.sleep(0.5)
    outbound.roles.kill(victim, signal.SIGKILL)
    outbound.roles.start(victim)
    writer.join(60)
    have = wait_synced(outbound, result, BULK_S * 2, f"rows after kill -9 of {victim}")
    mine = [r for r in have.values() if r["LastName"].startswith(tag)]
    assert len(mine) == 2000
    all_ids = [r for r in outbound.sf().query_all(
        f"select Id, Local_Id__c from Contact where LastName like '{tag}-%'")["records"]]
    assert len(all_ids) == 2000  # upsert on the external id: no duplicate

    def outbox_empty() -> bool:
        with outbound.db() as conn:
            return conn.execute(f"select count(*) from {outbound.cfg.postgres.outbox_table}").fetchone()[0] == 0

    outbound.wait_until(outbox_empty, BULK_S, "empty outbox")


def test_transient_faults_lose_nothing(outbound: Any) -> None:
    control = outbound.emulator.control
    # Two of each for certain (the first matching rule fires), then 5% of each at random.
    control.add_fault(method="PATCH", path="composite/sobjects", status=503, error_code="SERVER_UNAVAILABLE",
                      count=2)
    control.add_fault(path="composite/sobjects", error_code="UNABLE_TO_LOCK_ROW", count=2)
    control.add_fault(method="PATCH", path="composite/sobjects", status=503, error_code="SERVER_UNAVAILABLE",
                      probability=0.05)
    control.add_fault(path="composite/sobjects", error_code="UNABLE_TO_LOCK_ROW", probability=0.05)
    try:
        ids: list[int] = []
        for _ in range(100):
            ids += insert_contacts(outbound, 10, "faulty")
            time.sleep(0.2)
        wait_synced(outbound, ids, BULK_S, "rows under 503 / lock faults")
        fired: dict[str, int] = {}
        for f in control.faults():
            fired[f["error_code"]] = fired.get(f["error_code"], 0) + f["fired"]
        assert fired["SERVER_UNAVAILABLE"] >= 2 and fired["UNABLE_TO_LOCK_ROW"] >= 2, fired
        count = outbound.sf().query("select count() from Contact where LastName like 'faulty-%'")["totalSize"]
        assert count == len(ids)  # retried creates made no duplicate
    finally:
        control.clear_faults()


def test_expired_session_mid_run_continues(outbound: Any) -> None:
    ids = insert_contacts(outbound, 300, "before-expiry")
    outbound.emulator.control.expire_sessions()
    ids += insert_contacts(outbound, 300, "after-expiry")
    wait_synced(outbound, ids, BULK_S, "rows across a session expiry")


def test_one_bad_record_of_200_is_dead_lettered(outbound: Any) -> None:
    control = outbound.emulator.control
    control.add_validation_rule(object="Contact", field="LastName", equals="reject-me",
                                error_code="FIELD_CUSTOM_VALIDATION_EXCEPTION", message="Last name is not allowed")
    try:
        with outbound.db() as conn, conn.transaction():
            rows = conn.execute(
                "insert into contacts (first_name, last_name) select 'V', case when g = 100 then 'reject-me' "
                "else 'valid-' || g end from generate_series(1, 200) g returning id, last_name").fetchall()
        good = [i for i, name in rows if name != "reject-me"]
        bad = [i for i, name in rows if name == "reject-me"]
        wait_synced(outbound, good, TRICKLE_S * 2, "199 valid rows")
        names = TopicNames(outbound.prefix)

        def letters() -> list[Any]:
            return [parse_failure_headers(m.headers()) for m in outbound.read_topic(names.dlq("salesforce"), 4)
                    if m.key() and m.key().decode().endswith(f":local:{bad[0]}")]

        found = outbound.wait_until(letters, TRICKLE_S, "the dead letter")
        assert found[0].error_class == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
        assert "Last name is not allowed" in found[0].message
        assert str(bad[0]) not in sf_contacts(outbound)
    finally:
        control.clear_validation_rules()


def created_local_keys(p: Any, after: int) -> set[str]:
    """Local keys of Contacts created in Salesforce since replay id ``after`` (control API: no API calls)."""
    events = p.emulator.control.events(after=after, limit=100_000)["events"]
    return {str(e["payload"].get("Local_Id__c")) for e in events
            if e["payload"]["ChangeEventHeader"]["changeType"] == "CREATE"}


def budget_alerts(p: Any, after: int) -> list[Any]:
    """API budget alerts on the alerts topic, past the first ``after``."""
    names = TopicNames(p.prefix)
    alerts = [Serde().decode(m.value(), Alert) for m in p.read_topic(names.alerts, 2)]
    return [a for a in alerts if a.kind is AlertKind.API_BUDGET][after:]


def test_budget_nearly_spent_slows_and_never_hits_the_limit(outbound: Any) -> None:
    control = outbound.emulator.control
    share = outbound.cfg.salesforce.api_budget_share
    limit = 1000
    after = control.events(limit=1)["last_replay_id"]
    after_alerts = len(budget_alerts(outbound, 0))
    control.set_limits(max=limit, used=int(limit * share) - 6)  # a handful of calls left in sfsync's share
    try:
        ids = insert_contacts(outbound, 2000, "budget")
        # the sink says it stopped: one API budget alert per outage
        outbound.wait_until(lambda: budget_alerts(outbound, after_alerts), BULK_S, "the API budget alert")
        stats = control.stats()
        # slowed, then stopped, inside its share; while stopped it asks for its budget once per retry interval
        asked = stats["api_calls"].get("GET limits", 0)
        assert stats["api_usage"]["used"] - asked <= limit * share, stats
        synced = created_local_keys(outbound, after) & {str(i) for i in ids}
        assert 0 < len(synced) < len(ids)  # it used the calls it had, then stopped
        control.set_limits(max=1_000_000, used=0)  # a new day: the budget allows again
        wait_synced(outbound, ids, BULK_S * 2, "rows after the budget came back")
    finally:
        control.set_limits(max=1_000_000, used=0)


def test_a_local_delete_under_unlink_keeps_the_salesforce_record_and_breaks_its_link(outbound: Any) -> None:
    """Case has ``delete_policy: unlink``: a local delete leaves the Salesforce record in place and clears its
    external id, so it no longer names a local row (and no later local row can upsert into it).

    Failed before the fix: the local delete deleted the Case in Salesforce (the policy was applied inbound only).
    """
    with outbound.db() as conn:
        case_id = conn.execute("insert into cases (subject, status) values ('Unlink me', 'New') returning id"
                               ).fetchone()[0]

    def linked() -> str | None:
        with outbound.db() as conn:
            return conn.execute("select sfid from cases where id = %s", [case_id]).fetchone()[0]

    sfid = outbound.wait_until(linked, TRICKLE_S, "the case created in Salesforce and linked")
    with outbound.db() as conn:
        conn.execute("delete from cases where id = %s", [case_id])

    def settled() -> tuple[list[dict[str, Any]]] | None:  # a tuple: an empty answer (deleted) settles too
        found = outbound.sf().query_all(f"select Id, Subject, Local_Id__c from Case where Id = '{sfid}'")["records"]
        return (found,) if not found or found[0]["Local_Id__c"] is None else None

    (found,) = outbound.wait_until(settled, TRICKLE_S, "the local delete applied to Salesforce")
    assert [(r["Id"], r["Subject"], r["Local_Id__c"]) for r in found] == [(sfid, "Unlink me", None)]
