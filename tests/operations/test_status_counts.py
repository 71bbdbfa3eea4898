"""Today's per-direction counts of ``sfsync status``: successful, failed and filtered records, the day reset at
midnight in ``operations.time_zone``. Plain data in, plain data out: no servers needed."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sfsync.operations.status import DayCounts, DirectionSummary, day_counts, today_counts
from sfsync.records import Direction, RecordStatus, SyncState

BERLIN = ZoneInfo("Europe/Berlin")  # UTC+1 in March
NOW = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)  # 00:30 on 2 March in Berlin


def status(key: str, state: SyncState, at: datetime | None, direction: Direction = Direction.INBOUND
           ) -> RecordStatus:
    return RecordStatus(key=key, object="Contact", direction=direction, state=state, last_attempt_ts=at,
                        last_error="Contact: its email domain is excluded (objects.Contact.filters.exclude_domains)"
                        if state is SyncState.FILTERED else None)


ROWS = [
    status("Contact:a", SyncState.FILTERED, datetime(2025, 3, 1, 23, 5, tzinfo=UTC)),  # 2 March in Berlin
    status("Contact:b", SyncState.FILTERED, datetime(2025, 3, 1, 22, 55, tzinfo=UTC)),  # 1 March in Berlin
    status("Contact:c", SyncState.SUCCESS, datetime(2025, 3, 1, 23, 10, tzinfo=UTC)),
    status("Contact:d", SyncState.FAILED, datetime(2025, 3, 1, 23, 20, tzinfo=UTC)),
    status("Contact:e", SyncState.CONFLICT, NOW),  # not one of the three counts
    status("Contact:f", SyncState.FILTERED, None),  # never attempted: no day
    status("Contact:local:1", SyncState.FILTERED, NOW, Direction.OUTBOUND),
]


def test_filtered_records_count_beside_successful_and_failed_with_the_same_midnight() -> None:
    assert day_counts(ROWS, Direction.INBOUND, NOW, BERLIN) == DayCounts(success=1, failed=1, filtered=1)
    assert day_counts(ROWS, Direction.INBOUND, NOW, ZoneInfo("UTC")) == DayCounts(success=1, failed=1, filtered=2)
    assert day_counts(ROWS, Direction.OUTBOUND, NOW, BERLIN) == DayCounts(filtered=1)
    assert today_counts(ROWS, Direction.INBOUND, NOW, BERLIN) == (1, 1)  # the (successful, failed) pair, as before


def test_the_json_summary_carries_the_filtered_count_per_direction() -> None:
    summary = DirectionSummary(direction=Direction.OUTBOUND, sink="salesforce", paused=False, paused_by=None,
                               paused_reason=None, paused_since=None, paused_objects=(), last_process_time=NOW,
                               last_status=SyncState.FILTERED, waiting=0, today_success=4, today_failed=1,
                               today_filtered=3, day="2025-03-02", time_zone="Europe/Berlin")
    assert summary.to_json()["today"] == {"day": "2025-03-02", "time_zone": "Europe/Berlin", "success": 4,
                                          "failed": 1, "filtered": 3}
