"""sfsync.serde: schemas, fingerprints, both wire formats, and garbage handling."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import shutil
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.schema import fingerprint as fastavro_fingerprint
from field_value_strategies import field_values, same_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfsync import serde as serde_mod
from sfsync.records import (
    INT64_MAX,
    INT64_MIN,
    RECORD_TYPES,
    Alert,
    AlertKind,
    AlertSeverity,
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
)
from sfsync.serde import (
    RECORD_SCHEMAS,
    DecodeError,
    EncodeError,
    RegistryError,
    SchemaNotFoundError,
    Serde,
    crc64_avro,
    load_schema,
    schema_dir,
    schema_info,
)

TOPIC = "sfsync.changes.inbound"
NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)

# --------------------------------------------------------------------------- strategies / helpers

texts = st.text(max_size=24)
opt_texts = st.none() | texts
utc_times = st.datetimes(timezones=st.just(UTC))
value_maps = st.dictionaries(st.text(max_size=16), field_values, max_size=8)

change_events = st.builds(
    ChangeEvent,
    source=st.sampled_from(Source),
    object=texts,
    operation=st.sampled_from(Operation),
    commit_ts=utc_times,
    source_position=texts,
    sfid=opt_texts,
    local_key=opt_texts,
    changed_fields=st.lists(texts, max_size=5),
    values=value_maps,
    origin=opt_texts,
    entity=opt_texts,
    transaction_key=opt_texts,
    sequence=st.none() | st.integers(INT64_MIN, INT64_MAX),
    event_id=texts,
    trace_id=texts,
)
apply_commands = st.builds(
    ApplyCommand,
    target=st.sampled_from(ApplyTarget),
    object=texts,
    operation=st.sampled_from(ApplyOperation),
    source=st.sampled_from(Source),
    source_event_id=texts,
    source_commit_ts=utc_times,
    sfid=opt_texts,
    local_key=opt_texts,
    values=value_maps,
    fields=st.lists(texts, max_size=5),
    origin=opt_texts,
    attempt=st.integers(0, 2**31 - 1),
    command_id=texts,
    trace_id=texts,
)





def assert_same_record(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    for f in dataclasses.fields(want):
        g, w = getattr(got, f.name), getattr(want, f.name)
        if f.name == "values":
            assert g.keys() == w.keys()
            for k in w:
                assert same_value(g[k], w[k]), (k, g[k], w[k])
        else:
            assert g == w and type(g) is type(w), (f.name, g, w)


def sample_records() -> list[Any]:
    return [
        ChangeEvent(
            source=Source.POSTGRES,
            object="Contact",
            entity="public.contacts",
            operation=Operation.CREATE,
            commit_ts=NOW,
            source_position="77",
            local_key="42",
            changed_fields=["email", "balance", "photo"],
            values={"email": "a@example.com", "balance": Decimal("12.30"), "photo": b"\x89PNG"},
            origin=None,
            transaction_key="741",
            sequence=0,
        ),
        ApplyCommand(
            target=ApplyTarget.SALESFORCE,
            object="Contact",
            operation=ApplyOperation.UPSERT,
            source=Source.POSTGRES,
            source_event_id="e-1",
            source_commit_ts=NOW,
            local_key="42",
            values={"Email": "a@example.com", "Balance__c": Decimal("12.30")},
            fields=["Email", "Balance__c"],
            origin="sfsync",
            attempt=1,
        ),
        RecordStatus(
            key="Contact:local:42",
            object="Contact",
            direction=Direction.OUTBOUND,
            state=SyncState.IN_QUEUE,
            local_key="42",
            updated_ts=NOW,
        ),
        MetricSample(role="consumer-salesforce", name="sfsync_api_calls_total", value=3.0, labels={}, ts=NOW),
        Alert(
            kind=AlertKind.API_BUDGET,
            severity=AlertSeverity.WARNING,
            message="80% of the daily API budget spent",
            details={"used": "80000", "max": "100000"},
            ts=NOW,
        ),
        ControlRecord(direction=Direction.OUTBOUND, action=ControlAction.RESUME, requested_by="ops", ts=NOW),
        Link(kind=LinkKind.PULL, object="Contact", sfid="003000000000001AAA", local_key="42", ts=NOW),
        SinkAck(direction=Direction.OUTBOUND, sink="salesforce", instance="host-2-cd34", applied={"0": 3, "1": 0},
                beat_ms=5_000, ts=NOW),
    ]


@pytest.fixture(scope="module", params=["single-object", "confluent"])
def pair(request: pytest.FixtureRequest) -> tuple[Serde, Serde]:
    """(writer, reader): the reader shares the writer's mock registry but none of its caches."""
    if request.param == "single-object":
        return Serde(), Serde()
    writer = Serde(f"mock://{request.node.name}")
    return writer, Serde(registry_client=writer.registry)


