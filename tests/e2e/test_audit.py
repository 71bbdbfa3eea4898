"""Every losing change is kept in ``sfsync_audit`` (issue 11), end to end: every role a process, the emulator,
the embedded broker and PostgreSQL, the real ``sfsync audit`` command.

A linked contact under ``salesforce_wins``: Title is changed in Salesforce, and, before sfsync's write of
that value has reached PostgreSQL (the PostgreSQL sink is stopped meanwhile, so the local edits cannot
have seen it), twice in PostgreSQL. Both local edits are concurrent with Salesforce's and lose. The
compacted status topic keeps one state per record and direction, the second Conflict; the audit keeps both,
each with both values and the policy. Once the sink runs again both sides hold Salesforce's value.

A first sync (``sfsync backfill``, a process) that finds one email on two local rows and one Salesforce
record records each candidate as ``ambiguous`` in the audit, with the candidates listed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.kafka.topics import TopicNames
from sfsync.operations.status import read_statuses
from sfsync.records import ApplyCommand, Direction, RecordStatus, SyncState
from sfsync.serde import Serde

ALL_ROLES = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 90.0  # a hang guard, not a speed bound


@pytest.fixture(scope="module")
def p(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.raw["objects"]["Contact"]["conflict_policy"] = "salesforce_wins"
    p.raw["objects"]["Contact"]["match_key"] = {"column": "email", "field": "Email"}  # for `sfsync backfill`
    p.rewrite_config()
    p.start(ALL_ROLES)
    p.wait_ready()
    return p


def cli(p: Any, *args: str) -> str:
    result = CliRunner().invoke(app, ["audit", *args, "--config", str(p.config_path)],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def title(p: Any, cid: int) -> str:
    with p.db() as conn:
        return str(conn.execute("select title from contacts where id = %s", [cid]).fetchone()[0])


def linked_contact(p: Any) -> tuple[int, str]:
    """A contact created locally, linked, and a later local change arrived in Salesforce (nothing in flight)."""
    with p.db() as conn:
        cid = conn.execute("insert into contacts (first_name, last_name, title) values ('Ada', %s, 'start') "
                           "returning id", [f"L-{uuid.uuid4().hex[:8]}"]).fetchone()[0]

    def sfid() -> str | None:
        with p.db() as conn:
            return conn.execute("select sfid from contacts where id = %s", [cid]).fetchone()[0]

    sf_id = p.wait_until(sfid, ARRIVE_S, "the contact linked")
    with p.db() as conn:
        conn.execute("update contacts set first_name = 'Ada-2' where id = %s", [cid])
    p.wait_until(lambda: p.sf().Contact.get(sf_id)["FirstName"] == "Ada-2", ARRIVE_S, "FirstName Ada-2")
    return cid, sf_id


def conflicts(p: Any, sf_id: str) -> list[RecordStatus]:
    """Every Conflict status of the record on the status topic, as written (before any compaction)."""
    serde = Serde.from_config(p.cfg.kafka)
    found = [serde.decode(m.value(), RecordStatus) for m in p.read_topic(TopicNames(p.prefix).status, 5)
             if m.value() is not None and not (m.key() or b"").startswith(b"queued:")]
    return [s for s in found if s.state is SyncState.CONFLICT and s.key == f"Contact:{sf_id}"]


def local_command_with(p: Any, sf_id: str, value: str) -> bool:
    serde = Serde.from_config(p.cfg.kafka)
    commands = [serde.decode(m.value(), ApplyCommand) for m in p.read_topic(TopicNames(p.prefix).apply_local, 5)]
    return any(c.sfid == sf_id and c.values.get("title") == value for c in commands)


def test_two_losses_of_one_record_both_stay_in_the_audit(p: Any) -> None:
    cid, sf_id = linked_contact(p)
    remote, first, second = (f"{side}-{uuid.uuid4().hex[:6]}" for side in ("REMOTE", "LOCAL1", "LOCAL2"))
    p.roles.kill("postgres-sink", signal.SIGTERM)  # sfsync's write of the Salesforce value waits in apply.local
    p.sf().Contact.update(sf_id, {"Title": remote})
    p.wait_until(lambda: local_command_with(p, sf_id, remote), ARRIVE_S, "the Salesforce value decided",
                 interval=0.5)
    for n, value in enumerate((first, second), start=1):
        with p.db() as conn:
            conn.execute("update contacts set title = %s where id = %s", [value, cid])
        p.wait_until(lambda n=n: len(conflicts(p, sf_id)) >= n, ARRIVE_S, f"conflict {n} on the status topic",
                     interval=0.5)
    p.start(["postgres-sink"])
    p.wait_ready()
    p.wait_until(lambda: title(p, cid) == remote, ARRIVE_S, "Salesforce's value in PostgreSQL")
    assert p.sf().Contact.get(sf_id)["Title"] == remote

    rows = p.wait_until(lambda: (r := json.loads(cli(p, "--record", sf_id, "--json"))) and len(r) >= 2 and r,
                        ARRIVE_S, "two audit rows", interval=0.5)
    assert len(rows) == 2, rows
    newest, oldest = rows
    assert [r["detail"].split(" (")[0] for r in (oldest, newest)] == [
        f"Title: local value {first!r} lost to {remote!r}", f"Title: local value {second!r} lost to {remote!r}"]
    assert all("salesforce_wins" in r["detail"] for r in rows)
    assert {(r["object"], r["direction"], r["state"], r["record_key"], r["sfid"], r["local_key"]) for r in rows} == {
        ("Contact", "outbound", "conflict", f"Contact:{sf_id}", sf_id, str(cid))}
    assert newest["time"] > oldest["time"]

    # the compacted view keeps one state of the record per direction: the latest loss only
    latest = [s for s in read_statuses(p.cfg) if s.key == f"Contact:{sf_id}" and s.direction is Direction.OUTBOUND]
    assert [s.state for s in latest] == [SyncState.CONFLICT] and second in (latest[0].last_error or "")
    assert first not in (latest[0].last_error or "")

    # the table as an operator reads it, filtered by object and local key
    text = cli(p, "--object", "Contact", "--record", str(cid))
    assert "audit (2 row(s), newest first)" in text
    assert text.index(second) < text.index(first)  # newest first
    assert text.count("salesforce_wins") == 2 and text.count(remote) == 2
    assert "audit (0 row(s)" in cli(p, "--record", sf_id, "--since", "2999-01-01")


def test_audit_refuses_an_unknown_object_and_a_bad_time(p: Any) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["audit", "--object", "Invoice__c", "--config", str(p.config_path)])
    assert bad.exit_code == 2 and "unknown object 'Invoice__c'" in bad.output
    bad = runner.invoke(app, ["audit", "--since", "yesterday", "--config", str(p.config_path)])
    assert bad.exit_code == 2 and "--since: not an ISO date/time" in bad.output


def test_an_ambiguous_first_sync_match_is_audited_for_each_candidate(p: Any) -> None:
    email = f"dup-{uuid.uuid4().hex[:6]}@example.test"
    p.roles.kill("postgres-sink", signal.SIGTERM)  # the Salesforce record is not copied locally meanwhile
    sf_id = p.sf().Contact.create({"LastName": "amb-sf", "Email": email})["id"]
    with p.db() as conn, conn.transaction():  # rows that predate sfsync: not captured
        conn.execute("select set_config('sfsync.origin', 'sfsync', true)")
        keys = [str(conn.execute("insert into contacts (last_name, email) values (%s, %s) returning id",
                                 [f"amb-local-{n}", email]).fetchone()[0]) for n in range(2)]
    done = subprocess.run([sys.executable, "-m", "sfsync", "backfill", "Contact", "--config", str(p.config_path),
                           "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    p.start(["postgres-sink"])
    p.wait_ready()

    def audited() -> list[dict[str, Any]]:
        rows = [r for r in json.loads(cli(p, "--object", "Contact", "--json"))
                if r["state"] == "ambiguous" and email in (r["detail"] or "")]
        return rows if len(rows) >= 3 else []

    rows = p.wait_until(audited, ARRIVE_S, "three ambiguous audit rows", interval=0.5)
    assert sorted((r["direction"], r["sfid"] or r["local_key"]) for r in rows) == sorted(
        [("inbound", sf_id), ("outbound", keys[0]), ("outbound", keys[1])])
    for r in rows:
        assert all(candidate in r["detail"] for candidate in (sf_id, *keys)), r["detail"]
