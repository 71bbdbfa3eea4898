"""The pure rules of the operations layer: alert causes and deduplication, the failure streak, queue rows,
today's counts in the configured time zone. Plain data in, plain data out: no servers needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sfsync.config import ConfigError, build_config
from sfsync.operations.alerts import (
    Deduper,
    DlqAgeWatch,
    DownWatch,
    FailureStreak,
    StaleLetters,
    StreakEvent,
    ThresholdWatch,
    alert_cause,
    dlq_age_cause,
    open_alerts,
    resolved_alert,
    stale_dead_letters,
)
from sfsync.operations.status import queue, today_counts
from sfsync.records import Alert, AlertKind, AlertSeverity, Direction, RecordStatus, SyncState
from sfsync.salesforce.budget import usage_share

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


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_connection_down_for_over_a_minute_alerts_once_and_its_return_resolves() -> None:
    clock = Clock()
    w = DownWatch(60.0, clock)
    assert w.down("refused") is None
    clock.t += 60.0
    assert w.down("refused") is None and w.check() is None  # a minute is not over a minute
    clock.t += 0.5
    assert w.check() is StreakEvent.ALERT
    assert w.down("timeout") is None and w.check() is None  # once per outage
    assert w.detail == "timeout" and w.down_for() == 60.5
    assert w.up() is StreakEvent.RESOLVED and w.up() is None


def test_an_outage_shorter_than_a_minute_says_nothing() -> None:
    clock = Clock()
    w = DownWatch(60.0, clock)
    w.down("refused")
    clock.t += 59.0
    assert w.check() is None and w.up() is None
    clock.t += 30.0  # a new outage starts its own minute
    assert w.down("refused") is None
    clock.t += 59.0
    assert w.check() is None


def test_the_budget_warning_fires_on_crossing_the_share_and_resolves_below_it() -> None:
    w = ThresholdWatch(0.4)
    readings = [None, (100, 1000), (399, 1000), (400, 1000), (450, 1000), (20, 1000), (30, 1000), (500, 1000)]
    assert [w.observe(usage_share(u)) for u in readings] == [
        None, None, None, StreakEvent.ALERT, None, StreakEvent.RESOLVED, None, StreakEvent.ALERT]
    assert usage_share((5, 0)) is None


def test_the_warn_share_is_accepted_below_the_stop_share_and_refused_at_or_above_it() -> None:
    assert build_config({"alerts": {"api_budget_warn_share": 0.4}}).alerts.api_budget_warn_share == 0.4
    with pytest.raises(ConfigError) as e:
        build_config({"alerts": {"api_budget_warn_share": 0.5}, "salesforce": {"api_budget_share": 0.5}})
    assert "alerts.api_budget_warn_share" in str(e.value) and "below salesforce.api_budget_share" in str(e.value)


def test_dead_letters_older_than_a_day_are_found_per_dlq_topic() -> None:
    now = T0
    letters = [("p.dlq.salesforce", "salesforce:0:1", now - timedelta(days=2)),
               ("p.dlq.salesforce", "salesforce:0:2", now - timedelta(hours=25)),
               ("p.dlq.salesforce", "salesforce:0:3", now - timedelta(hours=23)),
               ("p.dlq.postgres", "postgres:1:7", now - timedelta(hours=24))]  # a day exactly: not more
    assert stale_dead_letters(letters, now) == {"p.dlq.salesforce": StaleLetters(
        "p.dlq.salesforce", 2, now - timedelta(days=2), ("salesforce:0:1", "salesforce:0:2"))}


def test_the_dlq_age_watch_alerts_once_per_topic_and_resolves_when_none_is_left() -> None:
    topics = ["p.dlq.postgres", "p.dlq.salesforce"]
    stale = {"p.dlq.salesforce": StaleLetters("p.dlq.salesforce", 1, T0, ("salesforce:0:1",))}
    w = DlqAgeWatch()
    assert [(t, e) for t, e, _ in w.decide(topics, stale)] == [("p.dlq.salesforce", StreakEvent.ALERT)]
    assert w.decide(topics, stale) == []  # still open: said once
    assert [(t, e) for t, e, _ in w.decide(topics, {})] == [("p.dlq.salesforce", StreakEvent.RESOLVED)]
    assert w.decide(topics, {}) == []
    # a restarted notifier rebuilds what is open from the alerts topic
    again = DlqAgeWatch()
    opened = Alert(kind=AlertKind.DLQ_AGE, severity=AlertSeverity.WARNING, message="m",
                   details={"dlq": "p.dlq.salesforce", "cause": dlq_age_cause("p.dlq.salesforce")})
    again.note(opened)
    assert again.decide(topics, stale) == []
    again.note(resolved_alert(dlq_age_cause("p.dlq.salesforce"), AlertKind.DLQ_AGE, "ok", {"dlq": "p.dlq.salesforce"}))
    assert [e for _, e, _ in again.decide(topics, stale)] == [StreakEvent.ALERT]
