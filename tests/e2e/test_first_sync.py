"""First sync end to end: ``sfsync backfill Contact`` (a process) against two existing datasets, with every
role running as its own process.

The datasets existed before sfsync: the local rows are written as sfsync writes (the capture trigger skips
them, as if they predate it) and the Salesforce records before the CDC producer subscribes (``cdc_start:
latest``), so nothing of either side is in the pipeline until the backfill sends it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from sfsync.operations.status import read_statuses
from sfsync.records import Direction, SyncState

ROLES = ["salesforce-sink", "postgres-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 180.0
PAIRS, LOCAL_ONLY, SF_ONLY, AMBIGUOUS = 300, 200, 200, 5


def norm(email: str | None) -> str:
    return "".join((email or "").split()).casefold()


def create_salesforce(p: Any, records: list[dict[str, Any]]) -> list[str]:
    sf = p.sf()
    ids: list[str] = []
    for start in range(0, len(records), 200):
        chunk = [{"attributes": {"type": "Contact"}, **r} for r in records[start:start + 200]]
        answer = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": chunk})
        assert all(r["success"] for r in answer), answer
        ids += [r["id"] for r in answer]
    return ids


def insert_existing_rows(p: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Rows that predate sfsync: written with the origin marker, so the capture trigger skips them."""
    keys: list[str] = []
    with p.db() as conn, conn.transaction():
        conn.execute("select set_config('sfsync.origin', 'sfsync', true)")
        for r in rows:
            keys.append(str(conn.execute(
                "insert into contacts (first_name, last_name, email, title, phone) values (%s, %s, %s, %s, %s) "
                "returning id", (r.get("first_name"), r["last_name"], r["email"], r.get("title"), r.get("phone")),
            ).fetchone()[0]))
        assert conn.execute("select count(*) from sfsync_outbox").fetchone()[0] == 0
    return keys


def local_rows(p: Any) -> list[dict[str, Any]]:
    with p.db() as conn:
        cur = conn.execute("select id::text as id, sfid, email, title, phone, last_name from contacts")
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def pair_rows(p: Any) -> dict[int, dict[str, Any]]:
    return {int(r["last_name"].split("-")[1]): r for r in local_rows(p) if r["last_name"].startswith("pair-")}


def sf_rows(p: Any) -> list[dict[str, Any]]:
    soql = "select Id, Local_Id__c, Email, Title, Phone, LastName from Contact"
    return list(p.sf().query_all(soql)["records"])


