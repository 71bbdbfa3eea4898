"""Record status, ``sfsync queue``/``status``/``dlq``/``alerts`` end to end (outbound roles as processes).

Acceptance (issue 12): a transient failure three times, then success: the queue shows Failures 3 (Failed),
then Success. A permanent error: in the DLQ after one attempt with every header; fix the cause, replay:
the record arrives, its status is Success, the dead letter is marked replayed. Outputs checked by content.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from sfsync.cli import app

ARRIVE_S = 120.0
STREAK = 5


@pytest.fixture(scope="module")
def p(pipeline_factory: Any) -> Any:
    # the third tier is long: a record failed three times waits there long enough to be seen in the queue
    p = pipeline_factory(overrides={
        "retry": {"tiers": [{"name": "r1", "delay_ms": 200}, {"name": "r2", "delay_ms": 200},
                            {"name": "r3", "delay_ms": 15000}], "max_attempts": 6},
        "alerts": {"consecutive_failures": STREAK},
        "operations": {"time_zone": "Pacific/Kiritimati"}})
    p.start(["salesforce-sink", "processor", "postgres-producer"])
    p.wait_ready()
    return p


def cli(p: Any, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(p.config_path)], env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    return result.output


def cli_json(p: Any, *args: str) -> Any:
    return json.loads(cli(p, *args, "--json"))


def insert(p: Any, last_name: str) -> str:
    with p.db() as conn:
        return str(conn.execute("insert into contacts (first_name, last_name) values ('Q', %s) returning id",
                                [last_name]).fetchone()[0])


def row_of(p: Any, local_key: str) -> dict[str, Any] | None:
    rows = [r for r in cli_json(p, "queue", "--direction", "outbound", "--object", "Contact", "--limit", "1000")
            if r["queue_id"] == f"outbound:Contact:local:{local_key}"]
    return rows[0] if rows else None


def test_a_transient_failure_three_times_then_success(p: Any) -> None:
    control = p.emulator.control
    control.add_fault(path="composite/sobjects", sobject="Contact", error_code="UNABLE_TO_LOCK_ROW", count=3)
    try:
        key = insert(p, "flaky")
        failed = p.wait_until(lambda: (r := row_of(p, key)) and r["failures"] == 3 and r, ARRIVE_S, "Failures 3",
                              interval=0.3)
        assert failed["sync_status"] == "failed" and failed["record_type"] == "Contact"
        assert failed["last_error"].startswith("UNABLE_TO_LOCK_ROW")
        table = cli(p, "queue", "--state", "failed")
        assert f"outbound:Contact:local:{key}" in table and "Failed" in table and "UNABLE_TO_LOCK_ROW" in table
        done = p.wait_until(lambda: (r := row_of(p, key)) and r["sync_status"] == "success" and r, ARRIVE_S,
                            "Success after the retries", interval=0.5)
        assert done["failures"] == 3 and done["last_error"] is None
        assert "flaky" in {r["LastName"] for r in p.sf().query("select LastName from Contact")["records"]}
        assert f"outbound:Contact:local:{key}" not in cli(p, "queue", "--state", "failed")
    finally:
        control.clear_faults()


def test_a_permanent_error_is_dead_lettered_then_replayed_after_the_fix(p: Any) -> None:
    control = p.emulator.control
    control.add_validation_rule(object="Contact", field="LastName", equals="reject-me",
                                message="Last name is not allowed")
    key = insert(p, "reject-me")

    def letter() -> dict[str, Any] | None:
        found = [x for x in cli_json(p, "dlq", "list", "--sink", "salesforce", "--record", key)]
        return found[0] if found else None

    dead = p.wait_until(letter, ARRIVE_S, "the dead letter", interval=0.5)
    assert dead["attempt"] == 1 and dead["state"] == "dead" and dead["kind"] == "command"
    assert dead["stage"] == "salesforce-sink" and dead["error_kind"] == "permanent"
    assert dead["error_class"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert "Last name is not allowed" in dead["error_message"]
    assert dead["first_attempt"] and dead["last_attempt"] and dead["origin"].startswith(f"{p.prefix}.apply.")
    assert dead["object"] == "Contact" and dead["values"]["LastName"] == "reject-me"
    listed = cli(p, "dlq", "list", "--error", "FIELD_CUSTOM_VALIDATION_EXCEPTION")
    assert dead["id"] in listed and "salesforce-sink" in listed
    assert cli_json(p, "dlq", "list", "--error", "NOT_A_CODE") == []
    assert cli_json(p, "dlq", "list", "--since", "2999-01-01") == []
    shown = json.loads(cli(p, "dlq", "show", dead["id"]))
    assert shown[0]["id"] == dead["id"] and shown[0]["error_message"] == dead["error_message"]
    failed = row_of(p, key)
    assert failed is not None and failed["sync_status"] == "failed" and failed["failures"] == 1

    control.clear_validation_rules()  # the cause fixed
    out = json.loads(cli(p, "dlq", "replay", dead["id"], "--wait", "120", "--json"))
    assert out == [{"id": dead["id"], "replayed": True, "detail": out[0]["detail"], "sent_to": out[0]["sent_to"],
                    "status": "success"}]
    assert out[0]["sent_to"].startswith(f"{p.prefix}.apply.salesforce:")
    assert "reject-me" in {r["LastName"] for r in p.sf().query("select LastName from Contact")["records"]}
    assert row_of(p, key)["sync_status"] == "success"  # type: ignore[index]
    again = letter()
    assert again is not None and again["state"] == "replayed" and again["replayed_to"] == out[0]["sent_to"]
    # a replayed letter is not sent again by a filter that selects it
    assert cli_json(p, "dlq", "replay", "--record", key) == []

    refused = cli(p, "dlq", "purge", dead["id"], code=2)
    assert "1 dead letter(s) would be purged; add --yes" in refused
    assert "purged 1 dead letter(s)" in cli(p, "dlq", "purge", dead["id"], "--yes")
    assert letter() is None
    purged = cli_json(p, "dlq", "list", "--record", key, "--all")
    assert [x["state"] for x in purged] == ["purged"]
    assert "select what" in cli(p, "dlq", "replay", code=2)


def test_consecutive_failures_raise_one_alert_then_resolved(p: Any) -> None:
    control = p.emulator.control
    control.add_validation_rule(object="Contact", field="LastName", regex="^streak-", message="no streaks")
    try:
        with p.db() as conn, conn.transaction():
            conn.execute("insert into contacts (first_name, last_name) select 'S', 'streak-' || g "
                         "from generate_series(1, %s) g", [STREAK + 2])

        def streak_open() -> list[Any]:
            return [a for a in cli_json(p, "alerts", "--open") if a["kind"] == "consecutive_failures"]

        opened = p.wait_until(streak_open, ARRIVE_S, "the consecutive_failures alert", interval=0.5)
        assert len(opened) == 1 and opened[0]["cause"] == "consecutive_failures:outbound"
        assert opened[0]["details"]["count"] == str(STREAK) and opened[0]["severity"] == "critical"
        assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in opened[0]["message"]
        status = cli_json(p, "status")
        outbound = next(d for d in status["directions"] if d["direction"] == "outbound")
        assert outbound["open_alerts"] >= 1
        assert "consecutive_failures" in cli(p, "status")
    finally:
        control.clear_validation_rules()
    insert(p, "healthy")
    p.wait_until(lambda: not streak_open(), ARRIVE_S, "the streak resolved", interval=0.5)
    mine = [a for a in cli_json(p, "alerts") if a["cause"] == "consecutive_failures:outbound"]
    assert [a["resolved"] for a in mine] == [False, True]  # one alert, then one resolution
    assert "resolved" in cli(p, "alerts")


def test_status_shows_pause_waiting_records_and_todays_counts(p: Any) -> None:
    status = cli_json(p, "status")
    outbound = next(d for d in status["directions"] if d["direction"] == "outbound")
    assert outbound["enabled"] and outbound["sink"] == "salesforce" and outbound["waiting"] == 0
    assert outbound["today"]["time_zone"] == "Pacific/Kiritimati"
    # earlier tests: flaky, reject-me (replayed) and healthy succeeded; the streak records failed
    assert outbound["today"]["success"] >= 3 and outbound["today"]["failed"] == STREAK + 2
    assert outbound["last_process_time"] and outbound["last_status"] in ("success", "failed")

    cli(p, "pause", "outbound", "--reason", "status test")
    try:
        with p.db() as conn, conn.transaction():
            conn.execute("insert into contacts (first_name, last_name) select 'W', 'waiting-' || g "
                         "from generate_series(1, 25) g")

        def waiting() -> int:
            d = next(d for d in cli_json(p, "status")["directions"] if d["direction"] == "outbound")
            return int(d["waiting"] or 0)

        p.wait_until(lambda: waiting() == 25, ARRIVE_S, "25 records waiting", interval=0.5)
        paused = next(d for d in cli_json(p, "status")["directions"] if d["direction"] == "outbound")
        assert paused["paused"] and not paused["enabled"] and paused["paused_reason"] == "status test"
        table = cli(p, "status")
        assert "paused" in table and "status test" in table
    finally:
        cli(p, "resume", "outbound")
    p.wait_until(lambda: waiting() == 0, ARRIVE_S, "nothing waiting after resume", interval=0.5)
