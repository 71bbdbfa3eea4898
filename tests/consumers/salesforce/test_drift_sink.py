"""The Salesforce sink under schema drift, against the emulator and the broker (no role processes).

What is asserted: the results of each write, the API calls it cost, what the emulator holds, the alerts and
the replays on the topics; a restarted sink keeps the suspension (durable on the control topic).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.salesforce.sink import SalesforceSink
from sfsync.config import SfsyncConfig, build_config
from sfsync.devstack.emulator import PASSWORD, USERNAME
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.operations._read import read_all
from sfsync.operations.alerts import is_resolved
from sfsync.records import (
    Alert,
    AlertKind,
    ApplyCommand,
    ApplyOperation,
    ApplyTarget,
    Source,
    write_version,
)
from sfsync.serde import Serde

FIELD = "Sink_Drift__c"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def cfg(kafka_config: dict[str, Any], org: Any) -> Iterator[SfsyncConfig]:
    config = build_config({
        "kafka": kafka_config,
        "salesforce": {"login_url": org.url, "ca_bundle": str(org.ca_path),
                       "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME,
                                "password": PASSWORD}},
        "objects": {"Contact": {"table": "contacts", "fields": [
            {"column": "last_name", "field": "LastName"},
            {"column": "drift", "field": FIELD},
        ]}},
    })
    apply_topics(config)
    org.control.add_field("Contact", FIELD, "string", length=40)
    yield config
    with contextlib.suppress(Exception):  # the session emulator's schema as it was
        org.control.delete_field("Contact", FIELD)


def _cmd(key: str, values: dict[str, Any], position: int) -> ApplyCommand:
    return ApplyCommand(target=ApplyTarget.SALESFORCE, object="Contact", operation=ApplyOperation.UPSERT,
                        source=Source.POSTGRES, source_event_id=f"e{position}", source_commit_ts=T0,
                        source_position=str(position), local_key=key, values=values, fields=sorted(values))


def _alerts(cfg: SfsyncConfig) -> list[Alert]:
    names, serde = TopicNames(cfg.kafka.topic_prefix), Serde.from_config(cfg.kafka)
    return [serde.decode(m.value() or b"", Alert) for m in read_all(cfg.kafka, [names.alerts])]


def _contacts(org: Any, with_field: bool = True) -> dict[str, dict[str, Any]]:
    extra = f", {FIELD}" if with_field else ""
    rows = org.salesforce().query_all(f"select Local_Id__c, LastName{extra} from Contact")["records"]
    return {r["Local_Id__c"]: r for r in rows}


def test_a_deleted_field_is_suspended_kept_across_a_restart_and_replayed_once_back(cfg: SfsyncConfig,
                                                                                  org: Any) -> None:
    sink = SalesforceSink(cfg, drift_recheck_s=3600)
    sink.probe()
    assert sink.write([_cmd(str(i), {"LastName": f"L{i}", FIELD: f"v{i}"}, 10 + i) for i in range(5)]) == [None] * 5

    org.control.delete_field("Contact", FIELD)
    calls = sink.calls
    batch = [_cmd(str(i), {"LastName": f"M{i}", FIELD: f"w{i}"}, 20 + i) for i in range(5)]
    assert sink.write(batch) == [None] * 5  # nothing fails: the field is suspended within the write
    assert sink.calls - calls == 3  # the upsert that failed, one describe, the upsert without the field
    assert {k: r["LastName"] for k, r in _contacts(org, with_field=False).items()} == {
        str(i): f"M{i}" for i in range(5)}
    alerts = [a for a in _alerts(cfg) if a.kind is AlertKind.SCHEMA_CHANGE]
    assert len(alerts) == 1 and alerts[0].details["entry"] == "objects.Contact.fields[1]"
    assert alerts[0].details["field"] == f"Contact.{FIELD}" and not is_resolved(alerts[0])

    calls = sink.calls
    assert sink.write([_cmd("0", {"LastName": "N0", FIELD: "x0"}, 30)]) == [None]
    assert sink.calls - calls == 1  # stripped up front: no failed call, no describe
    sink.close()

    restarted = SalesforceSink(cfg, drift_recheck_s=3600)
    restarted.probe()  # loads the suspension from the control topic
    assert set(restarted.suspended) == {("Contact", FIELD)}
    calls = restarted.calls
    assert restarted.write([_cmd("1", {"LastName": "N1", FIELD: "x1"}, 31)]) == [None]
    assert restarted.calls - calls == 1
    assert restarted.recheck() == 0  # still gone: nothing resumed (one describe)

    org.control.add_field("Contact", FIELD, "string", length=40)
    assert restarted.recheck() == 1
    assert restarted.suspended == {}
    restarted.close()

    names, serde = TopicNames(cfg.kafka.topic_prefix), Serde.from_config(cfg.kafka)
    replays = [serde.decode(m.value() or b"", ApplyCommand) for m in read_all(cfg.kafka, [names.apply_salesforce])]
    newest = {r.local_key: r for r in replays}
    assert len(replays) == 5 and {k: r.values for k, r in newest.items()} == {
        "0": {FIELD: "x0"}, "1": {FIELD: "x1"}, "2": {FIELD: "w2"}, "3": {FIELD: "w3"}, "4": {FIELD: "w4"}}
    # each replay's version is just past the parked one (the version guard lets it through, nothing newer)
    assert write_version(newest["0"].source_commit_ts, newest["0"].source_position) == (
        write_version(T0, "30")[0], 31)
    alerts = [a for a in _alerts(cfg) if a.kind is AlertKind.SCHEMA_CHANGE]
    assert len(alerts) == 2 and is_resolved(alerts[1])  # the restart raised no second alert


def test_an_invalid_field_the_mapping_does_not_write_is_an_ordinary_failure(cfg: SfsyncConfig, org: Any) -> None:
    sink = SalesforceSink(cfg, drift_recheck_s=3600)
    try:
        batch = [_cmd("1", {"LastName": "A"}, 1), _cmd("2", {"LastName": "B", "Unmapped__c": "x"}, 2)]
        results = sink.write(batch)
        assert results[0] is None and results[1] is not None and results[1].error_class == "INVALID_FIELD"
        assert sink.calls == 2  # the upsert and one describe (every mapped field is there: no drift)
        assert sink.suspended == {}
        assert [a for a in _alerts(cfg) if a.kind is AlertKind.SCHEMA_CHANGE] == []
    finally:
        sink.close()
