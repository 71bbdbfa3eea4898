"""sfsync.records: field value conversion, record keys, record validation and Avro dicts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from field_value_strategies import field_values, same_value
from hypothesis import given, settings
from hypothesis import strategies as st

from sfsync.records import (
    INT64_MAX,
    INT64_MIN,
    RECORD_TYPES,
    Alert,
    AlertKind,
    ApplyCommand,
    ApplyOperation,
    ApplyTarget,
    ChangeEvent,
    ControlAction,
    ControlRecord,
    Direction,
    Link,
    LinkKind,
    MetricSample,
    Operation,
    RecordStatus,
    SinkAck,
    Source,
    SyncState,
    decode_value,
    decode_values,
    encode_value,
    encode_values,
    parse_record_key,
    record_key,
)

# --------------------------------------------------------------------------- strategies / helpers

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def sample_records() -> list[Any]:
    return [
        ChangeEvent(
            source=Source.SALESFORCE,
            object="Contact",
            operation=Operation.UPDATE,
            commit_ts=NOW,
            source_position="1234",
            sfid="003000000000001AAA",
            changed_fields=["Email", "Phone"],
            values={"Email": "a@example.com", "Phone": None},
            origin="sfsync",
            transaction_key="tx-1",
            sequence=3,
        ),
        ApplyCommand(
            target=ApplyTarget.LOCAL,
            object="Contact",
            operation=ApplyOperation.UPSERT,
            source=Source.SALESFORCE,
            source_event_id="e-1",
            source_commit_ts=NOW,
            sfid="003000000000001AAA",
            values={"email": "a@example.com", "balance": Decimal("12.30")},
            fields=["email", "balance"],
            attempt=2,
        ),
        RecordStatus(
            key="Contact:local:42",
            object="Contact",
            direction=Direction.OUTBOUND,
            state=SyncState.FAILED,
            local_key="42",
            failure_count=3,
            last_error="REQUIRED_FIELD_MISSING: LastName",
            last_attempt_ts=NOW,
            updated_ts=NOW,
        ),
        MetricSample(
            role="consumer-postgres", name="sfsync_applied_total", value=12.0, labels={"o": "Contact"}, ts=NOW
        ),
        Alert(kind=AlertKind.REPLAY_GAP, severity="critical", message="replay id too old", details={"id": "9"}, ts=NOW),
        ControlRecord(direction="inbound", action=ControlAction.PAUSE, requested_by="ops@example.com", ts=NOW),
        Link(kind=LinkKind.HANDOVER, object="Contact", sfid="003000000000001AAA", local_key="42",
             entry=b'{"f": {}}', ts=NOW),
        SinkAck(direction=Direction.INBOUND, sink="postgres", instance="host-1-ab12", applied={"0": 17},
                beat_ms=10_000, ts=NOW),
    ]


# --------------------------------------------------------------------------- field values


@settings(max_examples=400, deadline=None)
@given(field_values)
def test_field_value_round_trip(value: Any) -> None:
    encoded = encode_value(value)
    assert set(encoded) == {"value", "logical"}
    assert same_value(decode_value(encoded), value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {"value": None, "logical": None}),
        (True, {"value": True, "logical": None}),
        (INT64_MAX, {"value": INT64_MAX, "logical": None}),
        (INT64_MIN, {"value": INT64_MIN, "logical": None}),
        (INT64_MAX + 1, {"value": "9223372036854775808", "logical": "bigint"}),
        (INT64_MIN - 1, {"value": "-9223372036854775809", "logical": "bigint"}),
        (-0.0, {"value": -0.0, "logical": None}),
        ("", {"value": "", "logical": None}),
        (b"", {"value": b"", "logical": None}),
        (bytearray(b"\x00\x01"), {"value": b"\x00\x01", "logical": None}),
        (Decimal("1.50"), {"value": "1.50", "logical": "decimal"}),
        (Decimal("-0E+3"), {"value": "-0E+3", "logical": "decimal"}),
        (date(2024, 2, 29), {"value": "2024-02-29", "logical": "date"}),
        (
            datetime(2024, 2, 29, 23, 59, 1, 5, tzinfo=timezone(timedelta(hours=-5))),
            {"value": "2024-02-29T23:59:01.000005-05:00", "logical": "datetime"},
        ),
        (time(13, 14, 15), {"value": "13:14:15", "logical": "time"}),
    ],
)
def test_encode_value_wire_form(value: Any, expected: dict[str, Any]) -> None:
    assert encode_value(value) == expected


def test_edge_values_keep_type_and_bits() -> None:
    for value in [float("nan"), -0.0, "", b"", "\x00", "\U0001f600\U00010348", 2**64, -(2**100), Decimal("sNaN")]:
        assert same_value(decode_value(encode_value(value)), value), value
    assert type(decode_value(encode_value(True))) is bool
    assert type(decode_value(encode_value(1))) is int
    assert type(decode_value(encode_value(1.0))) is float


def test_naive_datetime_value_rejected() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        encode_value(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match=r"field 'LastModified__c': naive datetime"):
        encode_values({"ok": 1, "LastModified__c": datetime(2024, 1, 1)})


def test_sub_second_utc_offsets_rejected() -> None:
    odd = timezone(timedelta(microseconds=1))
    with pytest.raises(ValueError, match="fractions of a second"):
        encode_value(datetime(2000, 1, 1, tzinfo=odd))
    with pytest.raises(ValueError, match="fractions of a second"):
        encode_value(time(1, 2, tzinfo=odd))
    lmt = timezone(timedelta(minutes=17, seconds=30))  # whole-second offsets (e.g. LMT) are fine
    assert same_value(decode_value(encode_value(datetime(1890, 1, 1, tzinfo=lmt))), datetime(1890, 1, 1, tzinfo=lmt))


def test_unsupported_value_type_rejected() -> None:
    with pytest.raises(TypeError, match="unsupported field value type list"):
        encode_value([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"field 'Tags': unsupported field value type set"):
        encode_values({"Tags": {"a"}})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("fv", "message"),
    [
        ({"value": "abc", "logical": "decimal"}, "not a decimal number"),
        ({"value": 5, "logical": "decimal"}, "needs a string value"),
        ({"value": "2024-01-01T00:00:00", "logical": "datetime"}, "has no UTC offset"),
        ({"value": "yesterday", "logical": "date"}, "Invalid isoformat"),
        ({"value": "12", "logical": "unknown"}, "unknown FieldValue logical"),
        ({"value": "1.5", "logical": "bigint"}, "invalid literal"),
        ({"value": [1], "logical": None}, "unsupported type list"),
    ],
)
def test_decode_value_rejects_inconsistent(fv: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_value(fv)


def test_decode_values_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"field 'Amount': .*not a decimal number"):
        decode_values({"Amount": {"value": "x", "logical": "decimal"}})


# --------------------------------------------------------------------------- keys


def test_record_key_forms() -> None:
    assert record_key("Contact", "003A") == "Contact:003A"
    assert record_key("Contact", None, "42") == "Contact:local:42"
    assert record_key("Contact", "003A", "42") == "Contact:003A"  # linked: the sfid wins
    assert record_key("Contact", "", "42") == "Contact:local:42"
    with pytest.raises(ValueError, match="neither sfid nor local_key"):
        record_key("Contact")
    with pytest.raises(ValueError, match="without ':'"):
        record_key("Con:tact", "003A")
    with pytest.raises(ValueError, match="non-empty"):
        record_key("", "003A")


@given(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,40}", fullmatch=True),
    st.one_of(
        st.tuples(st.from_regex(r"[A-Za-z0-9]{15,18}", fullmatch=True), st.none()),
        st.tuples(st.none(), st.text(min_size=1)),
    ),
)
def test_parse_record_key_inverts_record_key(obj: str, ids: tuple[str | None, str | None]) -> None:
    sfid, local = ids
    assert parse_record_key(record_key(obj, sfid, local)) == (obj, sfid, local)


@pytest.mark.parametrize("bad", ["", "Contact", "Contact:", ":003", "Contact:local:"])
def test_parse_record_key_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="not a record key"):
        parse_record_key(bad)


def test_record_key_properties() -> None:
    event, command, status, _, _, control, link, _ = sample_records()
    assert event.key == "Contact:003000000000001AAA"
    assert command.key == "Contact:003000000000001AAA"
    assert status.kafka_key == "outbound:Contact:local:42"
    assert control.kafka_key == "inbound"
    assert link.kafka_key == "Contact:003000000000001AAA"  # a handover travels under the sfid
    assert dataclasses.replace(link, kind=LinkKind.PULL).kafka_key == "Contact:local:42"  # a pull, the local key


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("factory", "field_name"),
    [
        (lambda ts: dataclasses.replace(sample_records()[0], commit_ts=ts), "commit_ts"),
        (lambda ts: dataclasses.replace(sample_records()[1], source_commit_ts=ts), "source_commit_ts"),
        (lambda ts: dataclasses.replace(sample_records()[2], last_attempt_ts=ts), "last_attempt_ts"),
        (lambda ts: dataclasses.replace(sample_records()[2], updated_ts=ts), "updated_ts"),
        (lambda ts: dataclasses.replace(sample_records()[3], ts=ts), "ts"),
        (lambda ts: dataclasses.replace(sample_records()[4], ts=ts), "ts"),
        (lambda ts: dataclasses.replace(sample_records()[5], ts=ts), "ts"),
        (lambda ts: dataclasses.replace(sample_records()[0], values={"Birth__c": ts}), r"values\['Birth__c'\]"),
    ],
)
def test_naive_datetimes_rejected_naming_field(factory: Any, field_name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field_name}: naive datetime 2024-01-01T00:00:00"):
        factory(datetime(2024, 1, 1))


def test_timestamps_normalised_to_utc() -> None:
    plus2 = datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = dataclasses.replace(sample_records()[0], commit_ts=plus2)
    assert event.commit_ts.tzinfo is UTC
    assert event.commit_ts == plus2
    assert event.commit_ts.hour == 10


def test_enum_fields_coerced_and_checked() -> None:
    event = dataclasses.replace(sample_records()[0], source="postgres", operation="gap")  # type: ignore[arg-type]
    assert event.source is Source.POSTGRES
    assert event.operation is Operation.GAP
    with pytest.raises(ValueError, match="operation: 'merge' is not one of create, update, delete"):
        dataclasses.replace(sample_records()[0], operation="merge")  # type: ignore[arg-type]


def test_bad_value_types_rejected_on_construction() -> None:
    with pytest.raises(TypeError, match=r"values\['Tags'\]: unsupported value type list"):
        dataclasses.replace(sample_records()[0], values={"Tags": ["a"]})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="changed_fields: expected a list of str"):
        dataclasses.replace(sample_records()[0], changed_fields="Email")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"attempt: must be an int in 0\.\.2147483647, got -1"):
        dataclasses.replace(sample_records()[1], attempt=-1)
    with pytest.raises(ValueError, match="failure_count: must be an int in"):
        dataclasses.replace(sample_records()[2], failure_count=2**31)
    with pytest.raises(TypeError, match="labels: expected str -> str"):
        MetricSample(role="r", name="n", value=1.0, labels={"a": 1})  # type: ignore[dict-item]


def test_records_are_frozen_and_default_ids() -> None:
    event = sample_records()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.object = "Account"  # type: ignore[misc]
    assert len(event.event_id) == 36 and len(event.trace_id) == 36
    assert event.event_id != sample_records()[0].event_id  # a fresh UUID per record
    assert dataclasses.replace(event, event_id="x").event_id == "x"
    assert ChangeEvent.from_avro(event.to_avro()) == event  # generated ids survive the round trip


# --------------------------------------------------------------------------- avro dicts


@pytest.mark.parametrize("record", sample_records(), ids=lambda r: type(r).__name__)
def test_to_from_avro_round_trip(record: Any) -> None:
    d = record.to_avro()
    assert type(record).from_avro(d) == record
    # enum values go out as plain symbols, values as FieldValue dicts
    for name in ("source", "operation", "target", "direction", "state", "kind", "severity", "action"):
        if name in d:
            assert type(d[name]) is str
    if isinstance(record, ChangeEvent | ApplyCommand):
        assert all(set(fv) == {"value", "logical"} for fv in d["values"].values())


def test_every_record_type_has_a_sample() -> None:
    assert {type(r) for r in sample_records()} == set(RECORD_TYPES)