@pytest.fixture(scope="module")
def single() -> Serde:
    return Serde()


@pytest.fixture(scope="module")
def registry_serde() -> Serde:
    """A registry serde whose (mock) registry holds no schemas at all."""
    return Serde("mock://empty-registry")


def zigzag_varint(n: int) -> bytes:
    """Avro's long encoding: zigzag then little-endian base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if z < 0x80:
            out.append(z)
            return bytes(out)
        out.append((z & 0x7F) | 0x80)
        z >>= 7


# --------------------------------------------------------------------------- schemas & fingerprints

# Apache Avro share/test/data/schema-tests.txt: canonical form -> CRC-64-AVRO as a signed long
SPEC_FINGERPRINTS = [
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"long"', -3434872931120570953),
    ('"string"', -8142146995180207161),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    ('{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}', 7843277075252814651),
]


@pytest.mark.parametrize(("canonical", "signed"), SPEC_FINGERPRINTS)
def test_crc64_avro_matches_spec_vectors(canonical: str, signed: int) -> None:
    assert crc64_avro(canonical.encode()) == signed % 2**64


@pytest.mark.parametrize("name", RECORD_SCHEMAS)
def test_schema_fingerprint_is_fastavro_crc64_little_endian(name: str) -> None:
    info = schema_info(name)
    # fastavro returns the Rabin fingerprint as little-endian hex, as single-object encoding stores it
    assert fastavro_fingerprint(info.canonical, "CRC-64-AVRO") == struct.pack("<Q", info.fingerprint).hex()
    assert info.header == b"\xc3\x01" + struct.pack("<Q", info.fingerprint)
    assert fastavro.schema.to_parsing_canonical_form(info.schema) == info.canonical


def test_schemas_are_self_contained_and_distinct() -> None:
    infos = [schema_info(cls) for cls in RECORD_TYPES]
    assert [i.fullname for i in infos] == [cls.AVRO_NAME for cls in RECORD_TYPES]
    assert len({i.fingerprint for i in infos}) == len(infos)
    for info in infos:
        # parses on its own, without common.avsc: shared types were inlined
        fastavro.parse_schema(json.loads(info.schema_str), {})
        assert info.fullname.startswith("io.sfsync.")
        assert load_schema(info.name) is info.parsed
    # FieldValue is defined once (first use) and referenced afterwards
    for info in infos[:2]:
        assert info.canonical.count('{"name":"io.sfsync.FieldValue","type":"record"') == 1
    assert schema_info(ChangeEvent) is schema_info("io.sfsync.ChangeEvent")
    with pytest.raises(KeyError, match="unknown sfsync schema 'nope'"):
        schema_info("nope")


def test_field_value_union_in_schema() -> None:
    fv = schema_info("apply_command").schema["fields"][6]["type"]["values"]
    assert fv["name"] == "io.sfsync.FieldValue"
    assert fv["fields"][0]["type"] == ["null", "boolean", "long", "double", "string", "bytes"]
    assert fv["fields"][1]["type"][1]["symbols"] == ["decimal", "date", "datetime", "time", "bigint"]


def test_single_object_byte_layout_by_hand(single: Serde) -> None:
    record = ControlRecord(
        direction=Direction.INBOUND,
        action=ControlAction.PAUSE,
        requested_by="ops",
        reason=None,
        ts=datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
    )
    canonical = (
        '{"name":"io.sfsync.ControlRecord","type":"record","fields":['
        '{"name":"direction","type":{"name":"io.sfsync.Direction","type":"enum","symbols":["inbound","outbound"]}},'
        '{"name":"action","type":{"name":"io.sfsync.ControlAction","type":"enum","symbols":["pause","resume"]}},'
        '{"name":"requested_by","type":"string"},'
        '{"name":"reason","type":["null","string"]},'
        '{"name":"ts","type":"long"}]}'
    )
    assert schema_info("control_record").canonical == canonical
    fp = bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO"))  # little-endian per the spec
    body = (
        b"\x00"  # direction: enum index 0 (inbound)
        + b"\x00"  # action: enum index 0 (pause)
        + b"\x06ops"  # requested_by: length 3 (zigzag 6) + UTF-8
        + b"\x00"  # reason: union branch 0 (null)
        + b"\x80\x89\x7a"  # ts: 1_000_000 micros, zigzag 2_000_000 as a base-128 varint
    )
    assert zigzag_varint(3) == b"\x06" and zigzag_varint(1_000_000) == b"\x80\x89\x7a"
    expected = b"\xc3\x01" + fp + body
    assert single.encode(record, "sfsync.control") == expected
    assert single.decode(expected, ControlRecord) == record


def test_confluent_framing_layout() -> None:
    writer = Serde("mock://layout")
    record = sample_records()[5]
    data = writer.encode(record, "sfsync.control")
    schema_id = writer.registry.lookup_schema(  # type: ignore[union-attr]
        "sfsync.control-value", Schema(schema_info(ControlRecord).schema_str, "AVRO")
    ).schema_id
    assert data[:5] == b"\x00" + struct.pack(">I", schema_id)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, load_schema(ControlRecord), record.to_avro())
    assert data[5:] == body.getvalue()
    assert writer.wire_format == "confluent" and Serde().wire_format == "single-object"
    # TopicNameStrategy: same record on another topic -> another subject
    writer.encode(record, "other.topic")
    assert set(writer.registry.get_subjects()) == {"sfsync.control-value", "other.topic-value"}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("index", range(len(RECORD_TYPES)), ids=[c.__name__ for c in RECORD_TYPES])
def test_every_record_type_round_trips(pair: tuple[Serde, Serde], index: int) -> None:
    writer, reader = pair
    record = sample_records()[index]
    data = writer.encode(record, TOPIC)
    assert reader.decode(data, type(record), TOPIC) == record
    assert reader.decode_any(data) == record


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=change_events)
def test_change_event_round_trip(pair: tuple[Serde, Serde], event: ChangeEvent) -> None:
    writer, reader = pair
    assert_same_record(reader.decode(writer.encode(event, TOPIC), ChangeEvent, TOPIC), event)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=apply_commands)
def test_apply_command_round_trip(pair: tuple[Serde, Serde], command: ApplyCommand) -> None:
    writer, reader = pair
    assert_same_record(reader.decode(writer.encode(command, "sfsync.apply.local"), ApplyCommand), command)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=field_values)
def test_each_value_type_round_trips_on_the_wire(pair: tuple[Serde, Serde], value: Any) -> None:
    writer, reader = pair
    event = dataclasses.replace(sample_records()[0], values={"f": value}, changed_fields=["f"])
    got = reader.decode(writer.encode(event, TOPIC), ChangeEvent).values["f"]
    assert same_value(got, value)


def test_reader_decodes_both_framings() -> None:
    registry_serde = Serde("mock://both")
    record = sample_records()[0]
    assert registry_serde.decode(Serde().encode(record, TOPIC), ChangeEvent) == record
    assert registry_serde.decode(registry_serde.encode(record, TOPIC), ChangeEvent) == record


def test_registry_reader_resolves_older_writer_schema() -> None:
    """A payload written with an older ChangeEvent (no entity/transaction_key/sequence) still reads."""
    writer = Serde("mock://evolution")
    old = copy.deepcopy(schema_info(ChangeEvent).schema)
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("entity", "transaction_key", "sequence")]
    schema_id = writer.registry.register_schema(f"{TOPIC}-value", Schema(json.dumps(old), "AVRO"))  # type: ignore[union-attr]
    record = dataclasses.replace(sample_records()[0], entity=None, transaction_key=None, sequence=None)
    body = io.BytesIO()
    d = record.to_avro()
    for k in ("entity", "transaction_key", "sequence"):
        del d[k]
    fastavro.schemaless_writer(body, fastavro.parse_schema(old, {}), d)
    data = b"\x00" + struct.pack(">I", schema_id) + body.getvalue()
    assert Serde(registry_client=writer.registry).decode(data, ChangeEvent) == record


def registry_payload(serde: Serde, subject: str, schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """Frame ``datum`` written with ``schema`` (registered under ``subject``) like a foreign producer would."""
    schema_id = serde.registry.register_schema(subject, Schema(json.dumps(schema), "AVRO"))  # type: ignore[union-attr]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema, {}), datum)
    return b"\x00" + struct.pack(">I", schema_id) + body.getvalue()


def test_registry_reader_drops_unknown_writer_fields() -> None:
    writer = Serde("mock://newer-fields")
    newer = copy.deepcopy(schema_info(ApplyCommand).schema)
    newer["fields"].append({"name": "priority", "type": "int", "default": 0})
    command = sample_records()[1]
    data = registry_payload(writer, "sfsync.apply.salesforce-value", newer, {**command.to_avro(), "priority": 5})
    assert Serde(registry_client=writer.registry).decode(data, ApplyCommand) == command


def test_registry_writer_missing_required_field_is_a_mismatch() -> None:
    writer = Serde("mock://missing-field")
    older = copy.deepcopy(schema_info(ControlRecord).schema)
    older["fields"] = [f for f in older["fields"] if f["name"] != "requested_by"]
    datum = sample_records()[5].to_avro()
    del datum["requested_by"]
    data = registry_payload(writer, "sfsync.control-value", older, datum)
    reason = reason_of(Serde(registry_client=writer.registry), data, ControlRecord)
    assert reason == (
        "schema mismatch: schema id 1 has no field 'requested_by' and io.sfsync.ControlRecord gives no default"
    )


def test_unknown_alert_kind_from_newer_writer_becomes_other() -> None:
    writer = Serde("mock://enum-default")
    newer = copy.deepcopy(schema_info(Alert).schema)
    newer["fields"][1]["type"]["symbols"].append("disk_full")
    schema_id = writer.registry.register_schema("sfsync.alerts-value", Schema(json.dumps(newer), "AVRO"))  # type: ignore[union-attr]
    alert = sample_records()[4]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(newer, {}), {**alert.to_avro(), "kind": "disk_full"})
    got = Serde(registry_client=writer.registry).decode(b"\x00" + struct.pack(">I", schema_id) + body.getvalue(), Alert)
    assert got.kind is AlertKind.OTHER
    assert got.message == alert.message


# --------------------------------------------------------------------------- garbage


def reason_of(serde: Serde, data: bytes, record_type: Any = ChangeEvent) -> str:
    with pytest.raises(DecodeError) as excinfo:
        serde.decode(data, record_type)
    assert str(excinfo.value) == excinfo.value.reason
    return excinfo.value.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_random_bytes_raise_decode_error(single: Serde, registry_serde: Serde, data: bytes) -> None:
    for serde in (single, registry_serde):
        for cls in RECORD_TYPES:
            with pytest.raises(DecodeError):
                serde.decode(data, cls)
        with pytest.raises(DecodeError):
            serde.decode_any(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cls=st.sampled_from(RECORD_TYPES), body=st.binary(max_size=300))
def test_valid_header_random_body_never_crashes(single: Serde, cls: Any, body: bytes) -> None:
    try:
        record = single.decode(schema_info(cls).header + body, cls)
    except DecodeError as exc:
        assert exc.reason
    else:
        assert isinstance(record, cls)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_payload_never_crashes(pair: tuple[Serde, Serde], data: st.DataObject) -> None:
    writer, reader = pair
    payload = bytearray(writer.encode(sample_records()[data.draw(st.integers(0, 5))], TOPIC))
    pos = data.draw(st.integers(0, len(payload) - 1))
    payload[pos] = data.draw(st.integers(0, 255))
    try:
        reader.decode_any(bytes(payload))
    except DecodeError as exc:
        assert exc.reason


def test_empty_payload(single: Serde) -> None:
    assert reason_of(single, b"") == "empty payload"


def test_every_truncation_is_a_decode_error(pair: tuple[Serde, Serde]) -> None:
    writer, reader = pair
    header = 10 if writer.wire_format == "single-object" else 5
    for record in sample_records():
        data = writer.encode(record, TOPIC)
        for n in range(len(data)):
            reason = reason_of(reader, data[:n], type(record))
            if n == 0:
                assert reason == "empty payload"
            elif n < header and not (n == 1 and header == 10):
                assert reason.startswith("truncated header"), reason
            elif n >= header:
                assert reason.startswith("truncated payload"), reason


def test_trailing_bytes(single: Serde) -> None:
    data = single.encode(sample_records()[0], TOPIC) + b"\x00\x01"
    assert reason_of(single, data) == "2 trailing bytes after the io.sfsync.ChangeEvent body"


def test_unknown_fingerprint(single: Serde) -> None:
    fp = 0x0123456789ABCDEF
    data = b"\xc3\x01" + struct.pack("<Q", fp) + b"\x00" * 20
    reason = reason_of(single, data)
    assert reason.startswith("unknown fingerprint 0x0123456789abcdef")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xc3\x02" + b"\x00" * 12, "wrong magic C3 02: expected C3 01 (Avro single-object)"),
        (b"\xc3", "wrong magic C3: expected C3 01 (Avro single-object)"),
        (b'{"event_id": "x"}', "wrong magic byte 0x7B: expected C3 01 (Avro single-object) or 00"),
        (b"\xc3\x01\x00\x00", "truncated header: 4 bytes, single-object encoding needs 10"),
    ],
)
def test_wrong_magic_and_short_headers(single: Serde, data: bytes, expected: str) -> None:
    assert reason_of(single, data).startswith(expected)


def test_registry_framing_without_registry(single: Serde) -> None:
    data = b"\x00" + struct.pack(">I", 7) + b"\x00"
    assert reason_of(single, data) == "registry framing (magic 00, schema id 7) but no schema registry is configured"


def test_unknown_schema_id(registry_serde: Serde) -> None:
    data = b"\x00" + struct.pack(">I", 999) + b"\x00\x00"
    assert reason_of(registry_serde, data) == "unknown schema id 999: not in the schema registry"
    assert reason_of(registry_serde, b"\x00\x00\x00") == "truncated header: 3 bytes, registry framing needs 5"


def test_non_avro_schema_id() -> None:
    serde = Serde("mock://json-schema")
    schema_id = serde.registry.register_schema("x-value", Schema('{"type": "object"}', "JSON"))  # type: ignore[union-attr]
    data = b"\x00" + struct.pack(">I", schema_id) + b"\x00"
    assert reason_of(serde, data) == f"schema id {schema_id} is a JSON schema, not Avro"


def test_schema_mismatch(pair: tuple[Serde, Serde]) -> None:
    writer, reader = pair
    data = writer.encode(sample_records()[1], TOPIC)  # an ApplyCommand
    reason = reason_of(reader, data, ChangeEvent)
    assert reason.startswith("schema mismatch: payload holds io.sfsync.ApplyCommand (")
    assert reason.endswith("), expected io.sfsync.ChangeEvent")


def test_topic_is_named_in_reason(single: Serde) -> None:
    with pytest.raises(DecodeError, match=r"^empty payload \(topic sfsync.status\)$"):
        single.decode(b"", RecordStatus, "sfsync.status")


def test_invalid_field_content_is_a_decode_error(single: Serde) -> None:
    d = sample_records()[0].to_avro()
    d["values"] = {"balance": {"value": "twelve", "logical": "decimal"}}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, load_schema(ChangeEvent), d)
    reason = reason_of(single, schema_info(ChangeEvent).header + body.getvalue())
    assert reason.startswith("invalid io.sfsync.ChangeEvent content: ValueError: field 'balance'")


def test_invalid_utf8_is_a_decode_error(single: Serde) -> None:
    record = dataclasses.replace(sample_records()[5], requested_by="ab")
    data = bytearray(single.encode(record, "sfsync.control"))
    at = data.index(b"ab")
    data[at : at + 2] = b"\xff\xfe"
    assert reason_of(single, bytes(data), ControlRecord).startswith("corrupt io.sfsync.ControlRecord body")


def test_non_bytes_payload(single: Serde) -> None:
    assert reason_of(single, "text") == "payload is str, not bytes"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- registry failures, encode errors


class UnavailableRegistry:
    """Stands in for a registry that answers 503 to everything."""

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Any:
        raise SchemaRegistryError(503, 50301, "service unavailable")

    def register_schema(self, subject: str, schema: Any, *args: Any, **kwargs: Any) -> int:
        raise SchemaRegistryError(503, 50301, "service unavailable")


def test_registry_outage_is_not_a_decode_error() -> None:
    serde = Serde(registry_client=UnavailableRegistry())  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="schema id 3"):
        serde.decode(b"\x00" + struct.pack(">I", 3) + b"\x00", ChangeEvent)
    with pytest.raises(RegistryError, match=f"subject {TOPIC}-value"):
        serde.encode(sample_records()[0], TOPIC)


def test_lookup_only_mode_refuses_unregistered_schema() -> None:
    serde = Serde("mock://lookup-only", auto_register=False)
    with pytest.raises(EncodeError, match=f"schema registry refused io.sfsync.ChangeEvent for subject {TOPIC}-value"):
        serde.encode(sample_records()[0], TOPIC)
    assert isinstance(SchemaRegistryClient.new_client({"url": "mock://x"}), SchemaRegistryClient)


def test_unencodable_record_raises_encode_error(single: Serde) -> None:
    with pytest.raises(EncodeError, match=r"cannot encode io\.sfsync\.ChangeEvent"):
        single.encode(dataclasses.replace(sample_records()[0], object="\ud800"), TOPIC)  # lone surrogate


# --------------------------------------------------------------------------- schema folder


@pytest.fixture
def fresh_schema_cache() -> Iterator[None]:
    schema_dir.cache_clear()
    serde_mod._catalogue.cache_clear()
    yield
    schema_dir.cache_clear()
    serde_mod._catalogue.cache_clear()


def test_schema_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_schema_cache: None) -> None:
    repo_dir = schema_dir()
    assert repo_dir == Path(serde_mod.__file__).resolve().parent.parent / "schemas"
    schema_dir.cache_clear()
    serde_mod._catalogue.cache_clear()
    for f in repo_dir.glob("*.avsc"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setenv("SFSYNC_SCHEMA_DIR", str(tmp_path))
    assert schema_dir() == tmp_path
    assert Serde().decode(Serde().encode(sample_records()[3], "m"), MetricSample) == sample_records()[3]


def test_schema_dir_env_without_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_schema_cache: None
) -> None:
    monkeypatch.setenv("SFSYNC_SCHEMA_DIR", str(tmp_path))
    with pytest.raises(SchemaNotFoundError, match=rf"SFSYNC_SCHEMA_DIR={tmp_path} does not hold common.avsc"):
        schema_dir()
