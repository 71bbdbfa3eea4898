"""Schema drift outbound, end to end: a mapped custom field deleted in Salesforce while the pipeline runs.

Acceptance (issue 13): one alert naming the mapping entry and the field, the other fields keep syncing, at
most one record per object dead-lettered (here: none), and once the field is re-added every suspended change
arrives (the newest value of each record), through the runner's version guard. A sink restarted while the
field is gone starts (its start-up mapping check takes the suspended field for drift) and keeps it
suspended. Roles run as processes (PostgreSQL triggers -> outbox relay -> processor -> Salesforce sink);
the emulator deletes and re-adds the field through its control API. ``title`` is mapped to the custom field
``Drift_Title__c`` (entry ``objects.Contact.fields[4]``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from sfsync.kafka.topics import TopicNames
from sfsync.operations.alerts import alert_cause, is_resolved
from sfsync.records import Alert, AlertKind
from sfsync.serde import Serde

ROLES = ["salesforce-sink", "processor", "postgres-producer"]
FIELD = "Drift_Title__c"
ENTRY = "objects.Contact.fields[4]"
ARRIVE_S = 90.0  # how long something may take to ARRIVE (a hang guard, not a speed bound)


def _contacts(p: Any, with_field: bool) -> dict[str, dict[str, Any]]:
    extra = f", {FIELD}" if with_field else ""
    soql = f"select Id, Local_Id__c, LastName, Email{extra} from Contact"
    return {r["Local_Id__c"]: r for r in p.sf().query_all(soql)["records"] if r["Local_Id__c"]}


def _schema_alerts(p: Any) -> list[Alert]:
    names, serde = TopicNames(p.prefix), Serde.from_config(p.cfg.kafka)
    alerts = [serde.decode(m.value(), Alert) for m in p.read_topic(names.alerts)]
    return [a for a in alerts if a.kind is AlertKind.SCHEMA_CHANGE]


@pytest.fixture(scope="module")
def drifting(pipeline_factory: Any) -> Iterator[Any]:
    from sfsync.devstack.stack import demo_config

    contact = copy.deepcopy(demo_config()["objects"]["Contact"])
    assert contact["fields"][4]["column"] == "title"
    contact["fields"][4] = {"column": "title", "field": FIELD}
    p = pipeline_factory(overrides={"objects": {"Contact": contact}})
    control = p.emulator.control
    control.add_field("Contact", FIELD, "string", length=80)
    try:
        p.start(ROLES)
        p.wait_ready()
        yield p
    finally:
        p.stop()
        with contextlib.suppress(Exception):  # leave the session emulator's schema as it was (unless gone)
            control.delete_field("Contact", FIELD)


def test_deleted_field_is_suspended_other_fields_sync_and_changes_arrive_once_it_is_back(drifting: Any) -> None:
    p, control = drifting, drifting.emulator.control
    with p.db() as conn:
        a = conn.execute("insert into contacts (first_name, last_name, email, title) "
                         "values ('Ada', 'Lovelace', 'ada@x.test', 'T1') returning id").fetchone()[0]
    p.wait_until(lambda: _contacts(p, True).get(str(a), {}).get(FIELD) == "T1", ARRIVE_S, "the mapped field syncs")

    control.delete_field("Contact", FIELD)
    with p.db() as conn:
        conn.execute("update contacts set title = 'T2', last_name = 'Byron' where id = %s", [a])
        b = conn.execute("insert into contacts (first_name, last_name, email, title) "
                         "values ('Bo', 'Brown', 'bo@x.test', 'TB') returning id").fetchone()[0]
        c = [r[0] for r in conn.execute(
            "insert into contacts (last_name, email, title) select 'C' || g, 'c' || g || '@x.test', 'TC' || g "
            "from generate_series(1, 20) g returning id")]

    def others_synced() -> bool:
        have = _contacts(p, False)
        return (have.get(str(a), {}).get("LastName") == "Byron" and str(b) in have
                and all(str(i) in have for i in c))

    p.wait_until(others_synced, ARRIVE_S, "the other fields keep syncing while the field is gone")

    alerts = _schema_alerts(p)
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert not is_resolved(alert) and alert.object == "Contact"
    assert alert.details["entry"] == ENTRY and alert.details["field"] == f"Contact.{FIELD}"
    assert ENTRY in alert.message and FIELD in alert.message
    dead = p.read_topic(TopicNames(p.prefix).dlq("salesforce"))
    assert len(dead) <= 1, [m.key() for m in dead]  # the acceptance bound; the sink writes it again at once
    assert dead == []

    # `mapping check` shows the drift: the entry and the field it names
    from sfsync.mappingcheck.sources import run_check

    report = run_check(p.cfg)
    assert any(e.path == ENTRY for e in report.errors), [str(e) for e in report.errors]

    # a role restarted while the field is gone starts (at its start the drift is a warning, not an error)
    # and keeps the field suspended
    p.roles.kill("salesforce-sink")
    p.roles.start("salesforce-sink")
    p.roles.wait_ready(timeout=300.0, names=["salesforce-sink"])
    assert "suspended by schema drift" in p.roles.log_path("salesforce-sink").read_text()

    with p.db() as conn:  # changed again while suspended: the newest value is what arrives
        conn.execute("update contacts set title = 'T3' where id = %s", [a])

    control.add_field("Contact", FIELD, "string", length=80)

    with p.db() as conn:
        want = {str(i): t for i, t in conn.execute("select id, title from contacts")}
    assert want[str(a)] == "T3" and want[str(b)] == "TB" and len(want) == 22

    def all_arrived() -> bool:
        have = _contacts(p, True)
        return {k: have.get(k, {}).get(FIELD) for k in want} == want

    p.wait_until(all_arrived, ARRIVE_S, "every suspended change arrives once the field is back", interval=0.5)

    alerts = _schema_alerts(p)
    assert len(alerts) == 2 and is_resolved(alerts[1]) and alert_cause(alerts[1]) == alert_cause(alerts[0]), alerts
    assert p.read_topic(TopicNames(p.prefix).dlq("salesforce")) == []

    with p.db() as conn:  # and the field syncs as before
        conn.execute("update contacts set title = 'T4' where id = %s", [a])
    p.wait_until(lambda: _contacts(p, True).get(str(a), {}).get(FIELD) == "T4", ARRIVE_S, "the field syncs again")
