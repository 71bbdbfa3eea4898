"""Both directions at once: no ping-pong between the PostgreSQL sink and the outbound capture."""

from __future__ import annotations

from typing import Any

import pytest

from sfsync.kafka.topics import TopicNames

ALL_ROLES = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"]
TRICKLE_S = 60.0  # how long to wait for an arrival at all; speed is measured in bench/



@pytest.fixture(scope="module")
def both(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.start(ALL_ROLES)
    p.wait_ready()
    return p


def keys_on(p: Any, topic: str) -> list[str]:
    return [m.key().decode() for m in p.read_topic(topic, 3) if m.key()]


def test_inbound_sink_writes_make_no_outbound_event(both: Any) -> None:
    """No ping-pong, checked by what arrived (no sleeps): a marker sent after each write proves the
    pipeline got past the moment an echo would have shown up."""
    names = TopicNames(both.prefix)
    before = len(keys_on(both, names.changes_outbound))
    acc = both.sf().Account.create({"Name": "from-salesforce", "Phone": "5"})["id"]

    def local() -> bool:
        with both.db() as conn:
            return conn.execute("select count(*) from accounts where sfid = %s", [acc]).fetchone()[0] == 1

    both.wait_until(local, TRICKLE_S, "the inbound write")
    # An echo of the sink's write would be an outbox row older than this marker's: the relay sends in id
    # order and flushes each batch, so once the marker is on the topic an echo would be there too.
    with both.db() as conn:
        marker = conn.execute("insert into accounts (name) values ('marker') returning id").fetchone()[0]
    both.wait_until(lambda: any(k.endswith(f":local:{marker}") for k in keys_on(both, names.changes_outbound)),
                    TRICKLE_S, "the marker on changes.outbound")
    new = keys_on(both, names.changes_outbound)[before:]
    assert new == [f"Account:local:{marker}"], new
    with both.db() as conn:
        assert conn.execute(f"select count(*) from {both.cfg.postgres.outbox_table}").fetchone()[0] == 0
    # and a local change still flows out, without ping-pong: the CDC echo of the sink's write comes
    # before a later user change of the same record (one partition, in order) and makes no local command
    with both.db() as conn:
        conn.execute("update accounts set phone = '6' where sfid = %s", [acc])
    both.wait_until(lambda: both.sf().Account.get(acc)["Phone"] == "6", TRICKLE_S, "outbound after inbound")
    both.sf().Account.update(acc, {"Name": "renamed-in-salesforce"})
    both.wait_until(lambda: local_row(both, acc) == ("renamed-in-salesforce", "6"), TRICKLE_S, "the rename")
    commands = [k for k in keys_on(both, names.apply_local) if k == f"Account:{acc}"]
    assert len(commands) == 2, commands  # the create and the rename; the echo of phone 6 was a no-op


def local_row(p: Any, sfid: str) -> tuple[str, str] | None:
    with p.db() as conn:
        return conn.execute("select name, phone from accounts where sfid = %s", [sfid]).fetchone()
