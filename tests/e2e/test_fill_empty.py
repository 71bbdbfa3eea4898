"""``conflict_policy: fill_empty`` end to end: Salesforce is the master, local values only fill its gaps.

Through the real pipeline (every role a process), Contact under ``fill_empty``:

- both sides set Title a few milliseconds apart (either order): Salesforce's value ends on both sides;
- a later local edit of a field Salesforce holds a value for loses, however late it comes: the row is set back
  to Salesforce's value (the loss is the record's Conflict status);
- a local value into a field that is empty in Salesforce reaches Salesforce; once there, it is Salesforce's;
- a Salesforce edit always wins and reaches PostgreSQL;
- a value Salesforce automation sets during sfsync's own write reaches PostgreSQL.

The other three policies' scenarios are tests/e2e/test_conflicts.py (this policy's winners differ for plain
edits, so it has its own pipeline).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

ALL_ROLES = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 90.0  # a hang guard; speed is measured in bench/


@pytest.fixture(scope="module")
def p(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.raw["objects"]["Contact"]["conflict_policy"] = "fill_empty"
    p.rewrite_config()
    p.start(ALL_ROLES)
    p.wait_ready()
    return p


def row(p: Any, cid: int, column: str) -> Any:
    with p.db() as conn:
        return conn.execute(f"select {column} from contacts where id = %s", [cid]).fetchone()[0]


def remote(p: Any, sf_id: str, field: str) -> Any:
    return p.sf().Contact.get(sf_id)[field]


def both(p: Any, cid: int, sf_id: str, column: str, field: str) -> tuple[Any, Any]:
    return row(p, cid, column), remote(p, sf_id, field)


def settle(p: Any, cid: int, sf_id: str) -> None:
    """A Salesforce edit of FirstName that reaches the row: every earlier Salesforce change of the record
    (the create's echo among them) was processed by then (one partition, in order)."""
    name = f"Sf-{uuid.uuid4().hex[:6]}"
    p.sf().Contact.update(sf_id, {"FirstName": name})
    p.wait_until(lambda: row(p, cid, "first_name") == name, ARRIVE_S, f"FirstName {name} in PostgreSQL")


def linked_contact(p: Any) -> tuple[int, str]:
    """A contact created locally with Title set and Phone empty, linked, its create's echo processed."""
    tag = uuid.uuid4().hex[:8]
    with p.db() as conn:
        cid = conn.execute("insert into contacts (first_name, last_name, title) values ('Ada', %s, 'start') "
                           "returning id", [f"L-{tag}"]).fetchone()[0]
    sf_id = p.wait_until(lambda: row(p, cid, "sfid"), ARRIVE_S, "the contact linked")
    # the create filled every field of the new Salesforce record
    assert remote(p, sf_id, "Title") == "start" and remote(p, sf_id, "LastName") == f"L-{tag}"
    settle(p, cid, sf_id)
    return cid, sf_id


def hold(p: Any, cid: int, sf_id: str, column: str, field: str, value: Any) -> None:
    p.wait_until(lambda: both(p, cid, sf_id, column, field) == (value, value), ARRIVE_S,
                 f"{field} {value!r} on both sides")
    settle(p, cid, sf_id)  # and stays
    assert both(p, cid, sf_id, column, field) == (value, value)


@pytest.mark.parametrize("first", ["local", "remote"])
def test_concurrent_edits_end_on_salesforces_value(p: Any, first: str) -> None:
    cid, sf_id = linked_contact(p)
    tag = uuid.uuid4().hex[:6]
    local_value, remote_value = f"LOCAL-{tag}", f"REMOTE-{tag}"

    def write_local() -> None:
        with p.db() as conn:
            conn.execute("update contacts set title = %s where id = %s", [local_value, cid])

    def write_remote() -> None:
        p.sf().Contact.update(sf_id, {"Title": remote_value})

    order = [write_local, write_remote] if first == "local" else [write_remote, write_local]
    second = threading.Thread(target=lambda: (time.sleep(0.005), order[1]()))
    second.start()
    order[0]()
    second.join()
    hold(p, cid, sf_id, "title", "Title", remote_value)


def test_a_late_local_edit_of_a_field_salesforce_holds_is_set_back(p: Any) -> None:
    cid, sf_id = linked_contact(p)
    with p.db() as conn:
        conn.execute("update contacts set title = 'local-edit' where id = %s", [cid])
    hold(p, cid, sf_id, "title", "Title", "start")


def test_a_local_value_fills_a_field_empty_in_salesforce_and_then_belongs_to_it(p: Any) -> None:
    cid, sf_id = linked_contact(p)
    assert both(p, cid, sf_id, "phone", "Phone") == (None, None)
    with p.db() as conn:
        conn.execute("update contacts set phone = '+49 30 1234' where id = %s", [cid])
    hold(p, cid, sf_id, "phone", "Phone", "+49 30 1234")
    # now Salesforce holds a value: a second local edit loses, a Salesforce edit wins
    with p.db() as conn:
        conn.execute("update contacts set phone = '+49 30 9999' where id = %s", [cid])
    hold(p, cid, sf_id, "phone", "Phone", "+49 30 1234")
    p.sf().Contact.update(sf_id, {"Phone": "+1 555 0100"})
    hold(p, cid, sf_id, "phone", "Phone", "+1 555 0100")


def test_salesforce_automation_during_sfsyncs_write_reaches_postgresql(p: Any) -> None:
    """Phone is empty in Salesforce, so the local value is written; a flow rewrites it as part of that write."""
    cid, sf_id = linked_contact(p)
    flow = f"reviewed-by-a-flow-{uuid.uuid4().hex[:6]}"
    p.emulator.control.add_field_update(object="Contact", when_field="Phone", regex="^needs-review",
                                        set={"Phone": flow})
    try:
        with p.db() as conn:
            conn.execute("update contacts set phone = 'needs-review' where id = %s", [cid])
        hold(p, cid, sf_id, "phone", "Phone", flow)
    finally:
        p.emulator.control.clear_field_updates()
