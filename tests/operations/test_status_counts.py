"""Today's per-direction counts of ``sfsync status``: successful, failed and filtered records, the day reset at
midnight in ``operations.time_zone``. Plain data in, plain data out: no servers needed."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sfsync.operations.status import DayCounts, DirectionSummary, current, day_counts, queue, today_counts
from sfsync.records import Direction, RecordStatus, SyncState, queued_status_key, status_key

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


def test_superseded_counts_as_successful() -> None:
    rows = [status("Contact:s", SyncState.SUPERSEDED, datetime(2025, 3, 1, 23, 10, tzinfo=UTC)),
            status("Contact:t", SyncState.SUCCESS, datetime(2025, 3, 1, 23, 11, tzinfo=UTC))]
    assert day_counts(rows, Direction.INBOUND, NOW, BERLIN) == DayCounts(success=2)


def _at(minute: int) -> datetime:
    return datetime(2025, 3, 1, 22, minute, tzinfo=UTC)


def test_in_queue_is_current_while_newer_than_the_outcome() -> None:
    """The In Queue state (its own key) and the outcome merge into one status per record and direction."""
    def st(key: str, state: SyncState, updated: int, direction: Direction = Direction.INBOUND) -> RecordStatus:
        return RecordStatus(key=key, object="Contact", direction=direction, state=state, updated_ts=_at(updated),
                            last_attempt_ts=None if state is SyncState.IN_QUEUE else _at(updated))

    latest = {
        # captured after its last outcome: waiting
        status_key(Direction.INBOUND, "Contact:a"): st("Contact:a", SyncState.SUCCESS, 1),
        queued_status_key(Direction.INBOUND, "Contact:a"): st("Contact:a", SyncState.IN_QUEUE, 2),
        # the outcome came after the capture: done
        status_key(Direction.INBOUND, "Contact:b"): st("Contact:b", SyncState.FAILED, 4),
        queued_status_key(Direction.INBOUND, "Contact:b"): st("Contact:b", SyncState.IN_QUEUE, 3),
        # captured, no outcome yet
        queued_status_key(Direction.OUTBOUND, "Contact:local:7"): st("Contact:local:7", SyncState.IN_QUEUE, 5,
                                                                     Direction.OUTBOUND),
        # the same record's other direction is its own status
        status_key(Direction.OUTBOUND, "Contact:a"): st("Contact:a", SyncState.SUCCESS, 9, Direction.OUTBOUND),
    }
    merged = {(s.direction, s.key): s.state for s in current(latest)}
    assert merged == {(Direction.INBOUND, "Contact:a"): SyncState.IN_QUEUE,
                      (Direction.INBOUND, "Contact:b"): SyncState.FAILED,
                      (Direction.OUTBOUND, "Contact:local:7"): SyncState.IN_QUEUE,
                      (Direction.OUTBOUND, "Contact:a"): SyncState.SUCCESS}
    rows = queue(current(latest), state=SyncState.IN_QUEUE)
    assert sorted((r.record_id, r.queue_id, r.last_attempt) for r in rows) == [
        ("Contact:a", "inbound:Contact:a", None), ("Contact:local:7", "outbound:Contact:local:7", None)]
