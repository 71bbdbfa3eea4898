"""The pure rules of the operations layer: alert causes and deduplication, the failure streak, queue rows,
today's counts in the configured time zone. Plain data in, plain data out: no servers needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sfsync.operations.alerts import Deduper, FailureStreak, StreakEvent, alert_cause, open_alerts, resolved_alert
from sfsync.operations.status import queue, today_counts
from sfsync.records import Alert, AlertKind, AlertSeverity, Direction, RecordStatus, SyncState

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def alert(minutes: float, cause: str = "credential_failure:salesforce") -> Alert:
    return Alert(kind=AlertKind.CREDENTIAL_FAILURE, severity=AlertSeverity.CRITICAL, message="m",
                 details={"cause": cause}, ts=T0 + timedelta(minutes=minutes))


def test_one_delivery_per_cause_per_hour_then_resolved() -> None:
    d = Deduper()
    assert d.decide(alert(0)) is not None
    assert d.decide(alert(10)) is None and d.decide(alert(59)) is None  # held back
    assert d.decide(alert(5, cause="other:x:")) is not None  # another cause is another problem
    again = d.decide(alert(61))
    assert again is not None and again.details["repeated"] == "2"
    done = resolved_alert("credential_failure:salesforce", AlertKind.CREDENTIAL_FAILURE, "ok")
    assert d.decide(done) is not None
    assert d.decide(done) is None  # nothing open to resolve any more
    assert d.decide(alert(62)) is not None  # a new outage of the same cause after its resolution


def test_open_alerts_are_the_latest_unresolved_per_cause() -> None:
    done = resolved_alert("a", AlertKind.OTHER, "ok")
    found = open_alerts([alert(0, "a"), alert(1, "b"), done, alert(2, "b")])
    assert [alert_cause(a) for a in found] == ["b"]
    legacy = Alert(kind=AlertKind.SCHEMA_CHANGE, severity=AlertSeverity.CRITICAL, message="m",
                   details={"sink": "postgres"}, object="Contact")
    assert alert_cause(legacy) == "schema_change:postgres:Contact"


def test_the_streak_alerts_once_at_the_threshold_and_resolves_at_the_next_success() -> None:
    s = FailureStreak(3)
    assert [s.record(False) for _ in range(5)] == [None, None, StreakEvent.ALERT, None, None]
    assert s.record(True) is StreakEvent.RESOLVED and s.record(True) is None
    assert [s.record(False), s.record(True), s.record(False)] == [None, None, None]  # a success resets the count


def status(key: str, state: SyncState, at: datetime | None, direction: Direction = Direction.OUTBOUND) -> RecordStatus:
    return RecordStatus(key=key, object=key.split(":")[0], direction=direction, state=state, local_key=key[-1],
                        last_attempt_ts=at)


def test_queue_rows_filter_and_sort_newest_first() -> None:
    rows = [status("Contact:local:1", SyncState.SUCCESS, T0), status("Contact:local:2", SyncState.FAILED,
                                                                      T0 + timedelta(seconds=1)),
            status("Account:local:3", SyncState.FAILED, None), status("Contact:local:4", SyncState.FAILED, T0,
                                                                       Direction.INBOUND)]
    assert [r.queue_id for r in queue(rows)] == ["outbound:Contact:local:2", "outbound:Contact:local:1",
                                                 "inbound:Contact:local:4", "outbound:Account:local:3"]
    failed = queue(rows, direction=Direction.OUTBOUND, state=SyncState.FAILED, obj="contact")
    assert [(r.record_id, r.record_type, r.sync_status) for r in failed] == [("2", "Contact", SyncState.FAILED)]
    assert len(queue(rows, limit=1)) == 1


def test_today_counts_reset_at_midnight_in_the_configured_zone() -> None:
    zone = ZoneInfo("Europe/Berlin")  # UTC+1 in March
    now = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)  # 00:30 on 2 March in Berlin
    rows = [status("Contact:local:1", SyncState.SUCCESS, datetime(2025, 3, 1, 23, 10, tzinfo=UTC)),  # 2 March
            status("Contact:local:2", SyncState.SUCCESS, datetime(2025, 3, 1, 22, 50, tzinfo=UTC)),  # 1 March
            status("Contact:local:3", SyncState.FAILED, datetime(2025, 3, 1, 23, 20, tzinfo=UTC)),
            status("Contact:local:4", SyncState.FAILED, now, Direction.INBOUND)]
    assert today_counts(rows, Direction.OUTBOUND, now, zone) == (1, 1)
    assert today_counts(rows, Direction.OUTBOUND, now, ZoneInfo("UTC")) == (2, 1)
    assert today_counts(rows, Direction.INBOUND, now, zone) == (0, 1)
