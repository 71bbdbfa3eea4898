"""Schema drift inbound, end to end: a mapped local column dropped while the pipeline runs.

Acceptance (issue 13, inbound half): one ``schema_change`` alert naming the mapping entry and the column,
the other columns keep arriving (no dead letters, no stalled sink), ``mapping check`` shows the drift, and
once the column is added back every suspended change arrives (the newest value of each record), through
``apply.local`` and the runner's version guard; the alert is resolved. Roles run as processes (Salesforce
emulator -> CDC producer -> processor -> PostgreSQL sink). ``title`` is mapped to ``Title``
(entry ``objects.Contact.fields[4]`` of the demo mapping).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sfsync.kafka.topics import TopicNames
from sfsync.operations.alerts import alert_cause, is_resolved
from sfsync.records import Alert, AlertKind
from sfsync.serde import Serde

ROLES = ["postgres-sink", "processor", "salesforce-producer"]
ENTRY = "objects.Contact.fields[4]"
ARRIVE_S = 60.0  # how long something may take to ARRIVE (a hang guard, not a speed bound)


def _rows(p: Any, columns: str) -> dict[str, tuple[Any, ...]]:
    with p.db() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            f"select sfid, {columns} from contacts where sfid is not null")}


def _schema_alerts(p: Any) -> list[Alert]:
    names, serde = TopicNames(p.prefix), Serde.from_config(p.cfg.kafka)
    alerts = [serde.decode(m.value(), Alert) for m in p.read_topic(names.alerts)]
    return [a for a in alerts if a.kind is AlertKind.SCHEMA_CHANGE]


@pytest.fixture(scope="module")
def inbound(pipeline_factory: Any) -> Iterator[Any]:
    p = pipeline_factory()
    assert p.raw["objects"]["Contact"]["fields"][4]["column"] == "title"
    try:
        p.start(ROLES)
        p.wait_ready()
        yield p
    finally:
        p.stop()


def test_dropped_column_is_suspended_other_columns_arrive_and_changes_replay_once_it_is_back(inbound: Any) -> None:
    p, sf = inbound, inbound.sf()
    a = sf.Contact.create({"LastName": "Lovelace", "Title": "T1"})["id"]
    p.wait_until(lambda: _rows(p, "last_name, title").get(a) == ("Lovelace", "T1"), ARRIVE_S, "the column syncs")

    with p.db() as conn:
        conn.execute("alter table contacts drop column title")
    sf.Contact.update(a, {"LastName": "Byron", "Title": "T2"})
    b = sf.Contact.create({"LastName": "Brown", "Title": "TB"})["id"]
    c = [sf.Contact.create({"LastName": f"C{i}", "Title": f"TC{i}"})["id"] for i in range(3)]

    def others_arrived() -> bool:
        have = _rows(p, "last_name")
        return have.get(a) == ("Byron",) and have.get(b) == ("Brown",) and all(have.get(i) for i in c)

    p.wait_until(others_arrived, ARRIVE_S, "the other columns keep arriving while the column is gone")

    alerts = _schema_alerts(p)
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert not is_resolved(alert) and alert.object == "Contact"
    assert alert.details["entry"] == ENTRY and alert.details["column"] == "title"
    assert alert.details["direction"] == "inbound" and ENTRY in alert.message and "title" in alert.message
    assert p.read_topic(TopicNames(p.prefix).dlq("postgres")) == []

    # `mapping check` shows the drift: the entry whose column is gone
    from sfsync.mappingcheck.sources import run_check

    report = run_check(p.cfg)
    assert any(e.path == ENTRY for e in report.errors), [str(e) for e in report.errors]

    # a sink restarted while the column is gone starts (its start-up check takes it for drift), keeps it suspended
    p.roles.kill("postgres-sink")
    p.roles.start("postgres-sink")
    p.roles.wait_ready(timeout=300.0, names=["postgres-sink"])
    assert "suspended by schema drift" in p.roles.log_path("postgres-sink").read_text()

    sf.Contact.update(a, {"Title": "T3"})  # changed again while suspended: the newest value is what arrives
    sf.Contact.update(a, {"LastName": "Byron2"})
    p.wait_until(lambda: _rows(p, "last_name").get(a) == ("Byron2",), ARRIVE_S, "later changes keep arriving")

    with p.db() as conn:
        conn.execute("alter table contacts add column title text")
    want = {a: ("T3",), b: ("TB",), **{i: (f"TC{n}",) for n, i in enumerate(c)}}
    p.wait_until(lambda: {k: _rows(p, "title").get(k) for k in want} == want, ARRIVE_S,
                 "every suspended change arrives once the column is back", interval=0.5)

    alerts = _schema_alerts(p)
    assert len(alerts) == 2 and is_resolved(alerts[1]) and alert_cause(alerts[1]) == alert_cause(alerts[0]), alerts
    assert p.read_topic(TopicNames(p.prefix).dlq("postgres")) == []

    sf.Contact.update(a, {"Title": "T4"})  # and the column syncs as before
    p.wait_until(lambda: _rows(p, "title").get(a) == ("T4",), ARRIVE_S, "the column syncs again")
