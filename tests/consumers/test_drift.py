"""The direction-generic rules of schema drift (:mod:`consumers.drift`), inbound side in particular: no
broker, no database. The outbound binding is covered by ``tests/consumers/salesforce/test_drift.py``."""

from __future__ import annotations

from datetime import UTC, datetime

from consumers import drift
from consumers.versions import screen_batch
from sfsync.config import build_config
from sfsync.operations.control import ControlScope, parse_suspension_key, suspension_key
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Direction, Source, write_version

AUTH = {"auth": {"username": "u@example.com", "password": "p"}}
CFG = build_config({"salesforce": AUTH, "objects": {"Contact": {"table": "contacts", "fields": [
    {"column": "last_name", "field": "LastName"},
    {"column": "code", "field": "Local_Id__c"},              # the external id: still a column inbound
    {"column": "Score", "field": "Score__c"},                 # a quoted, mixed-case column
    {"column": "rating", "field": "Rating__c", "direction": "to_local"},
    {"column": "title", "field": "Title__c", "direction": "to_salesforce"},  # never written inbound
]}}})
TS = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SFID = "003000000000001AAA"


def _in(values: dict[str, object], *, position: str = "41", sfid: str | None = SFID,
        key: str | None = None) -> ApplyCommand:
    return ApplyCommand(target=ApplyTarget.LOCAL, object="Contact", operation=ApplyOperation.UPSERT,
                        source=Source.SALESFORCE, source_event_id="e", source_commit_ts=TS, sfid=sfid,
                        local_key=key, values=values, fields=sorted(values), source_position=position)  # type: ignore[arg-type]


def test_inbound_targets_are_the_columns_the_postgres_sink_writes_with_their_entry_paths() -> None:
    inbound = drift.mapped_targets(CFG, Direction.INBOUND)["Contact"]
    assert {k: m.entry for k, m in inbound.items()} == {
        "last_name": "objects.Contact.fields[0]", "code": "objects.Contact.fields[1]",
        "Score": "objects.Contact.fields[2]", "rating": "objects.Contact.fields[3]"}
    assert inbound["Score"].target == "Score" and inbound["Score"].name == "Contact.Score"
    assert inbound["Score"].field == "Score__c" and inbound["Score"].direction is Direction.INBOUND
    outbound = drift.mapped_targets(CFG, Direction.OUTBOUND)["Contact"]
    assert set(outbound) == {"lastname", "score__c", "title__c"} and outbound["score__c"].target == "Score__c"


def test_missing_columns_compare_exactly_in_mapping_order() -> None:
    mapped = drift.mapped_targets(CFG, Direction.INBOUND)["Contact"]
    assert drift.missing(mapped, ["id", "sfid", "last_name", "code", "Score", "rating"]) == []
    gone = drift.missing(mapped, ["id", "sfid", "code", "score"])  # "score" is not "Score"
    assert [m.column for m in gone] == ["last_name", "Score", "rating"]
    # outbound names still compare case-insensitively
    out = drift.mapped_targets(CFG, Direction.OUTBOUND)["Contact"]
    assert drift.missing(out, ["LASTNAME", "score__C", "Title__c"]) == []


def test_mapping_order_is_by_index_not_by_text() -> None:
    fields = [{"column": f"c{i}", "field": f"F{i}__c"} for i in range(12)]
    cfg = build_config({"salesforce": AUTH, "objects": {"Contact": {"table": "contacts", "fields": fields}}})
    gone = drift.missing(drift.mapped_targets(cfg, Direction.INBOUND)["Contact"], ["c0"])
    assert [m.entry for m in gone][:2] == ["objects.Contact.fields[1]", "objects.Contact.fields[2]"]
    assert gone[-1].entry == "objects.Contact.fields[11]"


def test_inbound_commands_strip_park_and_replay_by_column() -> None:
    command = _in({"last_name": "Byron", "Score": 3})
    stripped, taken = drift.strip(command, frozenset({"Score"}))
    assert stripped.values == {"last_name": "Byron"} and stripped.fields == ["last_name"] and taken == {"Score": 3}
    parked = drift.parked_command(command, "Score", 3)
    replay = drift.replay_command(parked)
    assert replay.values == {"Score": 3} and replay.target is ApplyTarget.LOCAL
    assert write_version(replay.source_commit_ts, replay.source_position) == (write_version(TS, "41")[0], 42)


def test_inbound_records_are_named_by_sfid_as_the_version_guard_names_them() -> None:
    linked = _in({"Score": 1}, key="7")  # linked: both known; the sfid names it inbound, the key outbound
    assert drift.record_identity(linked, Direction.INBOUND) == SFID
    assert drift.record_identity(linked, Direction.OUTBOUND) == "7"
    assert drift.record_identity(_in({}, sfid=None, key="7"), Direction.INBOUND) == "7"
    key = drift.parked_key(Direction.INBOUND, linked, "Score")
    assert key == f"parked:inbound:Contact.Score:{SFID}@{write_version(TS, '41')[0]}.41"
    assert key.startswith(drift.parked_prefix(Direction.INBOUND, "Contact", "Score"))
    assert not key.startswith(drift.parked_prefix(Direction.OUTBOUND, "Contact", "Score"))
    assert ControlScope.parse(key) is None
    # one record whether or not its command carried the local key: one newest value
    newer = _in({"Score": 2}, position="50")
    assert [c.values for c in drift.newest_per_record([newer, linked], Direction.INBOUND)] == [{"Score": 2}]


def test_the_inbound_version_guard_lets_a_replay_through_only_when_nothing_newer_was_written() -> None:
    written = _in({"last_name": "Byron", "Score": 3}, position="41")
    rid = ("Contact", SFID)
    stored = {rid: {"last_name": write_version(TS, "41"), "Score": write_version(TS, "41")}}
    replay = drift.replay_command(drift.parked_command(written, "Score", 3))
    assert screen_batch([replay], Direction.INBOUND, stored).commands == [replay]
    assert screen_batch([replay], Direction.INBOUND, {rid: {"Score": write_version(TS, "42")}}).commands == [None]


def test_inbound_suspension_keys_cause_and_messages() -> None:
    m = drift.mapped_targets(CFG, Direction.INBOUND)["Contact"]["Score"]
    key = suspension_key(Direction.INBOUND, m.object, m.target)
    assert key == "field:inbound:Contact.Score" and parse_suspension_key(key, Direction.INBOUND) == ("Contact", "Score")
    s = drift.Suspension(m, drift.suspension_message(m, "SQLSTATE 42703", "public.contacts"))
    assert s.cause == "schema_change:postgres:Contact.Score"
    assert "objects.Contact.fields[2]" in s.reason and "public.contacts.Score" in s.reason
    assert "Contact.Score__c" in s.reason and "42703" in s.reason
    assert "objects.Contact.fields[2]" in drift.resumed_message(m, 4) and "4 record(s)" in drift.resumed_message(m, 4)
    out = drift.mapped_targets(CFG, Direction.OUTBOUND)["Contact"]["score__c"]
    assert drift.Suspension(out, "").cause == "schema_change:salesforce:Contact.Score__c"
