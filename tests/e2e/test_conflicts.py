"""Both sides change one field at once: each policy's winner ends on both sides, and stays.

Through the real pipeline (every role a process): a linked contact's Title is set in PostgreSQL and through
the REST API a few milliseconds apart, in either order — concurrent edits, since neither side has seen the
other's value yet. Per policy (``objects.Contact.conflict_policy``) the winner is known in advance:

==================  =========================  =========================
policy              PostgreSQL first, then SF  SF first, then PostgreSQL
==================  =========================  =========================
last_writer_wins    Salesforce's (later)       PostgreSQL's (later)
salesforce_wins     Salesforce's               Salesforce's
local_wins          PostgreSQL's               PostgreSQL's
==================  =========================  =========================

and an edit made after the record converged is not concurrent: it wins under every policy.

Failed before the one-state processor (issue 11): each side ended with the other's value, for good.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any

import pytest

ALL_ROLES = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 90.0  # how long a value may take to arrive at all (a hang guard; speed is measured in bench/)


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.start(ALL_ROLES)
    p.wait_ready()
    return p


@pytest.fixture(scope="module", params=["last_writer_wins", "salesforce_wins", "local_wins"])
def policy_pipeline(request: pytest.FixtureRequest, pipeline: Any) -> Any:
    """The pipeline with Contact's policy set; only the processor decides conflicts, so only it restarts."""
    p = pipeline
    p.raw["objects"]["Contact"]["conflict_policy"] = request.param
    p.rewrite_config()
    p.roles.kill("processor", signal.SIGTERM)
    p.roles.start("processor")
    p.wait_ready()
    p.policy = request.param
    return p


def linked_contact(p: Any) -> tuple[int, str]:
    """A contact created locally and linked; its create's echo has come back (so nothing is in flight)."""
    tag = uuid.uuid4().hex[:8]
    with p.db() as conn:
        cid = conn.execute("insert into contacts (first_name, last_name, title) values ('Ada', %s, 'start') "
                           "returning id", [f"L-{tag}"]).fetchone()[0]

    def sfid() -> str | None:
        with p.db() as conn:
            return conn.execute("select sfid from contacts where id = %s", [cid]).fetchone()[0]

    sf_id = p.wait_until(sfid, ARRIVE_S, "the contact linked")
    # a local change that arrives in Salesforce proves the create (and its echo) went through the pipeline
    settle(p, cid, sf_id, "Ada-2")
    return cid, sf_id


def settle(p: Any, cid: int, sf_id: str, first_name: str) -> None:
    """Change FirstName locally and wait for it in Salesforce: every earlier change of the record has been
    processed by then (one partition, in order)."""
    with p.db() as conn:
        conn.execute("update contacts set first_name = %s where id = %s", [first_name, cid])
    p.wait_until(lambda: p.sf().Contact.get(sf_id)["FirstName"] == first_name, ARRIVE_S, f"FirstName {first_name}")


def titles(p: Any, cid: int, sf_id: str) -> tuple[str, str]:
    with p.db() as conn:
        local = conn.execute("select title from contacts where id = %s", [cid]).fetchone()[0]
    return local, p.sf().Contact.get(sf_id)["Title"]


def both_hold(p: Any, cid: int, sf_id: str, value: str) -> None:
    p.wait_until(lambda: titles(p, cid, sf_id) == (value, value), ARRIVE_S, f"Title {value!r} on both sides")
    # stays: a later change of another field passes through the whole pipeline, Title unchanged on both
    settle(p, cid, sf_id, f"Ada-{uuid.uuid4().hex[:6]}")
    assert titles(p, cid, sf_id) == (value, value)


WINNER = {  # (policy, who wrote first) -> whose value wins
    ("last_writer_wins", "local"): "remote", ("last_writer_wins", "remote"): "local",
    ("salesforce_wins", "local"): "remote", ("salesforce_wins", "remote"): "remote",
    ("local_wins", "local"): "local", ("local_wins", "remote"): "local",
}


@pytest.mark.parametrize("first", ["local", "remote"])
def test_concurrent_edits_of_one_field_end_on_the_policys_winner(policy_pipeline: Any, first: str) -> None:
    p = policy_pipeline
    cid, sf_id = linked_contact(p)
    values = {"local": f"LOCAL-{uuid.uuid4().hex[:6]}", "remote": f"REMOTE-{uuid.uuid4().hex[:6]}"}

    def local() -> None:
        with p.db() as conn:
            conn.execute("update contacts set title = %s where id = %s", [values["local"], cid])

    def remote() -> None:
        p.sf().Contact.update(sf_id, {"Title": values["remote"]})

    for write in ([local, remote] if first == "local" else [remote, local]):
        write()
    both_hold(p, cid, sf_id, values[WINNER[(p.policy, first)]])


def test_an_edit_after_convergence_wins_under_every_policy(policy_pipeline: Any) -> None:
    p = policy_pipeline
    cid, sf_id = linked_contact(p)
    p.sf().Contact.update(sf_id, {"Title": "from-salesforce"})
    p.wait_until(lambda: titles(p, cid, sf_id) == ("from-salesforce", "from-salesforce"), ARRIVE_S,
                 "the Salesforce edit on both sides")
    with p.db() as conn:
        conn.execute("update contacts set title = 'from-postgresql' where id = %s", [cid])
    both_hold(p, cid, sf_id, "from-postgresql")
    p.sf().Contact.update(sf_id, {"Title": "from-salesforce-again"})
    both_hold(p, cid, sf_id, "from-salesforce-again")


def test_rapid_local_updates_never_show_an_older_value_and_salesforce_ends_on_the_last(
        policy_pipeline: Any) -> None:
    """Three local updates in a row while the row is read every 20 ms: once the last is written the row never
    shows an older value again (no echo or repair brings one back), and Salesforce ends on the last."""
    p = policy_pipeline
    cid, sf_id = linked_contact(p)
    last = "rapid-3"
    seen: list[str] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            with p.db() as conn:
                seen.append(conn.execute("select title from contacts where id = %s", [cid]).fetchone()[0])
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for value in ("rapid-1", "rapid-2", last):
            with p.db() as conn:
                conn.execute("update contacts set title = %s where id = %s", [value, cid])
        p.wait_until(lambda: p.sf().Contact.get(sf_id)["Title"] == last, ARRIVE_S, "the last value in Salesforce")
        settle(p, cid, sf_id, f"Ada-{uuid.uuid4().hex[:6]}")  # every echo of the three has been processed
    finally:
        done.set()
        poller.join(30)
    after = seen[seen.index(last):] if last in seen else []
    assert after and set(after) == {last}, seen
    assert titles(p, cid, sf_id) == (last, last)


def test_salesforce_automation_during_sfsyncs_write_reaches_postgresql(policy_pipeline: Any) -> None:
    """A flow changes Title as part of sfsync's own write: the CDC event carries sfsync's origin, but its
    value is not what sfsync wrote, so it is Salesforce's change and reaches PostgreSQL (echo by value).

    Failed before echo by value: the event was dropped by its origin tag and PostgreSQL kept the value
    Salesforce had replaced."""
    p = policy_pipeline
    cid, sf_id = linked_contact(p)
    flow = f"reviewed-by-a-flow-{uuid.uuid4().hex[:6]}"
    p.emulator.control.add_field_update(object="Contact", when_field="Title", regex="^needs-review",
                                        set={"Title": flow})
    try:
        with p.db() as conn:
            conn.execute("update contacts set title = 'needs-review' where id = %s", [cid])
        both_hold(p, cid, sf_id, flow)
    finally:
        p.emulator.control.clear_field_updates()
