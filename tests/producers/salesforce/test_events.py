"""CDC message -> envelopes, repair/catch-up queries and stored positions (pure), and the values of
events from the emulator through the real producer and broker."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from producers.salesforce.events import (
    OffsetRecord,
    catchup_query,
    catchup_since,
    change_events,
    channel_for,
    is_invalid_replay,
    latest_offsets,
    offset_key,
    parse_event,
    query_fields,
    queued_status,
    record_query,
    snapshot_events,
    start_replay_id,
)
from sfsync.config import ObjectMapping
from sfsync.records import ChangeEvent, Direction, Operation, RecordStatus, Source, SyncState
from sfsync.salesforce.values import ObjectTypes, is_own_origin

TYPES = ObjectTypes.from_describe({"name": "Account", "fields": [
    {"name": "Id", "type": "id"}, {"name": "IsDeleted", "type": "boolean"},
    {"name": "SystemModstamp", "type": "datetime"}, {"name": "LastModifiedDate", "type": "datetime"},
    {"name": "Name", "type": "string"}, {"name": "NumberOfEmployees", "type": "int"},
    {"name": "Phone", "type": "phone"}, {"name": "Local_Id__c", "type": "string"},
    {"name": "BillingCity", "type": "string", "compoundFieldName": "BillingAddress"},
    {"name": "BillingAddress", "type": "address"},
]})
MAPPING = ObjectMapping.model_validate({"table": "accounts", "fields": [
    {"column": "name", "field": "Name"}, {"column": "city", "field": "BillingCity"},
    {"column": "addr", "field": "BillingAddress"}, {"column": "gone", "field": "Gone__c"}]})


def _message(change_type: str, ids: list[str], **body: object) -> dict[str, object]:
    return {"channel": "/data/AccountChangeEvent", "data": {
        "schema": "x", "event": {"replayId": 42},
        "payload": {"ChangeEventHeader": {
            "entityName": "Account", "recordIds": ids, "changeType": change_type,
            "changeOrigin": "com/salesforce/api/rest/59.0;client=sfsync", "transactionKey": "tk",
            "sequenceNumber": 3, "commitTimestamp": 1714156685000, "changedFields": ["Name", "BillingAddress.City",
                                                                                     "Phone"],
            "nulledFields": ["Phone"]}, **body}}}


def test_update_event_one_envelope_per_record() -> None:
    ev = parse_event(_message("UPDATE", ["001A", "001B"], Name="N", BillingAddress={"City": "Paris"}, Phone=None,
                              Local_Id__c="k1"))
    out = change_events(ev, TYPES, "Local_Id__c")
    assert [e.sfid for e in out] == ["001A", "001B"]
    first = out[0]
    assert first.operation is Operation.UPDATE and first.object == "Account"
    assert first.values == {"Name": "N", "BillingCity": "Paris", "Phone": None, "Local_Id__c": "k1"}
    assert first.changed_fields == ["Name", "BillingCity", "Phone"]
    assert first.commit_ts == datetime(2024, 4, 26, 18, 38, 5, tzinfo=UTC)
    assert first.source_position == "42" and first.transaction_key == "tk" and first.sequence == 3
    assert first.origin == "com/salesforce/api/rest/59.0;client=sfsync" and first.local_key == "k1"
    assert first.event_id != out[1].event_id
    assert change_events(ev, TYPES)[0].event_id == first.event_id  # replayed event, same id


def test_delete_carries_no_values_and_bad_messages_raise() -> None:
    ev = parse_event(_message("DELETE", ["001A"], Name="ignored"))
    assert change_events(ev, TYPES)[0].values == {}
    with pytest.raises(ValueError):
        parse_event({"channel": "/data/AccountChangeEvent", "data": {"payload": {}}})
    with pytest.raises(ValueError):
        change_events(parse_event(_message("GAP_UPDATE", ["001A"])), TYPES)


def test_queries() -> None:
    fields = query_fields(TYPES, MAPPING)
    assert fields == ["Id", "IsDeleted", "SystemModstamp", "LastModifiedDate", "Local_Id__c", "Name", "BillingCity"]
    assert record_query("Account", ["Id"], ["001A", "it's"]) == \
        "SELECT Id FROM Account WHERE Id IN ('001A', 'it\\'s')"
    since = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert catchup_query("Account", ["Id", "Name"], since) == (
        "SELECT Id, Name FROM Account WHERE SystemModstamp >= 2024-05-01T12:00:00.000Z ORDER BY SystemModstamp ASC")
    assert catchup_since(1714156685000, 0, margin_ms=5000) == datetime(2024, 4, 26, 18, 38, 0, tzinfo=UTC)
    assert catchup_since(None, 1714156685000, margin_ms=0) == datetime(2024, 4, 26, 18, 38, 5, tzinfo=UTC)


def test_snapshot_rows() -> None:
    rows = [
        {"attributes": {"type": "Account"}, "Id": "001A", "IsDeleted": False, "Name": "A", "Local_Id__c": "1",
         "SystemModstamp": "2024-05-01T10:00:00.000+0000"},
        {"Id": "001B", "IsDeleted": True, "Name": "B", "SystemModstamp": "2024-05-01T11:00:00.000+0000"},
    ]
    out = snapshot_events("Account", rows, TYPES, channel="/data/AccountChangeEvent", position="7",
                          fallback_ms=0, external_id_field="Local_Id__c", requested_ids=["001A", "001B", "001C"])
    assert [(e.sfid, e.operation) for e in out] == [
        ("001A", Operation.SNAPSHOT), ("001B", Operation.DELETE), ("001C", Operation.DELETE)]
    assert out[0].values["Name"] == "A" and "IsDeleted" not in out[0].values and out[0].local_key == "1"
    assert out[0].commit_ts == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert out[1].values == {}


def test_offsets() -> None:
    ch = channel_for("Account")
    assert ch == "/data/AccountChangeEvent" and channel_for("Invoice__c") == "/data/Invoice__ChangeEvent"
    rec = OffsetRecord(ch, 5, 1000)
    assert OffsetRecord.decode(rec.encode()) == rec
    pairs = [(offset_key(ch).encode(), OffsetRecord(ch, 4, 900).encode()), (b"other", b"x"),
             (offset_key(ch).encode(), rec.encode()), (offset_key("/data/X").encode(), b"garbage"),
             (offset_key("/data/Y").encode(), OffsetRecord("/data/Y", 1, 1).encode()),
             (offset_key("/data/Y").encode(), None)]
    assert latest_offsets(pairs) == {ch: rec}
    assert start_replay_id(rec, "latest") == 5
    assert start_replay_id(None, "latest") == -1 and start_replay_id(None, "all") == -2
    assert is_invalid_replay(400, 5) and not is_invalid_replay(400, -1) and not is_invalid_replay(403, 5)


# --------------------------------------------------------------------------- values (issue 10, item 11)


def test_ids_in_events_are_normalised_to_18_characters() -> None:
    types = ObjectTypes.from_describe({"name": "Contact", "fields": [
        {"name": "Id", "type": "id"}, {"name": "AccountId", "type": "reference"},
        {"name": "LastName", "type": "string"}, {"name": "Geo__Latitude__s", "type": "double",
                                                 "compoundFieldName": "Geo__c"}]})
    message = _message("UPDATE", ["0038d00000004Xy", "0038d00000004XzAAI"], AccountId="0018d00000003D7",
                       LastName="0018d00000003D7", Geo__c={"Latitude": Decimal("123.456789012345678")})
    ev = parse_event(message)
    assert ev.record_ids == ["0038d00000004XyAAI", "0038d00000004XzAAI"]
    out = change_events(ev, types)
    assert [e.sfid for e in out] == ev.record_ids
    # a reference field is an id; a string field that happens to look like one is left alone
    assert out[0].values["AccountId"] == "0018d00000003D7AAI" and out[0].values["LastName"] == "0018d00000003D7"
    assert out[0].values["Geo__Latitude__s"] == Decimal("123.456789012345678")
    rows = [{"Id": "0018d00000003D7", "SystemModstamp": "2024-05-01T10:00:00.000+0000", "Name": "A"}]
    snap = snapshot_events("Account", rows, TYPES, channel="/data/AccountChangeEvent", position="7", fallback_ms=0,
                           requested_ids=["0018d00000003D7AAI", "0018d00000003D8"])
    assert [(e.sfid, e.operation) for e in snap] == [
        ("0018d00000003D7AAI", Operation.SNAPSHOT), ("0018d00000003D8AAI", Operation.DELETE)]


def test_a_15_character_record_id_from_cometd_is_keyed_by_its_18_character_form(
        org: Any, kafka_config: dict[str, Any]) -> None:
    """Failed before the fix: an event naming a record (and a reference) by the 15-character form made an
    envelope keyed ``Contact:<15 characters>``, a different record to the processor than the same contact's
    other changes (keyed by the 18-character form Salesforce normally sends)."""
    import threading
    import time

    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from producers.salesforce import cdc
    from sfsync.config import build_config
    from sfsync.kafka.clients import make_consumer
    from sfsync.kafka.topics import TopicNames, apply_topics
    from sfsync.records import ChangeEvent, record_key
    from sfsync.serde import Serde

    cfg = build_config({
        "kafka": kafka_config,
        "salesforce": {"login_url": org.url, "ca_bundle": str(org.ca_path),
                       "auth": {"flow": "password", "client_id": "sfsync", "client_secret": "secret",
                                "username": org.username, "password": org.password}},
        "objects": {"Account": {"table": "accounts", "fields": [{"column": "name", "field": "Name"}]},
                    "Contact": {"table": "contacts", "fields": [
            {"column": "last_name", "field": "LastName"},
            {"column": "account_id", "field": "AccountId", "reference": "Account"}]}},
    })
    apply_topics(cfg)
    org.control.config(connect_timeout_ms=2000)
    sf: Any = org.salesforce()
    account = sf.Account.create({"Name": "Parent"})["id"]
    contact = sf.Contact.create({"LastName": "Kid", "AccountId": account})["id"]
    org.control.emit_raw_event(channel_for("Contact"), {
        "ChangeEventHeader": {"entityName": "Contact", "recordIds": [contact[:15]], "changeType": "UPDATE",
                              "commitTimestamp": int(time.time() * 1000), "changedFields": ["LastName"],
                              "changeOrigin": "", "transactionKey": "t", "sequenceNumber": 1},
        "LastName": "Kid 2", "AccountId": account[:15]})
    stop = threading.Event()
    producer = threading.Thread(target=cdc.run, args=(cfg, stop), kwargs={"start": "all"}, daemon=True)
    producer.start()
    topic = TopicNames(cfg.kafka.topic_prefix).changes_inbound
    consumer = make_consumer(cfg.kafka, "ids-reader", "ids-reader")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(cfg.kafka.partitions)])
    serde = Serde.from_config(cfg.kafka)
    got: list[tuple[str, ChangeEvent]] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < 3 and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.2):
                key, value = m.key(), m.value()
                if m.error() is None and isinstance(key, bytes) and isinstance(value, bytes):
                    got.append((key.decode(), serde.decode(value, ChangeEvent, topic)))
    finally:
        consumer.close()
        stop.set()
        producer.join(30)
    assert not producer.is_alive()
    contacts = [(key, e) for key, e in got if e.object == "Contact"]
    assert len(contacts) == 2, got
    assert {key for key, _ in contacts} == {record_key("Contact", contact)}
    assert [(e.sfid, e.values["AccountId"]) for _, e in contacts] == [(contact, account), (contact, account)]


def test_queued_status_for_a_change_and_none_for_an_echo_or_a_keyless_change() -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    change = ChangeEvent(source=Source.SALESFORCE, object="Account", operation=Operation.UPDATE,
                         sfid="001000000000001AAA", local_key="a1", commit_ts=now, source_position="5",
                         origin="com/salesforce/api/rest/60.0")
    assert queued_status(change, "sfsync", now) == RecordStatus(
        key="Account:001000000000001AAA", object="Account", direction=Direction.INBOUND, state=SyncState.IN_QUEUE,
        sfid="001000000000001AAA", local_key="a1", last_attempt_ts=None, updated_ts=now)
    for origin in ("client=sfsync", "com/salesforce/api/rest/60.0;client=sfsync", "sfsync"):
        assert is_own_origin(origin, "sfsync")
        assert queued_status(replace(change, origin=origin), "sfsync", now) is None
    assert not is_own_origin("client=sfsync-other", "sfsync") and not is_own_origin(None, "sfsync")
    assert queued_status(replace(change, origin="client=sfsync"), "mine", now) is not None
    assert queued_status(replace(change, sfid="", local_key=None), "sfsync", now) is None  # no key: dead-lettered
