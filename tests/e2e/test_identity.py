"""One record, one state, across the moment a local record gets its Salesforce id (processors/identity.py).

Through the real pipeline (every role a process). A contact inserted in PostgreSQL is decided under
``Contact:local:<pk>`` until its sfid is written back; its later changes are keyed by the sfid and meet its
state there only because the processor moved it: across the ``links`` topic (a pull keyed by the local key, the
handover keyed by the sfid) when another worker holds the local key, in place when this one does.

Failed before the move (each change under the sfid started from an empty state): a value Salesforce automation
set during sfsync's create was taken for sfsync's own echo and never reached PostgreSQL.

The pipeline runs one processor worker with ``processor.identity_wait_s`` at 1 ms: a change that waited for a
handover at all would be decided without the state and the first test would fail. One worker holds every
partition, so it moves the state in place, nothing waits. Failed before the move in place: under a backlog (the
outbound benchmark's 10,000 inserts on a slow machine) every pull and handover queued behind the changes for
longer than the wait (30 s then), and all 10,000 creates were decided without their state.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from processors.entry import Entry, load_entry
from sfsync.kafka.topics import TopicNames
from sfsync.records import Link
from sfsync.serde import Serde

ALL_ROLES = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 90.0  # a hang guard; speed is measured in bench/


@pytest.fixture(scope="module")
def p(pipeline_factory: Any) -> Any:
    p = pipeline_factory({"processor": {"identity_wait_s": 0.001}})
    p.start(ALL_ROLES)
    p.wait_ready()
    return p


def row(p: Any, cid: int, column: str) -> Any:
    with p.db() as conn:
        return conn.execute(f"select {column} from contacts where id = %s", [cid]).fetchone()[0]


def links(p: Any) -> list[tuple[str, Link]]:
    serde = Serde.from_config(p.cfg.kafka)
    topic = TopicNames(p.cfg.kafka.topic_prefix).links
    return [(m.key().decode(), serde.decode(m.value(), Link, topic)) for m in p.read_topic(topic)]


def changelog_entry(p: Any, key: str) -> Entry | None:
    """The latest entry of ``key`` in the processor's Table changelog (the durable copy of its state)."""
    topic = f"{TopicNames(p.cfg.kafka.topic_prefix).processor_group}-records-changelog"
    found = [m.value() for m in p.read_topic(topic) if m.key() == key.encode()]
    return load_entry(found[-1]) if found else None


def settle(p: Any, cid: int, sf_id: str) -> None:
    """A Salesforce edit that reaches the row: every earlier Salesforce change of the record was processed."""
    name = f"Sf-{uuid.uuid4().hex[:6]}"
    p.sf().Contact.update(sf_id, {"FirstName": name})
    p.wait_until(lambda: row(p, cid, "first_name") == name, ARRIVE_S, f"FirstName {name} in PostgreSQL")


def test_automation_during_sfsyncs_create_of_a_local_record_reaches_postgresql(p: Any) -> None:
    flow = f"set-by-a-flow-{uuid.uuid4().hex[:6]}"
    p.emulator.control.add_field_update(object="Contact", when_field="Title", regex="^needs-review",
                                        set={"Title": flow})
    try:
        with p.db() as conn:
            cid = conn.execute("insert into contacts (first_name, last_name, title) values ('Ada', %s, "
                               "'needs-review') returning id", [f"L-{uuid.uuid4().hex[:6]}"]).fetchone()[0]
        sf_id = p.wait_until(lambda: row(p, cid, "sfid"), ARRIVE_S, "the contact linked")
        assert p.sf().Contact.get(sf_id)["Title"] == flow
        p.wait_until(lambda: row(p, cid, "title") == flow, ARRIVE_S, "the flow's Title in PostgreSQL")
        settle(p, cid, sf_id)
        assert row(p, cid, "title") == flow and p.sf().Contact.get(sf_id)["Title"] == flow
    finally:
        p.emulator.control.clear_field_updates()
    # one worker holds both keys' partitions: the state moved in place, nothing went round the links topic
    # (a pull and a handover there would only be read back and ignored), and the changelog holds both ids
    assert not [link for _key, link in links(p) if link.sfid == sf_id]
    moved = changelog_entry(p, f"Contact:{sf_id}")
    assert moved is not None and moved.local_key == str(cid) and moved.record.fields  # the state, not nothing
    named = changelog_entry(p, f"Contact:local:{cid}")
    assert named is not None and named.sfid == sf_id  # a straggler change under the local key carries the sfid


def test_edits_right_after_the_link_meet_the_moved_state_and_converge(p: Any) -> None:
    """Local edits made as soon as the sfid is on the row (keyed by the sfid from then on), and a Salesforce
    edit of another field: each lands, nothing is reverted to the create's values."""
    with p.db() as conn:
        cid = conn.execute("insert into contacts (first_name, last_name, title) values ('Bo', %s, 'v0') "
                           "returning id", [f"L-{uuid.uuid4().hex[:6]}"]).fetchone()[0]
    sf_id = p.wait_until(lambda: row(p, cid, "sfid"), ARRIVE_S, "the contact linked")
    for value in ("v1", "v2", "v3"):
        with p.db() as conn:
            conn.execute("update contacts set title = %s where id = %s", [value, cid])
    p.sf().Contact.update(sf_id, {"Phone": "+49 30 1"})
    p.wait_until(lambda: p.sf().Contact.get(sf_id)["Title"] == "v3", ARRIVE_S, "Title v3 in Salesforce")
    p.wait_until(lambda: row(p, cid, "phone") == "+49 30 1", ARRIVE_S, "Phone in PostgreSQL")
    settle(p, cid, sf_id)
    assert row(p, cid, "title") == "v3" and p.sf().Contact.get(sf_id)["Title"] == "v3"


def test_a_record_created_in_salesforce_never_pulls(p: Any) -> None:
    sf_id = p.sf().Contact.create({"LastName": f"S-{uuid.uuid4().hex[:6]}", "Title": "from-sf"})["id"]
    p.wait_until(lambda: sf_id in p.local_ids("contacts"), ARRIVE_S, "the contact in PostgreSQL")
    with p.db() as conn:
        cid = conn.execute("select id from contacts where sfid = %s", [sf_id]).fetchone()[0]
    with p.db() as conn:
        conn.execute("update contacts set title = 'edited-locally' where id = %s", [cid])
    p.wait_until(lambda: p.sf().Contact.get(sf_id)["Title"] == "edited-locally", ARRIVE_S, "the edit in Salesforce")
    assert not [link for _key, link in links(p) if link.sfid == sf_id]
