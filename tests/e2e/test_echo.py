"""Both directions at once: no ping-pong between the PostgreSQL sink and the outbound capture."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sfsync.kafka.topics import TopicNames

ALL_ROLES = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"]
TRICKLE_S = 5.0



@pytest.fixture(scope="module")
def both(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.start(ALL_ROLES)
    p.wait_ready()
    return p


def test_inbound_sink_writes_make_no_outbound_event(both: Any) -> None:
    names = TopicNames(both.prefix)
    before = len(both.read_topic(names.changes_outbound, 3))
    acc = both.sf().Account.create({"Name": "from-salesforce", "Phone": "5"})["id"]

    def local() -> bool:
        with both.db() as conn:
            return conn.execute("select count(*) from accounts where sfid = %s", [acc]).fetchone()[0] == 1

    both.wait_until(local, TRICKLE_S, "the inbound write")
    time.sleep(2)
    assert len(both.read_topic(names.changes_outbound, 3)) == before
    with both.db() as conn:
        assert conn.execute(f"select count(*) from {both.cfg.postgres.outbox_table}").fetchone()[0] == 0
    # and a local change still flows out, without ping-pong
    with both.db() as conn:
        conn.execute("update accounts set phone = '6' where sfid = %s", [acc])
    both.wait_until(lambda: both.sf().Account.get(acc)["Phone"] == "6", TRICKLE_S, "outbound after inbound")
    time.sleep(2)
    with both.db() as conn:
        assert conn.execute("select phone from accounts where sfid = %s", [acc]).fetchone()[0] == "6"
