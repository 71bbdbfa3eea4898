"""Force sync end to end: ``sfsync sync Contact <id>`` and ``--all`` (processes) against a pipeline whose roles
run as processes.

The linked contacts existed before sfsync (the local rows written as sfsync writes, which the capture
trigger skips; the Salesforce records before the CDC producer subscribed, ``cdc_start: latest``), so the
pipeline has never seen them; the test then changes local rows behind sfsync's back (uncaptured writes) and
has force sync repair them, from Salesforce by sfid and the other way by local key.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from sfsync.salesforce.values import normalize_sfid

ROLES = ["salesforce-sink", "postgres-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 120.0
LINKED, SF_ONLY = 250, 5
PAGE = 200  # --page-size: 255 Salesforce records are two pages


def sync(p: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sfsync", "sync", *args, "--config", str(p.config_path)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def uncaptured(p: Any, statement: str, params: tuple[Any, ...]) -> None:
    """A write behind sfsync's back: the origin marker makes the capture trigger skip it."""
    with p.db() as conn, conn.transaction():
        conn.execute("select set_config('sfsync.origin', 'sfsync', true)")
        conn.execute(statement, params)


def local_row(p: Any, key: str) -> dict[str, Any]:
    with p.db() as conn:
        cur = conn.execute("select id::text as id, sfid, title, last_name from contacts where id::text = %s", (key,))
        names = [d.name for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def local_count(p: Any) -> int:
    with p.db() as conn:
        return int(conn.execute("select count(*) from contacts").fetchone()[0])


def sf_title(p: Any, sfid: str) -> Any:
    return p.sf().Contact.get(sfid)["Title"]


@pytest.fixture(scope="module")
def stack(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.raw["salesforce"]["cdc_start"] = "latest"
    p.rewrite_config()
    keys: list[str] = []
    with p.db() as conn, conn.transaction():
        conn.execute("select set_config('sfsync.origin', 'sfsync', true)")
        for i in range(LINKED):
            keys.append(str(conn.execute(
                "insert into contacts (last_name, email, title) values (%s, %s, %s) returning id",
                (f"c-{i}", f"c{i}@example.test", f"t-{i}")).fetchone()[0]))
    sf = p.sf()
    sf_ids: list[str] = []
    for start in range(0, LINKED, 200):
        chunk = [{"attributes": {"type": "Contact"}, "LastName": f"c-{i}", "Email": f"c{i}@example.test",
                  "Title": f"t-{i}", "Local_Id__c": keys[i]} for i in range(start, min(start + 200, LINKED))]
        answer = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": chunk})
        assert all(r["success"] for r in answer), answer
        sf_ids += [r["id"] for r in answer]
    with p.db() as conn, conn.transaction():
        conn.execute("select set_config('sfsync.origin', 'sfsync', true)")
        conn.execute("update contacts c set sfid = v.sfid from unnest(%s::text[], %s::text[]) as v(k, sfid) "
                     "where c.id::text = v.k", (keys, sf_ids))
        assert conn.execute("select count(*) from sfsync_outbox").fetchone()[0] == 0
    # Salesforce records the pipeline never heard of (no CDC event at all)
    sf_only = p.emulator.control.seed("Contact", SF_ONLY, {"LastName": "sf-only-{i}", "Title": "sf-only"},
                                      emit_events=False)
    p.start(ROLES)
    p.wait_ready()
    return p, keys, sf_ids, sf_only


def test_a_salesforce_id_gives_the_local_row_salesforces_values(stack: Any) -> None:
    p, keys, sf_ids, _ = stack
    uncaptured(p, "update contacts set title = 'drifted' where id::text = %s", (keys[0],))
    done = sync(p, "Contact", sf_ids[0])
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.strip() == (f"sync Contact {sf_ids[0]}: pushed Salesforce -> PostgreSQL (a snapshot on "
                                   "changes.inbound); 2 Salesforce API call(s)")  # describe + one query
    p.wait_until(lambda: local_row(p, keys[0])["title"] == "t-0", ARRIVE_S, "the row repaired from Salesforce")
    assert sf_title(p, sf_ids[0]) == "t-0"
    assert local_row(p, keys[0])["sfid"] == sf_ids[0] and local_count(p) == LINKED  # no second row


def test_a_record_the_processor_knows_is_repaired_from_salesforce_again(stack: Any) -> None:
    """A force sync is forced: the snapshot's values equal what the processor last synced, yet the row was
    changed behind sfsync's back, so the winner is written again (without the force, nothing would be)."""
    p, keys, sf_ids, _ = stack
    for drift in ("drifted-once", "drifted-twice"):
        uncaptured(p, "update contacts set title = %s where id::text = %s", (drift, keys[3]))
        done = sync(p, "Contact", sf_ids[3])
        assert done.returncode == 0, done.stderr + done.stdout
        p.wait_until(lambda: local_row(p, keys[3])["title"] == "t-3", ARRIVE_S, f"the row repaired after {drift}")
    assert sf_title(p, sf_ids[3]) == "t-3"


def test_a_local_key_gives_salesforce_the_local_values(stack: Any) -> None:
    p, keys, sf_ids, _ = stack
    uncaptured(p, "update contacts set title = 'fixed-locally' where id::text = %s", (keys[1],))
    done = sync(p, "Contact", keys[1])
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.strip() == (f"sync Contact {keys[1]}: pushed PostgreSQL -> Salesforce (the row into the "
                                   "outbox); 0 Salesforce API call(s)")
    p.wait_until(lambda: sf_title(p, sf_ids[1]) == "fixed-locally", ARRIVE_S, "Salesforce repaired from the row")
    assert local_row(p, keys[1])["title"] == "fixed-locally"

    # the record the pipeline knows now (synced by the test above): the row's version of sfsync's write is
    # carried along (seen_versions), so the local value is a plain newer edit and wins
    uncaptured(p, "update contacts set title = 'fixed-again' where id::text = %s", (keys[0],))
    done = sync(p, "Contact", keys[0])
    assert done.returncode == 0, done.stderr + done.stdout
    p.wait_until(lambda: sf_title(p, sf_ids[0]) == "fixed-again", ARRIVE_S, "a known record pushed from the row")

    # an unlinked row the pipeline never saw: created in Salesforce under its local key, and linked
    with p.db() as conn, conn.transaction():
        conn.execute("select set_config('sfsync.origin', 'sfsync', true)")
        new_key = str(conn.execute("insert into contacts (last_name, title) values ('never-synced', 'new') "
                                   "returning id").fetchone()[0])
    done = sync(p, "Contact", new_key)
    assert done.returncode == 0, done.stderr + done.stdout
    linked = p.wait_until(lambda: local_row(p, new_key)["sfid"], ARRIVE_S, "the unlinked row created and linked")
    created = p.sf().Contact.get(linked)
    assert created["Local_Id__c"] == new_key and created["LastName"] == "never-synced" and created["Title"] == "new"

    # --from salesforce with a local key: the linked record is read by its sfid
    done = sync(p, "Contact", keys[2], "--from", "salesforce")
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.startswith(f"sync Contact {sf_ids[2]}: pushed Salesforce -> PostgreSQL")


def test_all_pushes_every_record_one_query_call_per_page(stack: Any) -> None:
    p, keys, _sf_ids, sf_only = stack
    for i in range(10, 20):
        uncaptured(p, "update contacts set title = 'drifted' where id::text = %s", (keys[i],))
    p.emulator.control.reset_stats()
    done = sync(p, "Contact", "--all", "--page-size", str(PAGE))
    assert done.returncode == 0, done.stderr + done.stdout
    total = LINKED + SF_ONLY + 1  # and the row created in Salesforce by the test above
    assert p.sf().query("select count() from Contact")["totalSize"] == total
    # one describe, two query pages (a query and one queryMore), never a call per record
    assert f"sync Contact --all: pushed {total} record(s) from salesforce; 3 Salesforce API call(s)" in done.stdout
    assert re.search(rf"pushed Salesforce -> PostgreSQL\s*│\s*{total}\b", done.stdout), done.stdout
    assert re.search(r"pushed PostgreSQL -> Salesforce\s*│\s*0\b", done.stdout), done.stdout
    stats = p.emulator.control.stats()
    mine = [q for q in stats["queries"] if q.startswith("SELECT Id, IsDeleted, SystemModstamp")]
    assert len(mine) == 1 and mine[0].endswith("FROM Contact"), mine  # every record, one query
    assert stats["api_calls"].get("GET query/{locator}") == 1, stats["api_calls"]

    def repaired() -> bool:
        return all(local_row(p, keys[i])["title"] == f"t-{i}" for i in range(10, 20)) and local_count(p) == total

    p.wait_until(repaired, ARRIVE_S, "drifted rows repaired and the Salesforce-only records created locally")
    with p.db() as conn:
        created = {r[0] for r in conn.execute("select sfid from contacts where title = 'sf-only'")}
    assert created == set(sf_only)

    # --from local: every row into the outbox, no Salesforce call
    rows = local_count(p)
    done = sync(p, "Contact", "--all", "--from", "local", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["pushed"] == {"salesforce_to_local": 0, "local_to_salesforce": rows}
    assert report["salesforce_calls"] == 0 and report["from"] == "local"


@pytest.mark.parametrize(("args", "message"), [
    (("Opportunity", "0060000000000AB"), "unknown object 'Opportunity'; mapped objects: Account, Case, Contact"),
    (("Contact", normalize_sfid("001000000000001")),
     f"{normalize_sfid('001000000000001')} is not a Contact id: its prefix is 001, Contact ids start with 003"),
    (("Contact", normalize_sfid("003000000000ZZZ")), f"no Contact with Id = {normalize_sfid('003000000000ZZZ')} "
                                                     "in Salesforce"),
    (("Contact", "999999"), "no Contact row with id = '999999' in "),
    (("Contact", "it's", "--from", "salesforce"), "no Contact with Local_Id__c = \"it's\" in Salesforce"),
    (("Contact",), "give a record id (Salesforce id or local key) or --all, not neither"),
    (("Contact", "1", "--all"), "not both"),
    (("Contact", "1", "--from", "elsewhere"), "unknown --from 'elsewhere'; one of: salesforce, local"),
    (("Contact", "--all", "--page-size", "50"), "page size 50: Salesforce pages hold 200 to 2000 records"),
])
def test_a_bad_request_is_one_line_naming_it_exit_2(stack: Any, args: tuple[str, ...], message: str) -> None:
    p = stack[0]
    done = sync(p, *args)
    assert done.returncode == 2, done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr

