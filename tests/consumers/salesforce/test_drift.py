"""The pure rules of outbound schema drift (:mod:`consumers.salesforce.drift`): no broker, no Salesforce."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from consumers.salesforce import drift
from consumers.versions import screen_batch
from sfsync.config import build_config
from sfsync.failures import Failure, FailureKind
from sfsync.operations.control import parse_suspension_key, suspension_key
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Direction, Source, write_version

AUTH = {"auth": {"username": "u@example.com", "password": "p"}}
CFG = build_config({"salesforce": AUTH, "objects": {"Contact": {"table": "contacts", "fields": [
    {"column": "last_name", "field": "LastName"},
    {"column": "code", "field": "Local_Id__c"},          # the external id: the key, never suspended
    {"column": "score", "field": "Score__c"},
    {"column": "rating", "field": "Rating__c", "direction": "to_local"},  # not written by the sink
    {"column": "title", "field": "Title__c", "direction": "to_salesforce"},
]}}})
TS = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _cmd(values: dict[str, object], *, position: str = "41", key: str = "7", sfid: str | None = None,
         op: ApplyOperation = ApplyOperation.UPSERT) -> ApplyCommand:
    return ApplyCommand(target=ApplyTarget.SALESFORCE, object="Contact", operation=op, source=Source.POSTGRES,
                        source_event_id="e", source_commit_ts=TS, local_key=key, sfid=sfid, values=values,  # type: ignore[arg-type]
                        fields=sorted(values), source_position=position, attempt=2)


def test_outbound_fields_name_the_entry_path_and_skip_the_key_and_inbound_only_fields() -> None:
    fields = drift.outbound_fields(CFG)["Contact"]
    assert {m.field: m.entry for m in fields.values()} == {
        "LastName": "objects.Contact.fields[0]", "Score__c": "objects.Contact.fields[2]",
        "Title__c": "objects.Contact.fields[4]"}
    assert fields["score__c"].column == "score" and fields["score__c"].name == "Contact.Score__c"


def test_missing_compares_with_the_describe_case_insensitively_in_mapping_order() -> None:
    mapped = drift.outbound_fields(CFG)["Contact"]
    assert drift.missing(mapped, ["Id", "lastname", "SCORE__C", "Title__c"]) == []
    gone = drift.missing(mapped, ["Id", "LastName"])
    assert [m.entry for m in gone] == ["objects.Contact.fields[2]", "objects.Contact.fields[4]"]


def test_only_invalid_field_and_invalid_type_are_candidates() -> None:
    assert drift.drift_candidate(Failure(FailureKind.PERMANENT, "INVALID_FIELD", "No such column"))
    assert drift.drift_candidate(Failure(FailureKind.PERMANENT, "INVALID_TYPE", "sObject type"))
    assert not drift.drift_candidate(Failure(FailureKind.PERMANENT, "STRING_TOO_LONG", "x"))
    assert not drift.drift_candidate(None)


def test_strip_takes_the_suspended_fields_out_and_leaves_the_rest() -> None:
    command = _cmd({"LastName": "Byron", "Score__c": Decimal("1.50"), "Title__c": None})
    stripped, taken = drift.strip(command, frozenset({"Score__c", "Title__c"}))
    assert stripped.values == {"LastName": "Byron"} and stripped.fields == ["LastName"]
    assert taken == {"Score__c": Decimal("1.50"), "Title__c": None}  # a cleared value is parked too
    assert (stripped.source_commit_ts, stripped.source_position) == (TS, "41")  # same version
    assert drift.strip(command, frozenset()) == (command, {})
    assert drift.strip(command, frozenset({"Other__c"})) == (command, {})
    delete = _cmd({}, op=ApplyOperation.DELETE)
    assert drift.strip(delete, frozenset({"Score__c"})) == (delete, {})


def test_parked_and_replayed_commands_carry_one_field_and_the_version_just_past() -> None:
    command = _cmd({"LastName": "Byron", "Score__c": 3})
    parked = drift.parked_command(command, "Score__c", 3)
    assert parked.values == {"Score__c": 3} and parked.fields == ["Score__c"] and parked.attempt == 0
    assert parked.command_id == command.command_id and write_version(TS, "41") == write_version(
        parked.source_commit_ts, parked.source_position)
    replay = drift.replay_command(parked)
    assert replay.values == parked.values and replay.command_id != parked.command_id
    assert write_version(replay.source_commit_ts, replay.source_position) == (write_version(TS, "41")[0], 42)
    # a position that is no number (a catch-up snapshot: version -1) replays at 0
    odd = drift.replay_command(drift.parked_command(_cmd({"Score__c": 1}, position="catchup:1"), "Score__c", 1))
    assert odd.source_position == "0"


def test_the_version_guard_lets_a_replay_through_only_when_nothing_newer_was_written() -> None:
    """The guard stored the parked version when the stripped command was written; the replay passes it,
    a value written later (a newer outbox id, or a later commit) wins over it, a delete stops it."""
    written = _cmd({"LastName": "Byron", "Score__c": 3}, position="41")
    rid = ("Contact", "7")
    stored = {rid: {"LastName": write_version(TS, "41"), "Score__c": write_version(TS, "41")}}
    replay = drift.replay_command(drift.parked_command(written, "Score__c", 3))
    assert screen_batch([replay], Direction.OUTBOUND, stored).commands == [replay]
    newer_same_time = {rid: {"Score__c": write_version(TS, "42")}}
    assert screen_batch([replay], Direction.OUTBOUND, newer_same_time).commands == [None]
    later = {rid: {"Score__c": write_version(datetime(2026, 12, 1, 12, 0, 1, tzinfo=UTC), "1")}}
    assert screen_batch([replay], Direction.OUTBOUND, later).commands == [None]
    deleted = {rid: {"Score__c": write_version(TS, "41"), "__deleted__": write_version(TS, "50")}}
    assert screen_batch([replay], Direction.OUTBOUND, deleted).commands == [None]


def test_keys_round_trip_and_never_look_like_a_pause_scope() -> None:
    from sfsync.operations.control import ControlScope

    key = suspension_key(Direction.OUTBOUND, "Contact", "Score__c")
    assert key == "field:outbound:Contact.Score__c"
    assert parse_suspension_key(key, Direction.OUTBOUND) == ("Contact", "Score__c")
    assert parse_suspension_key(key, Direction.INBOUND) is None
    assert parse_suspension_key("outbound:Contact", Direction.OUTBOUND) is None
    parked = drift.parked_key(Direction.OUTBOUND, _cmd({}, key="a:b"), "Score__c")  # a local key may hold ':'
    assert parked == f"parked:outbound:Contact.Score__c:a:b@{write_version(TS, '41')[0]}.41"
    assert parked.startswith(drift.parked_prefix(Direction.OUTBOUND, "Contact", "Score__c"))
    assert not parked.startswith(drift.parked_prefix(Direction.OUTBOUND, "Contact", "Score"))
    assert drift.parked_key(Direction.OUTBOUND, _cmd({}, key=""), "Score__c") is None  # names no record
    # one key per version: a value parked while another replica resumes is a key that resume did not read
    assert parked != drift.parked_key(Direction.OUTBOUND, _cmd({}, key="a:b", position="42"), "Score__c")
    assert ControlScope.parse(key) is None and ControlScope.parse(parked) is None  # pause readers skip them


def test_a_resume_replays_the_newest_parked_value_of_each_record() -> None:
    old, new, other = (_cmd({"Score__c": 1}, position="5"), _cmd({"Score__c": 2}, position="9"),
                       _cmd({"Score__c": 3}, position="1", key="8"))
    kept = {c.command_id for c in drift.newest_per_record([new, old, other])}
    assert kept == {new.command_id, other.command_id}
    assert [c.values for c in drift.newest_per_record([old, new])] == [{"Score__c": 2}]


def test_record_identity_is_the_local_key_else_the_sfid() -> None:
    assert drift.record_identity(_cmd({}, key="7")) == "7"
    assert drift.record_identity(_cmd({}, key="", sfid="003000000000001AAA")) == "003000000000001AAA"


def test_the_suspension_names_its_entry_field_and_cause() -> None:
    m = drift.outbound_fields(CFG)["Contact"]["score__c"]
    s = drift.Suspension(m, drift.suspension_message(m, "INVALID_FIELD"))
    assert s.cause == "schema_change:salesforce:Contact.Score__c"
    assert "objects.Contact.fields[2]" in s.reason and "Contact.Score__c" in s.reason and "INVALID_FIELD" in s.reason
