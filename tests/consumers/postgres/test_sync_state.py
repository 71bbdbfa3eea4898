"""Sync state on the record itself (issue 12) and the Salesforce sync-time field (issue 13), end to end:
every role as a process, the emulator, the embedded broker and PostgreSQL.

- a failed outbound write shows ``failed`` and the error in the row's status column, then ``success`` after
  the fix and a DLQ replay; an inbound create shows ``success`` and its sync time;
- the sync-state writes are never captured (no outbound change for them);
- ``sync_metadata.salesforce_field`` receives the write time in the same call (API calls counted by the
  emulator), and its CDC echo never comes back as a local write.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.config import build_config
from sfsync.database.schema import check_mapping, init_schema, read_tables
from sfsync.records import ApplyCommand, ChangeEvent
from sfsync.serde import Serde

ARRIVE_S = 90.0
FIELD = "Last_Sync__c"
COLUMNS = "sync_status, sync_error, synced_at, sync_status_at"


@pytest.fixture(scope="module")
def p(pipeline_factory: Any) -> Iterator[Any]:
    p = pipeline_factory()
    with p.db() as conn:
        conn.execute("alter table contacts add column sync_status text, add column sync_error text, "
                     "add column synced_at timestamptz, add column sync_status_at timestamptz")
    p.raw["objects"]["Contact"]["sync_state"] = {}  # the default column names
    p.raw["objects"]["Contact"]["sync_metadata"] = {"salesforce_field": FIELD}
    p.rewrite_config()
    init_schema(p.cfg, demo=True)  # the sync-state columns are checked: present, times are timestamps
    p.emulator.control.add_field("Contact", FIELD, "datetime")
    p.start(["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"])
    p.wait_ready()
    yield p
    with contextlib.suppress(Exception):  # the session emulator's schema as it was
        p.emulator.control.delete_field("Contact", FIELD)


def cli(p: Any, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(p.config_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def state(p: Any, where: str, value: str) -> dict[str, Any] | None:
    with p.db() as conn:
        cur = conn.execute(f"select id, sfid, {COLUMNS} from contacts where {where} = %s", [value])
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description or ()], row, strict=True)) if row else None


def insert(p: Any, last_name: str) -> str:
    with p.db() as conn:
        return str(conn.execute("insert into contacts (first_name, last_name) values ('S', %s) returning id",
                                [last_name]).fetchone()[0])


def outbound_events(p: Any, local_key: str) -> list[ChangeEvent]:
    serde = Serde.from_config(p.cfg.kafka)
    found = [serde.decode(m.value(), ChangeEvent) for m in p.read_topic(f"{p.prefix}.changes.outbound")]
    return [e for e in found if e.object in ("Contact", "contacts") and e.local_key == local_key]


def test_sync_columns_must_exist_in_the_table(p: Any) -> None:
    raw = json.loads(json.dumps(p.raw))
    raw["objects"]["Contact"]["sync_state"] = {"error_column": None, "status_at_column": "missing_at"}
    with p.db() as conn:
        tables = read_tables(conn, p.schema, ["contacts", "accounts", "cases"])
    assert check_mapping(build_config(raw), tables) == [
        f"{p.schema}.contacts.missing_at: column does not exist (objects.Contact.sync_state.status_at_column)"]


def test_a_failed_write_shows_on_the_row_then_success_after_the_fix(p: Any) -> None:
    control = p.emulator.control
    control.add_validation_rule(object="Contact", field="LastName", equals="reject-me",
                                message="Last name is not allowed")
    try:
        key = insert(p, "reject-me")
        failed = p.wait_until(lambda: (r := state(p, "id", key)) and r["sync_status"] == "failed" and r,
                              ARRIVE_S, "sync_status failed on the row", interval=0.3)
        assert failed["sync_error"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION: Last name is not allowed (fields: LastName)"
        assert failed["synced_at"] is None and failed["sync_status_at"] is not None
    finally:
        control.clear_validation_rules()  # the cause fixed
    letter = json.loads(cli(p, "dlq", "list", "--sink", "salesforce", "--record", key, "--json"))
    out = json.loads(cli(p, "dlq", "replay", letter[0]["id"], "--wait", "60", "--json"))
    assert out[0]["status"] == "success"
    done = p.wait_until(lambda: (r := state(p, "id", key)) and r["sync_status"] == "success" and r,
                        ARRIVE_S, "sync_status success after the replay", interval=0.3)
    assert done["sync_error"] is None and done["synced_at"] is not None
    assert done["sync_status_at"] > failed["sync_status_at"]
    # the sync-state writes were never captured: the insert is the record's only outbound change
    assert [e.operation.value for e in outbound_events(p, key)] == ["create"]


def test_an_inbound_create_sets_synced_at_and_captures_nothing(p: Any) -> None:
    before = datetime.now(UTC)
    sfid = p.sf().Contact.create({"LastName": "from-salesforce"})["id"]
    row = p.wait_until(lambda: (r := state(p, "sfid", sfid)) and r["sync_status"] == "success" and r,
                       ARRIVE_S, "the inbound row with sync_status success", interval=0.3)
    assert row["synced_at"] >= before.replace(microsecond=0) and row["sync_error"] is None
    assert outbound_events(p, str(row["id"])) == []


def test_the_salesforce_sync_time_field_rides_on_the_write(p: Any) -> None:
    control = p.emulator.control
    control.reset_stats()
    before = datetime.now(UTC)
    key = insert(p, "stamped")
    p.wait_until(lambda: (r := state(p, "id", key)) and r["sync_status"] == "success" and r["sfid"],
                 ARRIVE_S, "the outbound write", interval=0.3)
    record = p.sf().query(f"select Id, {FIELD} from Contact where LastName = 'stamped'")["records"][0]
    stamped = datetime.fromisoformat(record[FIELD].replace("+0000", "+00:00"))
    assert stamped >= before.replace(microsecond=0)
    writes = {k: n for k, n in control.stats()["api_calls"].items()
              if "sobjects" in k and not k.startswith("GET")}
    assert writes == {"PATCH composite/sobjects/{type}/{field}": 1}, writes  # the create itself, nothing after it

    # its CDC echo (it names the field) is read, and nothing of it is written locally
    serde = Serde.from_config(p.cfg.kafka)

    def echo() -> bool:
        return any(FIELD in e.changed_fields and e.sfid == record["Id"]
                   for e in (serde.decode(m.value(), ChangeEvent) for m in p.read_topic(f"{p.prefix}.changes.inbound")))

    p.wait_until(echo, ARRIVE_S, "the CDC echo of the write", interval=0.5)
    marker = p.sf().Contact.create({"LastName": "after-the-echo"})["id"]
    p.wait_until(lambda: state(p, "sfid", marker), ARRIVE_S, "a later inbound change", interval=0.3)
    applied = [serde.decode(m.value(), ApplyCommand) for m in p.read_topic(f"{p.prefix}.apply.local")]
    assert [c.values for c in applied if c.sfid == record["Id"] and c.values] == []


def test_an_older_status_never_replaces_a_newer_one(p: Any) -> None:
    import psycopg

    from consumers.postgres.syncstate import collapse, targets, write_rows
    from sfsync.records import Direction, RecordStatus, SyncState

    key = insert(p, "ordered")
    p.wait_until(lambda: (r := state(p, "id", key)) and r["sync_status"] == "success" and r, ARRIVE_S,
                 "the record synced", interval=0.3)
    by_object = targets(p.cfg)

    def status(state_: SyncState, minute: int, error: str | None = None) -> RecordStatus:
        at = datetime(2999, 1, 1, 0, minute, tzinfo=UTC)  # after anything the running pipeline writes
        return RecordStatus(key=f"Contact:local:{key}", object="Contact", direction=Direction.OUTBOUND,
                            state=state_, local_key=key, last_error=error, last_attempt_ts=at, updated_ts=at)

    newer, older = status(SyncState.FAILED, 2, "LOCKED:\n  row   locked " + "x" * 2000), status(SyncState.SUCCESS, 1)
    rows = collapse([newer, older], by_object)  # one batch: the newest per row
    assert [r.status for r in rows] == ["failed"] and rows[0].error and len(rows[0].error) == 1000
    assert rows[0].error.startswith("LOCKED: row locked xx") and rows[0].error.endswith("…")
    with psycopg.connect(p.cfg.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        assert write_rows(conn, by_object, rows) == 1
        assert write_rows(conn, by_object, rows) == 0  # again: nothing changes
        assert write_rows(conn, by_object, collapse([older], by_object)) == 0  # older: refused
        assert write_rows(conn, by_object, collapse([status(SyncState.IN_QUEUE, 3)], by_object)) == 1
    row = state(p, "id", key)
    assert row is not None and row["sync_status"] == "in_queue" and row["sync_error"] is None
    assert row["sync_status_at"] == datetime(2999, 1, 1, 0, 3, tzinfo=UTC)
    assert row["synced_at"] < datetime(2999, 1, 1, tzinfo=UTC)  # only a success moves the sync time
