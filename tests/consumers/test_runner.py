"""Pure failure routing of the sink runner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumers.runner import route_failure
from sfsync.config import build_config
from sfsync.failures import Failure, FailureKind, Origin, failure_headers, parse_failure_headers

CFG = build_config({"retry": {"tiers": [{"name": "a", "delay_ms": 10}, {"name": "b", "delay_ms": 20}],
                              "max_attempts": 4}})
LOCK = Failure(FailureKind.TRANSIENT, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access")
BAD = Failure(FailureKind.PERMANENT, "INVALID_FIELD", "No such column 'Foo__c'")


def test_transient_walks_the_tiers_then_dead_letters() -> None:
    routes = [route_failure(LOCK, attempt, CFG, "salesforce") for attempt in (1, 2, 3, 4)]
    assert [(r.topic, r.delay_ms, r.dead) for r in routes] == [
        ("sfsync.retry.salesforce.a", 10, False),
        ("sfsync.retry.salesforce.b", 20, False),
        ("sfsync.retry.salesforce.b", 20, False),
        ("sfsync.dlq.salesforce", 0, True),
    ]


def test_permanent_goes_straight_to_dlq() -> None:
    route = route_failure(BAD, 1, CFG, "postgres")
    assert route.dead and route.topic == "sfsync.dlq.postgres"


def test_headers_round_trip_and_keep_first_attempt() -> None:
    first = datetime(2026, 1, 1, tzinfo=UTC)
    now = first + timedelta(minutes=5)
    headers = failure_headers(BAD, stage="salesforce-sink", attempt=3, origin=Origin("sfsync.apply.salesforce", 2, 41),
                              first_attempt=first, now=now)
    info = parse_failure_headers(list(headers))
    assert (info.kind, info.error_class, info.message, info.attempt) == (
        "permanent", "INVALID_FIELD", "No such column 'Foo__c'", 3)
    assert info.first_attempt == first and info.last_attempt == now
    assert info.origin == Origin("sfsync.apply.salesforce", 2, 41) and info.stage == "salesforce-sink"


