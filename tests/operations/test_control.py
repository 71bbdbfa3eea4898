"""Pause and resume per direction, end to end: roles as processes, the real CLI, the emulator, PostgreSQL.

Acceptance (issue 12): pause a direction, make 1,000 changes; once every change has reached the paused
sink's apply topic nothing has reached the target, also after the sink is restarted while paused;
after ``sfsync resume`` every change arrives, the last change of each record wins, in few full batches.
Assertions count what arrived (emulator stats and events, rows, the status topic), never how fast.
``sfsync pause`` returns once the running sink acknowledged the pause (sfsync/operations/acks.py), so the
changes made right after it are never written (before acknowledgements, CI saw 7 of 600 inbound creates land).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.kafka.topics import TopicNames
from sfsync.operations.control import ControlScope, read_control
from sfsync.records import QUEUED_PREFIX, Direction, RecordStatus, SyncState
from sfsync.serde import Serde

ARRIVE_S = 180.0
#: after the paused sink is ready, give a sink that ignored the pause a chance to show it (issue: 10 s)
PAUSE_PROOF_S = 5.0


def cli(p: Any, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(p.config_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def data_calls(p: Any) -> int:
    return sum(n for k, n in p.emulator.control.stats()["api_calls"].items() if "composite/sobjects" in k)


def apply_count(p: Any, topic: str) -> int:
    return len(p.read_topic(topic, 5))


def statuses(p: Any, direction: Direction, queued: bool = False) -> dict[str, RecordStatus]:
    """The latest outcome per record of ``direction`` (``queued``: the latest In Queue state instead; the
    producers write it under its own key when they capture a change)."""
    serde = Serde()
    latest: dict[str, RecordStatus] = {}
    for m in p.read_topic(TopicNames(p.prefix).status, 5):
        if m.value() is None or (m.key() or b"").decode().startswith(QUEUED_PREFIX) is not queued:
            continue
        s = serde.decode(m.value(), RecordStatus)
        if s.direction is direction:
            latest[s.key] = s
    return latest


@pytest.fixture
def pipeline(pipeline_factory: Any) -> Iterator[Any]:
    p = pipeline_factory()
    yield p
    p.stop()


def test_control_state_is_the_latest_record_per_scope(pipeline: Any) -> None:
    out = cli(pipeline, "pause", "outbound", "--reason", "maintenance")
    assert out.startswith("outbound: paused by ")
    cli(pipeline, "pause", "inbound", "--object", "Contact")
    cli(pipeline, "resume", "inbound")  # the direction, not the object paused on its own
    state = read_control(pipeline.cfg)
    assert state.direction_paused(Direction.OUTBOUND)
    assert state.record(ControlScope(Direction.OUTBOUND)).reason == "maintenance"  # type: ignore[union-attr]
    assert not state.direction_paused(Direction.INBOUND)
    assert state.paused_objects(Direction.INBOUND) == {"Contact"}
    assert state.is_paused(Direction.INBOUND, "Contact") and not state.is_paused(Direction.INBOUND, "Account")
    cli(pipeline, "resume", "outbound")
    cli(pipeline, "resume", "inbound", "--object", "Contact")
    state = read_control(pipeline.cfg)
    assert not state.is_paused(Direction.OUTBOUND, "Contact") and not state.is_paused(Direction.INBOUND, "Contact")


def test_unknown_direction_or_object_is_refused(pipeline: Any) -> None:
    bad = CliRunner().invoke(app, ["pause", "sideways", "--config", str(pipeline.config_path)])
    assert bad.exit_code == 2 and "unknown direction 'sideways'" in bad.output
    bad = CliRunner().invoke(app, ["pause", "inbound", "--object", "Invoice__c", "--config",
                                   str(pipeline.config_path)])
    assert bad.exit_code == 2 and "unknown object 'Invoice__c'" in bad.output


def test_outbound_paused_1000_changes_wait_through_a_sink_restart_then_arrive_in_full_batches(
        pipeline: Any) -> None:
    p = pipeline
    names = TopicNames(p.prefix)
    p.start(["salesforce-sink", "processor", "postgres-producer"])
    p.wait_ready()
    # returns once the running sink took the pause (it acknowledges it): the changes made at once wait
    assert "acknowledged by 1 running salesforce sink" in cli(p, "pause", "outbound")
    p.emulator.control.reset_stats()
    with p.db() as conn, conn.transaction():
        ids = [r[0] for r in conn.execute(
            "insert into contacts (first_name, last_name, title) select 'F' || g, 'paused-' || g, 'first' "
            "from generate_series(1, 600) g returning id").fetchall()]
    with p.db() as conn, conn.transaction():
        conn.execute("update contacts set title = 'second' where id = any(%s)", [ids[:400]])
    # every change has been turned into a command for the paused sink: it had them all to write
    p.wait_until(lambda: apply_count(p, names.apply_salesforce) >= 1000, ARRIVE_S, "1,000 commands", interval=1)
    time.sleep(PAUSE_PROOF_S)
    assert data_calls(p) == 0
    assert p.emulator.control.events()["events"] == []

    p.roles.kill("salesforce-sink")  # restarted while paused: the pause is read back before any write
    p.start(["salesforce-sink"])
    p.wait_ready()
    time.sleep(PAUSE_PROOF_S)
    assert data_calls(p) == 0
    assert p.emulator.control.events()["events"] == []

    cli(p, "resume", "outbound")

    def arrived() -> dict[str, Any] | None:
        rows = {r["Local_Id__c"]: r for r in p.sf().query_all(
            "select Local_Id__c, Title from Contact where LastName like 'paused-%'")["records"]}
        return rows if len(rows) == 600 else None

    rows = p.wait_until(arrived, ARRIVE_S, "600 contacts after resume", interval=1)
    assert {k: r["Title"] for k, r in rows.items()} == {
        str(i): ("second" if n < 400 else "first") for n, i in enumerate(ids)}  # the last change won
    assert data_calls(p) <= 6, p.emulator.control.stats()["api_calls"]


def test_inbound_paused_1000_changes_wait_through_a_sink_restart_then_arrive_in_full_batches(
        pipeline: Any) -> None:
    p = pipeline
    names = TopicNames(p.prefix)
    p.start(["postgres-sink", "processor", "salesforce-producer"])
    p.wait_ready()
    assert "acknowledged by 1 running postgres sink" in cli(p, "pause", "inbound")
    sf = p.sf()
    sfids: list[str] = []
    for start in range(0, 600, 200):
        chunk = [{"attributes": {"type": "Contact"}, "FirstName": "F", "LastName": f"paused-{i}", "Title": "first"}
                 for i in range(start, start + 200)]
        results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": chunk})
        sfids += [r["id"] for r in results]
    for start in range(0, 400, 200):
        chunk = [{"attributes": {"type": "Contact"}, "id": sfid, "Title": "second"}
                 for sfid in sfids[start:start + 200]]
        sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": chunk})

    def local_count() -> int:
        with p.db() as conn:
            return int(conn.execute("select count(*) from contacts").fetchone()[0])

    p.wait_until(lambda: apply_count(p, names.apply_local) >= 1000, ARRIVE_S, "1,000 commands", interval=1)
    time.sleep(PAUSE_PROOF_S)
    assert local_count() == 0 and statuses(p, Direction.INBOUND) == {}
    waiting = statuses(p, Direction.INBOUND, queued=True)  # captured, waiting: In Queue, every one of them
    assert {s.sfid for s in waiting.values()} == set(sfids)
    assert {s.state for s in waiting.values()} == {SyncState.IN_QUEUE}

    p.roles.kill("postgres-sink")
    p.start(["postgres-sink"])
    p.wait_ready()
    time.sleep(PAUSE_PROOF_S)
    assert local_count() == 0 and statuses(p, Direction.INBOUND) == {}

    cli(p, "resume", "inbound")

    def arrived() -> dict[str, str] | None:
        with p.db() as conn:
            rows = dict(conn.execute("select sfid, title from contacts").fetchall())
        return rows if len(rows) == 600 else None

    rows = p.wait_until(arrived, ARRIVE_S, "600 contacts after resume", interval=1)
    assert rows == {sfid: ("second" if n < 400 else "first") for n, sfid in enumerate(sfids)}
    done = statuses(p, Direction.INBOUND)
    assert len(done) == 600 and {s.state for s in done.values()} == {SyncState.SUCCESS}
    # one write per batch, every status of a batch carries that batch's time: 1,000 commands, batches of 500
    assert len({s.last_attempt_ts for s in done.values()}) <= 6