def backfill(p: Any, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "sfsync", "backfill", "Contact", "--config", str(p.config_path),
                           "--json", *args], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def first_sync(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.raw["objects"]["Contact"]["match_key"] = {"column": "email", "field": "Email"}
    p.raw["salesforce"]["cdc_start"] = "latest"
    p.rewrite_config()
    # Salesforce: the pairs' emails in another case, 200 of its own, and one record of each ambiguous email
    sf_records = [{"LastName": f"pair-{i}", "Email": f"Person{i}@Example.TEST",
                   **({"Title": f"sf-title-{i}"} if i < 100 else {}),
                   **({"Phone": f"sf-phone-{i}"} if 200 <= i < 220 else {})} for i in range(PAIRS)]
    sf_records += [{"LastName": f"sf-only-{i}", "Email": f"sfonly{i}@example.test", "Title": "sf"}
                   for i in range(SF_ONLY)]
    sf_records += [{"LastName": f"amb-sf-{i}", "Email": f"dup{i}@example.test"} for i in range(AMBIGUOUS)]
    sf_ids = create_salesforce(p, sf_records)
    # local: the pairs' emails with stray whitespace, 200 of its own, two rows of each ambiguous email
    rows = [{"last_name": f"pair-{i}", "email": f"  person{i}@example.test ",
             **({"phone": f"local-phone-{i}"} if 100 <= i < 200 else {}),
             **({"phone": f"local-phone-{i}"} if 200 <= i < 220 else {})} for i in range(PAIRS)]
    rows += [{"last_name": f"local-only-{i}", "email": f"localonly{i}@example.test", "title": "local"}
             for i in range(LOCAL_ONLY)]
    rows += [{"last_name": f"amb-local-{i}-{j}", "email": f"DUP{i}@example.test"}
             for i in range(AMBIGUOUS) for j in range(2)]
    keys = insert_existing_rows(p, rows)
    p.start(ROLES)
    p.wait_ready()
    return p, sf_ids, keys


def test_a_first_sync_links_pairs_once_creates_the_rest_and_reports_ambiguous_emails(first_sync: Any) -> None:
    p, sf_ids, keys = first_sync
    plan = backfill(p, "--dry-run")["plan"]
    assert plan == {"linked": PAIRS, "ambiguous_groups": AMBIGUOUS, "ambiguous_local": 2 * AMBIGUOUS,
                    "ambiguous_salesforce": AMBIGUOUS, "local_only": LOCAL_ONLY, "salesforce_only": SF_ONLY}
    assert len(local_rows(p)) == len(keys) and all(r["sfid"] is None for r in local_rows(p))  # dry run: nothing

    p.emulator.control.reset_stats()
    report = backfill(p)
    assert report["linked"] == PAIRS and report["refused"] == [] and report["relinked"] == 0
    # one describe, one query page, two collection updates of the external id (300 = 200 + 100)
    assert report["salesforce_calls"] == 4

    linked_total = PAIRS + LOCAL_ONLY + SF_ONLY

    def settled() -> bool:
        local = [r for r in local_rows(p) if r["sfid"]]
        remote = [r for r in sf_rows(p) if r["Local_Id__c"] or r["Id"] in {x["sfid"] for x in local}]
        return len(local) >= linked_total and len(remote) >= linked_total

    p.wait_until(settled, ARRIVE_S, "700 linked records on each side", interval=0.5)

    def merged() -> bool:  # empty fields filled from the other side; both set: the policy's winner
        pairs = pair_rows(p)
        remote = {r["Id"]: r for r in sf_rows(p)}
        return (all(pairs[i]["title"] == f"sf-title-{i}" for i in range(100))
                and all(remote[pairs[i]["sfid"]]["Phone"] == f"local-phone-{i}" for i in range(100, 220)))

    p.wait_until(merged, ARRIVE_S, "each linked pair's fields merged")

    local, remote = local_rows(p), sf_rows(p)
    assert len(local) == len(keys) + SF_ONLY  # 710: nothing duplicated locally
    assert len(remote) == len(sf_ids) + LOCAL_ONLY  # 705: nothing duplicated in Salesforce
    by_id = {r["Id"]: r for r in remote}
    by_email_local: dict[str, list[dict[str, Any]]] = {}
    for r in local:
        by_email_local.setdefault(norm(r["email"]), []).append(r)

    # the 300 pairs: one to one, both ways
    for i in range(PAIRS):
        [row] = by_email_local[f"person{i}@example.test"]
        assert row["sfid"] in sf_ids[:PAIRS], row
        twin = by_id[row["sfid"]]
        assert twin["LastName"] == f"pair-{i}" and twin["Local_Id__c"] == row["id"]
    assert len({r["sfid"] for r in local if r["sfid"]}) == linked_total

    # the local-only rows are in Salesforce under their local key, the Salesforce-only records are local rows
    for i in range(LOCAL_ONLY):
        [row] = by_email_local[f"localonly{i}@example.test"]
        assert by_id[row["sfid"]]["Local_Id__c"] == row["id"] and by_id[row["sfid"]]["LastName"] == row["last_name"]
    for i in range(SF_ONLY):
        [row] = by_email_local[f"sfonly{i}@example.test"]
        assert row["sfid"] == sf_ids[PAIRS + i] and row["last_name"] == f"sf-only-{i}" and row["title"] == "sf"

    # the 20 pairs with a phone on both sides: last writer wins, and the local value was read by the backfill
    # after the Salesforce record's last change; the 100 Salesforce titles stayed
    assert all(by_id[pair_rows(p)[i]["sfid"]]["Title"] == f"sf-title-{i}" for i in range(100))

    # the ambiguous emails: neither linked nor copied, and reported
    for i in range(AMBIGUOUS):
        group = by_email_local[f"dup{i}@example.test"]
        assert len(group) == 2 and all(r["sfid"] is None for r in group)
        twin = by_id[sf_ids[PAIRS + SF_ONLY + i]]
        assert twin["Local_Id__c"] is None and twin["Id"] not in {r["sfid"] for r in local}
    ambiguous = [s for s in read_statuses(p.cfg) if s.state is SyncState.AMBIGUOUS]
    assert sorted((s.direction, s.local_key or s.sfid) for s in ambiguous) == sorted(
        [(Direction.OUTBOUND, r["id"]) for i in range(AMBIGUOUS) for r in by_email_local[f"dup{i}@example.test"]]
        + [(Direction.INBOUND, sf_ids[PAIRS + SF_ONLY + i]) for i in range(AMBIGUOUS)])
    for s in ambiguous:
        assert "ambiguous match on Email=" in (s.last_error or "") and "none is linked" in (s.last_error or "")

    # a second run finds nothing left to do: no new link, no create, no duplicate
    again = backfill(p)
    assert again["plan"]["linked"] == 0 and again["plan"]["local_only"] == 0 and again["linked"] == 0
    assert again["plan"]["salesforce_only"] == 0 and again["plan"]["ambiguous_groups"] == AMBIGUOUS
    assert len(local_rows(p)) == len(keys) + SF_ONLY and len(sf_rows(p)) == len(sf_ids) + LOCAL_ONLY
