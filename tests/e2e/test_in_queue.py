"""In Queue end to end (issue 12): a captured change puts its record in the In Queue state at once, and the
sink's outcome follows it, newer (roles as processes, the raw status topic read).

The direction is paused (``sfsync pause``) before its roles start, so its sink writes nothing, whatever the
timing: the captured changes' records hold ``in_queue`` under ``queued:<direction>:<record key>`` and have no
outcome yet. After ``sfsync resume`` each record's outcome (``<direction>:<record key>``) is Success, with an
``updated_ts`` newer than its In Queue state's (which is how ``sfsync queue`` merges the two). An echo of
sfsync's own Salesforce write gets no In Queue state.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.kafka.compacted import read_compacted
from sfsync.kafka.topics import TopicNames
from sfsync.records import Direction, RecordStatus, SyncState, queued_status_key, status_key
from sfsync.serde import Serde

ARRIVE_S = 120.0
SFSYNC_HEADERS = {"Sforce-Call-Options": "client=sfsync"}


def cli(p: Any, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(p.config_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def statuses(p: Any) -> dict[str, RecordStatus | None]:
    """The status topic's latest value per key, read raw (tombstones remove their key)."""
    topic = TopicNames(p.prefix).status
    serde = Serde.from_config(p.cfg.kafka)
    return read_compacted(p.cfg.kafka, topic, key=bytes.decode, decode=lambda v: serde.decode(v, RecordStatus, topic),
                          timeout=30, missing_ok=True)


def in_queue(p: Any, direction: Direction, keys: list[str]) -> dict[str, RecordStatus] | None:
    """Every record's In Queue state, once all are there."""
    found = statuses(p)
    queued = {k: found.get(queued_status_key(direction, k)) for k in keys}
    return None if any(s is None for s in queued.values()) else queued  # type: ignore[return-value]


def succeeded_after(p: Any, direction: Direction, queued: dict[str, RecordStatus]) -> dict[str, datetime] | None:
    """Every record's Success outcome time, once each is there and newer than its In Queue state."""
    found = statuses(p)
    out: dict[str, datetime] = {}
    for key, waiting in queued.items():
        outcome = found.get(status_key(direction, key))
        if outcome is None or outcome.state is not SyncState.SUCCESS or outcome.updated_ts <= waiting.updated_ts:
            return None
        out[key] = outcome.updated_ts
    return out


def check_in_queue(queued: dict[str, RecordStatus], direction: Direction, obj: str) -> None:
    for key, status in queued.items():
        assert status.state is SyncState.IN_QUEUE and status.direction is direction, status
        assert status.key == key and status.object == obj and status.last_attempt_ts is None
        assert status.failure_count == 0 and status.last_error is None


def test_outbound_changes_are_in_queue_while_paused_then_succeed(pipeline_factory: Any) -> None:
    p = pipeline_factory()
    cli(p, "pause", "outbound", "--reason", "in-queue test")
    p.start(["salesforce-sink", "processor", "postgres-producer"])
    try:
        p.wait_ready()
        with p.db() as conn, conn.transaction():
            ids = [r[0] for r in conn.execute(
                "insert into contacts (first_name, last_name) select 'Q', 'queued-' || g "
                "from generate_series(1, 5) g returning id").fetchall()]
        with p.db() as conn:
            conn.execute("update contacts set title = 'changed' where id = %s", [ids[0]])
        keys = [f"Contact:local:{i}" for i in ids]
        queued = p.wait_until(lambda: in_queue(p, Direction.OUTBOUND, keys), ARRIVE_S, "5 records in queue",
                              interval=0.5)
        check_in_queue(queued, Direction.OUTBOUND, "Contact")
        assert {s.local_key for s in queued.values()} == {str(i) for i in ids}
        found = statuses(p)
        assert [k for k in keys if status_key(Direction.OUTBOUND, k) in found] == []  # paused: no outcome yet
        # what an operator sees: `sfsync queue --state in_queue` lists every waiting record, by its local key
        text = cli(p, "queue", "--state", "in_queue", "--direction", "outbound")
        assert "sync queue (5 row(s))" in text and text.count("In Queue") == 5, text
        for i in ids:
            assert f"outbound:Contact:local:{i}" in text, text
        cli(p, "resume", "outbound")
        p.wait_until(lambda: succeeded_after(p, Direction.OUTBOUND, queued), ARRIVE_S,
                     "Success after the In Queue state, for every record", interval=0.5)
        rows = {r["queue_id"]: r for r in json.loads(cli(p, "queue", "--direction", "outbound", "--json"))}
        assert {rows[f"outbound:{k}"]["sync_status"] for k in keys} == {"success"}
        assert json.loads(cli(p, "queue", "--state", "in_queue", "--direction", "outbound", "--json")) == []
        names = {r["LastName"] for r in p.sf().query_all("select LastName from Contact")["records"]}
        assert {f"queued-{g}" for g in range(1, 6)} <= names
    finally:
        p.stop()


def test_inbound_changes_are_in_queue_while_paused_then_succeed_and_an_echo_is_not(pipeline_factory: Any) -> None:
    p = pipeline_factory()
    cli(p, "pause", "inbound", "--reason", "in-queue test")
    p.start(["postgres-sink", "processor", "salesforce-producer"])
    try:
        p.wait_ready()
        sf = p.sf()
        # first on the channel: the records after it being in queue means the producer has read it
        echo = sf.Account.create({"Name": "written by sfsync"}, headers=SFSYNC_HEADERS)["id"]
        ids = [sf.Account.create({"Name": f"queued-{g}"})["id"] for g in range(1, 4)]
        sf.Account.update(ids[0], {"Name": "queued-1 changed"})
        keys = [f"Account:{i}" for i in ids]
        queued = p.wait_until(lambda: in_queue(p, Direction.INBOUND, keys), ARRIVE_S, "3 records in queue",
                              interval=0.5)
        check_in_queue(queued, Direction.INBOUND, "Account")
        assert {s.sfid for s in queued.values()} == set(ids)
        found = statuses(p)
        assert queued_status_key(Direction.INBOUND, f"Account:{echo}") not in found  # an echo is never queued
        assert [k for k in keys if status_key(Direction.INBOUND, k) in found] == []  # paused: no outcome yet
        cli(p, "resume", "inbound")
        p.wait_until(lambda: succeeded_after(p, Direction.INBOUND, queued), ARRIVE_S,
                     "Success after the In Queue state, for every record", interval=0.5)
        with p.db() as conn:
            names = {r[0] for r in conn.execute("select name from accounts")}
        assert {"queued-1 changed", "queued-2", "queued-3"} <= names
    finally:
        p.stop()
