"""The pure half of the sync-state follower and its config keys (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.postgres.syncstate import StateTarget, collapse, trim_error
from sfsync.config import ConfigError, build_config
from sfsync.config.mapping import SyncStateColumns
from sfsync.devstack.stack import demo_config
from sfsync.records import Direction, RecordStatus, SyncState

TARGETS = {"Contact": StateTarget("public", "contacts", "id", "sfid", SyncStateColumns(error_max_length=20))}


def status(state: SyncState, minute: int, *, key: str | None = "7", sfid: str | None = None,
           obj: str = "Contact", direction: Direction = Direction.OUTBOUND, error: str | None = None) -> RecordStatus:
    at = datetime(2026, 12, 3, 7, minute, tzinfo=UTC)
    return RecordStatus(key=f"{obj}:local:{key}", object=obj, direction=direction, state=state, sfid=sfid,
                        local_key=key, last_error=error, last_attempt_ts=at, updated_ts=at)


def test_a_batch_keeps_the_newest_state_per_row_whatever_its_direction() -> None:
    rows = collapse([
        status(SyncState.SUCCESS, 3, key="7"),
        status(SyncState.FAILED, 5, key="7", direction=Direction.INBOUND, error="boom"),
        status(SyncState.SUCCESS, 4, key="7"),  # older than the failure: dropped
        status(SyncState.SUCCESS, 1, key=None, sfid="003000000000001AAA", direction=Direction.INBOUND),
        status(SyncState.SUCCESS, 1, key=None, sfid=None),  # names no row
        status(SyncState.SUCCESS, 1, obj="Case"),  # no sync_state configured
    ], TARGETS)
    assert [(r.local_key, r.sfid, r.status, r.error, r.at.minute) for r in rows] == [
        ("7", None, "failed", "boom", 5), (None, "003000000000001AAA", "success", None, 1)]
    assert rows[0].synced_at is None and rows[1].synced_at == datetime(2026, 12, 3, 7, 1, tzinfo=UTC)


def test_errors_are_one_line_and_cut_to_the_limit() -> None:
    assert trim_error("  LOCKED:\n\tthe row  is locked ", 100) == "LOCKED: the row is locked"
    assert trim_error("x" * 30, 20) == "x" * 19 + "…"
    assert trim_error(" \n", 20) is None and trim_error(None, 20) is None
    success = collapse([status(SyncState.SUCCESS, 1, error="stale")], TARGETS)
    assert success[0].error is None  # a success clears the error


@pytest.mark.parametrize(("entry", "problem"), [
    ({"sync_state": {"status_column": "email"}},
     "objects.Contact.sync_state.status_column: column 'email' is mapped (or a key); sync-state columns are "
     "written by sfsync only and never synced"),
    ({"sync_state": {"synced_at_column": "sync_status"}},
     "objects.Contact.sync_state.synced_at_column: column 'sync_status' is also sync_state.status_column"),
    ({"sync_state": {"error_column": "id"}},
     "objects.Contact.sync_state.error_column: column 'id' is mapped (or a key); sync-state columns are "
     "written by sfsync only and never synced"),
    ({"sync_state": {"colour": "red"}}, "objects.Contact.sync_state.colour: unknown key"),
    ({"sync_metadata": {"salesforce_field": "LastName"}},
     "objects.Contact.sync_metadata.salesforce_field: field 'LastName' is mapped (or a key); the sync time "
     "field is written by sfsync only and never synced"),
    ({"sync_metadata": {"salesforce_field": "Local_Id__c"}},
     "objects.Contact.sync_metadata.salesforce_field: field 'Local_Id__c' is mapped (or a key); the sync time "
     "field is written by sfsync only and never synced"),
])
def test_config_refuses_sync_fields_that_are_mapped(entry: dict[str, Any], problem: str) -> None:
    raw = demo_config()
    raw["objects"]["Contact"].update(entry)
    with pytest.raises(ConfigError) as e:
        build_config(raw)
    assert [str(p) for p in e.value.problems] == [problem]
