"""The CDC producer against the real emulator, the real broker and the real libraries (no mocks).

Each test resets the emulator org, uses its own topic prefix, runs ``producers.salesforce.cdc.run`` in
a thread and reads what arrived on ``changes.inbound`` / ``alerts`` / ``offsets`` (read_committed).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processors.mapping import is_own_origin
from producers.salesforce import cdc
from producers.salesforce.events import OffsetRecord, channel_for, offset_key
from sfsync import eventloop
from sfsync.config import SfsyncConfig, build_config
from sfsync.devstack.emulator import EmulatorHandle
from sfsync.failures import parse_failure_headers
from sfsync.kafka.clients import make_consumer
from sfsync.kafka.compacted import read_compacted
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.operations.alerts import DownWatch
from sfsync.records import (
    Alert,
    AlertKind,
    ChangeEvent,
    Direction,
    Operation,
    RecordStatus,
    Source,
    SyncState,
    record_key,
)
from sfsync.serde import Serde

SFSYNC_HEADERS = {"Sforce-Call-Options": "client=sfsync"}


def _config(emulator: EmulatorHandle, kafka_config: dict[str, Any], **salesforce: Any) -> SfsyncConfig:
    return build_config({
        "kafka": kafka_config,
        "salesforce": {
            "login_url": emulator.url,
            "ca_bundle": str(emulator.ca_path),
            "auth": {"flow": "password", "client_id": "sfsync", "client_secret": "secret",
                     "username": emulator.username, "password": emulator.password},
            **salesforce,
        },
        "objects": {
            "Account": {"table": "accounts", "fields": [
                {"column": "name", "field": "Name"},
                {"column": "phone", "field": "Phone"},
                {"column": "employees", "field": "NumberOfEmployees"},
                {"column": "revenue", "field": "AnnualRevenue"},
                {"column": "city", "field": "BillingCity"},
            ]},
            "Contact": {"table": "contacts", "fields": [
                {"column": "last_name", "field": "LastName"},
                {"column": "first_name", "field": "FirstName"},
                {"column": "birthdate", "field": "Birthdate"},
                {"column": "opted_out", "field": "HasOptedOutOfEmail"},
                {"column": "account_id", "field": "AccountId", "reference": "Account"},
            ]},
        },
    })


@pytest.fixture
def org(org: EmulatorHandle) -> EmulatorHandle:
    """The reset org (root conftest) with a short long-poll, so subscribers notice changes quickly."""
    org.control.config(connect_timeout_ms=2000)
    return org


@pytest.fixture
def cfg(org: EmulatorHandle, kafka_config: dict[str, Any]) -> SfsyncConfig:
    config = _config(org, kafka_config)
    reports = apply_topics(config)
    assert all(r.state.value in ("created", "ok") for r in reports), reports
    return config


class Running:
    """The producer in a thread; ``stop()`` joins it and re-raises what it raised."""

    def __init__(self, cfg: SfsyncConfig, start: str = "all") -> None:
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(cfg, start), daemon=True)
        self.thread.start()

    def _run(self, cfg: SfsyncConfig, start: str) -> None:
        try:
            cdc.run(cfg, self.stop_event, start=start)
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "producer did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def running(cfg: SfsyncConfig) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(config: SfsyncConfig | None = None, start: str = "all") -> Running:
        r = Running(config or cfg, start)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.stop()


class Reader:
    """A read_committed reader of one topic from the beginning (no consumer group)."""

    def __init__(self, cfg: SfsyncConfig, topic: str) -> None:
        self.topic = topic
        self.consumer: Consumer = make_consumer(cfg.kafka, f"reader-{topic}", "test-reader")
        md = self.consumer.list_topics(topic, timeout=10)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        self.messages: list[Any] = []

    def read(self, until: Callable[[list[Any]], bool], timeout: float = 15.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not until(self.messages) and time.monotonic() < deadline:
            for msg in self.consumer.consume(500, 0.1):
                if msg.error() is None:
                    self.messages.append(msg)
        return self.messages

    def settle(self, seconds: float = 0.6) -> list[Any]:
        """Read whatever else arrives within ``seconds``."""
        return self.read(lambda _m: False, seconds)

    def close(self) -> None:
        self.consumer.close()


def _events(reader: Reader, n: int, timeout: float = 15.0) -> list[ChangeEvent]:
    serde = Serde()
    msgs = reader.read(lambda m: len(m) >= n, timeout)
    return sorted((serde.decode(m.value(), ChangeEvent, reader.topic) for m in msgs), key=_order)


def _order(e: ChangeEvent) -> tuple[int, int]:
    """Capture order: the topic's partitions interleave, replay ids (and sequence numbers) do not."""
    position = int(e.source_position) if e.source_position.isdigit() else 0
    return position, e.sequence or 0


def _read_until(reader: Reader, pred: Callable[[list[ChangeEvent]], bool], timeout: float = 15.0) -> list[ChangeEvent]:
    serde = Serde()

    def decoded(msgs: list[Any]) -> list[ChangeEvent]:
        return [serde.decode(m.value(), ChangeEvent, reader.topic) for m in msgs]

    return sorted(decoded(reader.read(lambda m: pred(decoded(m)), timeout)), key=_order)


@pytest.fixture
def inbound(cfg: SfsyncConfig) -> Iterator[Reader]:
    reader = Reader(cfg, TopicNames(cfg.kafka.topic_prefix).changes_inbound)
    yield reader
    reader.close()


def _wait_subscribed(org: EmulatorHandle, clients: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if org.control.stats().get("cometd_clients", 0) >= clients:
            return
        time.sleep(0.05)
    raise AssertionError("the producer did not subscribe")


def test_crud_arrive_as_typed_envelopes(org: EmulatorHandle, cfg: SfsyncConfig, running: Any,
                                        inbound: Reader) -> None:
    sf = org.salesforce()
    producer = running()
    acc = sf.Account.create({"Name": "Acme", "NumberOfEmployees": 12, "AnnualRevenue": 1234.5,
                             "Phone": "555", "BillingCity": "Paris", "Local_Id__c": "a1"})["id"]
    con = sf.Contact.create({"LastName": "Doe", "FirstName": "Jo", "Birthdate": "1990-05-17",
                             "AccountId": acc}, headers=SFSYNC_HEADERS)["id"]
    sf.Account.update(acc, {"Name": "Acme 2", "Phone": None})
    sf.Account.delete(acc)
    org.control.undelete([acc])

    events = _events(inbound, 5)
    producer.stop()
    assert [(e.object, e.operation) for e in events] == [
        ("Account", Operation.CREATE), ("Contact", Operation.CREATE), ("Account", Operation.UPDATE),
        ("Account", Operation.DELETE), ("Account", Operation.UNDELETE)]
    create, contact, update, delete, undelete = events
    assert all(e.source is Source.SALESFORCE for e in events)
    assert create.sfid == acc and create.local_key == "a1"
    assert create.values["Name"] == "Acme"
    assert create.values["NumberOfEmployees"] == 12 and type(create.values["NumberOfEmployees"]) is int
    assert create.values["AnnualRevenue"] == Decimal("1234.5")
    assert create.values["BillingCity"] == "Paris"  # compound BillingAddress.City flattened
    assert isinstance(create.values["CreatedDate"], datetime) and create.values["CreatedDate"].tzinfo
    assert contact.values["Birthdate"] == date(1990, 5, 17)
    assert contact.values["HasOptedOutOfEmail"] is False
    assert contact.values["LastName"] == "Doe" and contact.values["FirstName"] == "Jo"
    assert contact.values["AccountId"] == acc
    assert is_own_origin(contact.origin, "sfsync") and not is_own_origin(create.origin, "sfsync")
    assert update.values["Name"] == "Acme 2" and update.values["Phone"] is None
    assert set(update.changed_fields) >= {"Name", "Phone"}
    assert delete.values == {} and delete.sfid == acc
    assert undelete.values["Name"] == "Acme 2"
    for e in events:
        assert e.transaction_key and e.sequence == 1
        assert int(e.source_position) > 0
    keys = {m.key().decode() for m in inbound.messages}
    assert keys == {record_key("Account", acc), record_key("Contact", con)}


def test_collection_of_200_is_200_envelopes(org: EmulatorHandle, cfg: SfsyncConfig, running: Any,
                                            inbound: Reader) -> None:
    sf = org.salesforce()
    producer = running()
    records = [{"attributes": {"type": "Account"}, "Name": f"Bulk {i}", "Local_Id__c": f"b{i}"} for i in range(200)]
    result = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    ids = [r["id"] for r in result]
    events = _events(inbound, 200)
    inbound.settle(0.3)
    producer.stop()
    assert len(inbound.messages) == 200
    assert [e.sfid for e in events] == ids
    assert {e.transaction_key for e in events} == {events[0].transaction_key}
    assert [e.sequence for e in events] == list(range(1, 201))
    assert [e.local_key for e in events] == [f"b{i}" for i in range(200)]


def _offsets(cfg: SfsyncConfig) -> dict[str, OffsetRecord]:
    return cdc.read_offsets(cfg, timeout=10)


def _positions_written(cfg: SfsyncConfig, channel: str, n: int) -> list[OffsetRecord]:
    """Every position record of ``channel`` in the offsets topic, in order: one per transaction."""
    reader = Reader(cfg, TopicNames(cfg.kafka.topic_prefix).offsets)
    try:
        reader.read(lambda m: len([x for x in m if x.key() == offset_key(channel).encode()]) >= n)
        reader.settle(0.5)
        mine = [m for m in reader.messages if m.key() == offset_key(channel).encode()]
        return [OffsetRecord.decode(m.value()) for m in sorted(mine, key=lambda m: (m.partition(), m.offset()))]
    finally:
        reader.close()


def _batched(org: EmulatorHandle, kafka_config: dict[str, Any], running: Any, n: int,
             make: Callable[[Any], list[str]], **batching: Any) -> tuple[SfsyncConfig, list[str], list[ChangeEvent]]:
    """Run the producer with ``batching`` (``salesforce.cdc_batch_*``), make changes with ``make(sf)`` (their
    ids) and read ``n`` events back once the producer stopped."""
    cfg = _config(org, kafka_config, **batching)
    apply_topics(cfg)
    producer = running(cfg)
    _wait_subscribed(org)
    ids = make(org.salesforce())
    reader = Reader(cfg, TopicNames(cfg.kafka.topic_prefix).changes_inbound)
    try:
        events = _events(reader, n, timeout=30)
    finally:
        reader.close()
    producer.stop()
    return cfg, ids, events


def test_changes_that_arrive_within_the_batch_window_share_one_transaction(
        org: EmulatorHandle, kafka_config: dict[str, Any], running: Any) -> None:
    """``salesforce.cdc_batch_ms``: five changes made a few hundred ms apart are written in one transaction
    (one position record), not one each: a transaction's fixed broker cost is paid once per window."""
    def five_apart(sf: Any) -> list[str]:
        ids = []
        for i in range(5):
            ids.append(sf.Account.create({"Name": f"Window {i}"})["id"])
            time.sleep(0.2)
        return ids

    cfg, ids, events = _batched(org, kafka_config, running, 5, five_apart, cdc_batch_ms=4000)
    assert [e.sfid for e in events] == ids
    positions = _positions_written(cfg, channel_for("Account"), 1)
    assert len(positions) == 1, positions
    assert positions[0].replay_id == max(int(e.source_position) for e in events)


def test_a_full_batch_is_written_before_its_window_ends(org: EmulatorHandle, kafka_config: dict[str, Any],
                                                        running: Any) -> None:
    """``salesforce.cdc_batch_events``: 25 changes with batches of 10 are three transactions (10, 10, 5)."""
    def collection(sf: Any) -> list[str]:
        records = [{"attributes": {"type": "Account"}, "Name": f"Full {i}"} for i in range(25)]
        return [r["id"] for r in sf.restful("composite/sobjects", method="POST",
                                            json={"allOrNone": False, "records": records})]

    cfg, ids, events = _batched(org, kafka_config, running, 25, collection, cdc_batch_ms=4000, cdc_batch_events=10)
    assert sorted(e.sfid for e in events) == sorted(ids)
    replay_ids = sorted(int(e.source_position) for e in events)
    positions = _positions_written(cfg, channel_for("Account"), 3)
    assert [p.replay_id for p in positions] == [replay_ids[9], replay_ids[19], replay_ids[24]]


def test_restart_resumes_from_the_stored_replay_id(org: EmulatorHandle, cfg: SfsyncConfig, running: Any,
                                                   inbound: Reader) -> None:
    sf = org.salesforce()
    first = running()
    before = [sf.Account.create({"Name": f"Before {i}"})["id"] for i in range(5)]
    _events(inbound, 5)
    first.stop()
    stored = _offsets(cfg)[channel_for("Account")]
    assert stored.replay_id == max(int(e.source_position) for e in _events(inbound, 5))

    while_down = [sf.Account.create({"Name": f"Down {i}"})["id"] for i in range(5)]
    second = running(start="latest")  # the stored id wins over the configured start
    _events(inbound, 10)
    after = sf.Account.create({"Name": "After"})["id"]
    events = _events(inbound, 11)
    inbound.settle()
    second.stop()
    assert len(inbound.messages) == 11, "an event was repeated"
    assert [e.sfid for e in events] == [*before, *while_down, after]


def test_an_aborted_transaction_leaves_neither_events_nor_offsets(org: EmulatorHandle, cfg: SfsyncConfig,
                                                                  inbound: Reader) -> None:
    topics = TopicNames(cfg.kafka.topic_prefix)
    producer = cdc.CdcProducer(cfg, threading.Event())
    try:
        producer._open_kafka()
        kafka = producer.producer
        assert kafka is not None
        event = ChangeEvent(source=Source.SALESFORCE, object="Account", operation=Operation.CREATE,
                            commit_ts=datetime.now().astimezone(), source_position="7", sfid="001000000000001AAA")
        kafka.begin_transaction()
        kafka.produce(topics.changes_inbound, Serde().encode(event, topics.changes_inbound), key=event.key)
        kafka.produce(topics.offsets, OffsetRecord(channel_for("Account"), 7, 1).encode(),
                      key=offset_key(channel_for("Account")))
        # Aborted before the records left the client: the embedded tansu broker does not filter the records
        # of an aborted transaction that already reached it (a real Kafka does), so no flush here.
        kafka.abort_transaction(10)
        # then a committed one, so the reader can tell "nothing" from "not yet"
        kafka.begin_transaction()
        kafka.produce(topics.offsets, OffsetRecord(channel_for("Contact"), 9, 2).encode(),
                      key=offset_key(channel_for("Contact")))
        kafka.commit_transaction(10)
    finally:
        producer.rest.close()
    assert _offsets(cfg) == {channel_for("Contact"): OffsetRecord(channel_for("Contact"), 9, 2)}
    assert inbound.settle(1.0) == []


def _alerts(cfg: SfsyncConfig, n: int, timeout: float = 10.0) -> list[Alert]:
    reader = Reader(cfg, TopicNames(cfg.kafka.topic_prefix).alerts)
    try:
        msgs = reader.read(lambda m: len(m) >= n and n > 0, timeout)
        return [Serde().decode(m.value(), Alert, reader.topic) for m in msgs]
    finally:
        reader.close()


def test_gap_events_become_snapshots_of_current_values(org: EmulatorHandle, cfg: SfsyncConfig, running: Any,
                                                       inbound: Reader) -> None:
    sf = org.salesforce()
    producer = running()
    acc = sf.Account.create({"Name": "Gap", "NumberOfEmployees": 3, "Local_Id__c": "g1"})["id"]
    gone = sf.Account.create({"Name": "Gone"})["id"]
    _events(inbound, 2)
    org.control.expire_sessions()  # the repair's REST read must re-authenticate too
    sf = org.salesforce()
    sf.Account.update(acc, {"NumberOfEmployees": 4})
    sf.Account.delete(gone)
    _events(inbound, 4)
    org.control.emit_gap("Account", "GAP_UPDATE", [acc])
    org.control.emit_gap("Account", "GAP_DELETE", [gone])
    events = _events(inbound, 6)
    producer.stop()
    snapshot, deleted = events[4], events[5]
    assert snapshot.operation is Operation.SNAPSHOT and snapshot.sfid == acc
    assert snapshot.values["NumberOfEmployees"] == 4 and snapshot.values["Name"] == "Gap"
    assert snapshot.local_key == "g1"
    assert deleted.operation is Operation.DELETE and deleted.sfid == gone
    assert _offsets(cfg)[channel_for("Account")].replay_id == int(deleted.source_position)


def test_gap_overflow_catches_up_and_alerts(org: EmulatorHandle, cfg: SfsyncConfig, running: Any,
                                            inbound: Reader) -> None:
    sf = org.salesforce()
    producer = running()
    ids = [sf.Account.create({"Name": f"O{i}"})["id"] for i in range(3)]
    _events(inbound, 3)
    org.control.emit_gap("Account", "GAP_OVERFLOW")
    events = _events(inbound, 6)
    producer.stop()
    catch_up = events[3:]
    assert {e.sfid for e in catch_up} == set(ids)
    assert all(e.operation is Operation.SNAPSHOT for e in catch_up)
    alerts = _alerts(cfg, 1)
    assert [a.kind for a in alerts] == [AlertKind.REPLAY_GAP] and alerts[0].object == "Account"


def test_replay_id_outside_retention_catches_up_and_alerts(org: EmulatorHandle, cfg: SfsyncConfig, running: Any,
                                                           inbound: Reader) -> None:
    sf = org.salesforce()
    first = running()
    sf.Account.create({"Name": "Seen"})
    _events(inbound, 1)
    first.stop()
    missed = [sf.Account.create({"Name": f"Missed {i}"})["id"] for i in range(2)]
    last = org.control.events()["last_replay_id"]
    org.control.truncate_events(last)  # the stored replay id is now outside retention

    second = running()
    _read_until(inbound, lambda evs: set(missed) <= {e.sfid for e in evs if e.operation is Operation.SNAPSHOT})
    later = sf.Account.create({"Name": "Later"})["id"]
    events = _read_until(inbound, lambda evs: any(e.sfid == later for e in evs))
    second.stop()
    catch_up = [e for e in events if e.operation is Operation.SNAPSHOT]
    assert set(missed) <= {e.sfid for e in catch_up}
    assert [e.operation for e in events if e.sfid == later] == [Operation.CREATE]
    alerts = _alerts(cfg, 1)
    assert alerts[0].kind is AlertKind.REPLAY_GAP and "retention" in alerts[0].message
    assert _offsets(cfg)[channel_for("Account")].replay_id == int(events[-1].source_position)


def test_expired_session_mid_run_continues(org: EmulatorHandle, cfg: SfsyncConfig, running: Any,
                                           inbound: Reader) -> None:
    sf = org.salesforce()
    producer = running()
    sf.Account.create({"Name": "One"})
    _events(inbound, 1)
    org.control.expire_sessions()
    sf = org.salesforce()
    sf.Account.create({"Name": "Two"})
    sf.Account.create({"Name": "Three"})
    events = _events(inbound, 3)
    inbound.settle(0.3)
    producer.stop()
    assert [e.values["Name"] for e in events] == ["One", "Two", "Three"]
    assert len(inbound.messages) == 3


#: Hang guard for what a test waits for (far beyond any delivery time).
GUARD = 60.0
LIMIT = 20_000


def _dead_letters(cfg: SfsyncConfig, n: int) -> list[Any]:
    """The inbound direction's dead letters (read_committed), in replay-id order."""
    reader = Reader(cfg, TopicNames(cfg.kafka.topic_prefix).dlq("postgres"))
    try:
        reader.read(lambda m: len(m) >= n, GUARD)
        msgs = reader.settle()
    finally:
        reader.close()
    def replay_id(m: Any) -> int:
        origin = parse_failure_headers(m.headers()).origin
        return origin.offset if origin is not None else -1

    return sorted(msgs, key=replay_id)


def test_an_oversized_event_goes_to_the_dlq_with_its_position(org: EmulatorHandle, kafka_config: dict[str, Any],
                                                             running: Any, inbound: Reader) -> None:
    """A change whose envelope is over the producer's message limit (``message.max.bytes`` = 20 kB through
    ``kafka.librdkafka``) goes to ``<prefix>.dlq.postgres`` (read_committed: in a committed transaction,
    the one of its position) with the failure headers (stage ``salesforce-producer``, class
    ``MSG_SIZE_TOO_LARGE``, origin = channel and replay id) and a JSON value that identifies it without the
    values; one alert; the changes before and after it arrive and the stored position passes it.

    Failed before the fix: ``produce()`` raised ``KafkaException(MSG_SIZE_TOO_LARGE)`` inside the transaction,
    which was aborted, and the producer stopped with that error (a restart resumes before the same event: a
    crash loop); the change after it never arrived.
    """
    cfg = _config(org, {**kafka_config, "librdkafka": {"message.max.bytes": str(LIMIT)}})
    assert all(r.state.value in ("created", "ok") for r in apply_topics(cfg))
    sf = org.salesforce()
    producer = running(cfg)
    small = sf.Account.create({"Name": "Small"})["id"]
    big = sf.Account.create({"Name": "Big", "Description": "x" * 30_000})["id"]
    after = sf.Account.create({"Name": "After"})["id"]
    events = _events(inbound, 2, GUARD)
    dead = _dead_letters(cfg, 1)
    producer.stop()
    assert [e.sfid for e in events] == [small, after]
    assert len(dead) == 1
    info = parse_failure_headers(dead[0].headers())
    assert (info.kind, info.error_class, info.stage) == ("permanent", "MSG_SIZE_TOO_LARGE", "salesforce-producer")
    assert info.origin is not None and info.origin.topic == channel_for("Account")
    big_position = info.origin.offset
    assert int(events[0].source_position) < big_position < int(events[1].source_position)
    for part in (f"replay id {big_position}", f"Account {big}", f"limit {LIMIT}", "values are not in"):
        assert part in info.message, (part, info.message)
    assert dead[0].key() == record_key("Account", big).encode()
    body = json.loads(dead[0].value())
    assert body["sfid"] == big and body["replay_id"] == big_position and body["operation"] == "create"
    assert body["size"] > LIMIT and body["limit"] == LIMIT and "message" not in body
    alerts = _alerts(cfg, 1)
    assert len(alerts) == 1 and alerts[0].kind is AlertKind.OTHER and alerts[0].object == "Account"
    assert alerts[0].details["replay_id"] == str(big_position)
    assert _offsets(cfg)[channel_for("Account")].replay_id == int(events[1].source_position)


def test_a_malformed_event_goes_to_the_dlq_and_the_rest_flows(org: EmulatorHandle, cfg: SfsyncConfig, running: Any,
                                                              inbound: Reader) -> None:
    """Two malformed events on the Account channel (published raw through the emulator): one without
    ``commitTimestamp`` / ``changeType`` (not a CDC event), one naming an empty record id (no record key).
    Each goes to ``<prefix>.dlq.postgres`` with the CometD message as JSON, the reason (class
    ``MalformedCdcEvent`` / ``MissingRecordKey``) and origin channel + replay id, one alert each; the change
    after them arrives and the stored position passes them.

    Failed before the fix: the first was logged and skipped (nothing on the DLQ, no alert); the second raised
    ``ValueError`` from ``record_key`` while the transaction was being written: the producer stopped (crash loop).
    """
    sf = org.salesforce()
    producer = running()
    channel = channel_for("Account")
    _wait_subscribed(org)
    first = sf.Account.create({"Name": "First"})["id"]
    _events(inbound, 1, GUARD)
    not_cdc = {"ChangeEventHeader": {"entityName": "Account", "recordIds": [first]}, "Name": "no header fields"}
    no_key = {"ChangeEventHeader": {"entityName": "Account", "changeType": "UPDATE", "recordIds": [""],
                                    "commitTimestamp": int(time.time() * 1000), "changedFields": ["Name"]},
              "Name": "no id"}
    bad_ids = [org.control.emit_raw_event(channel, not_cdc), org.control.emit_raw_event(channel, no_key)]
    after = sf.Account.create({"Name": "After"})["id"]
    events = _read_until(inbound, lambda evs: any(e.sfid == after for e in evs), GUARD)
    dead = _dead_letters(cfg, 2)
    producer.stop()
    assert [e.sfid for e in events] == [first, after]
    assert len(dead) == 2
    for message, replay_id, error_class, payload in zip(dead, bad_ids, ("MalformedCdcEvent", "MissingRecordKey"),
                                                        (not_cdc, no_key), strict=True):
        info = parse_failure_headers(message.headers())
        assert (info.kind, info.error_class, info.stage) == ("permanent", error_class, "salesforce-producer")
        assert info.origin is not None and (info.origin.topic, info.origin.offset) == (channel, replay_id)
        assert f"replay id {replay_id}" in info.message and channel in info.message
        body = json.loads(message.value())
        assert body["replay_id"] == replay_id and body["message"]["data"]["payload"] == payload
    alerts = _alerts(cfg, 2)
    assert sorted(a.details["replay_id"] for a in alerts) == sorted(str(i) for i in bad_ids)
    assert _offsets(cfg)[channel].replay_id == int(events[-1].source_position)


def test_a_503_with_a_rest_style_body_from_the_streaming_endpoint_is_retried_and_alerted(
        org: EmulatorHandle, cfg: SfsyncConfig, inbound: Reader) -> None:
    """The streaming endpoint answers 503 with a REST-style error array (the emulator's fault over its control
    API: ``[{"message", "errorCode", "fields"}]``), first at start and for longer than the outage limit (shortened
    to 1 s): the producer keeps retrying with backoff, raises one ``connection_down`` alert, and once the endpoint
    answers again it subscribes, resolves the alert and the stream flows. It never dies.

    Failed before the fix: ``client.open()`` raised ``KeyError('channel')`` from inside aiocometd-ng, which the
    producer did not catch (only ``AiosfstreamException``): the producer's thread died at the first 503."""
    org.control.add_fault(path="^/cometd/", status=503, error_code="SERVER_UNAVAILABLE",
                          message="the instance is down for maintenance")
    producer = cdc.CdcProducer(cfg, threading.Event(), start="all")
    producer.down = DownWatch(1.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            eventloop.run(producer.run())
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    cause = "connection_down:salesforce-producer:salesforce"

    def alert_states() -> list[tuple[str, str]]:
        return [(a.details.get("cause", ""), a.details.get("state", "open"))
                for a in _alerts(cfg, 0, timeout=2) if a.kind is AlertKind.CONNECTION_DOWN]

    try:
        deadline = time.monotonic() + GUARD
        while (cause, "open") not in alert_states() and not errors and time.monotonic() < deadline:
            time.sleep(0.2)
        assert errors == [] and thread.is_alive(), f"the producer died: {errors!r}"
        assert alert_states() == [(cause, "open")]
        fired = next(f["fired"] for f in org.control.faults())
        assert fired >= 2, "the producer did not retry"
        alert = next(a for a in _alerts(cfg, 1) if a.kind is AlertKind.CONNECTION_DOWN)
        assert "TransportError" in alert.message
        org.control.clear_faults()
        _wait_subscribed(org, timeout=GUARD)
        acc = org.salesforce().Account.create({"Name": "after the outage"})["id"]
        events = _read_until(inbound, lambda evs: any(e.sfid == acc for e in evs), GUARD)
        assert [e.sfid for e in events] == [acc]
        deadline = time.monotonic() + GUARD
        while (cause, "resolved") not in alert_states() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alert_states() == [(cause, "open"), (cause, "resolved")]
    finally:
        org.control.clear_faults()
        producer.stop.set()
        thread.join(30)
    assert not thread.is_alive() and errors == []


def test_every_change_but_an_echo_writes_its_records_in_queue_state(org: EmulatorHandle, cfg: SfsyncConfig,
                                                                    running: Any, inbound: Reader) -> None:
    """Each envelope puts its record's In Queue state on the status topic in the envelope's transaction (key
    ``queued:inbound:<record key>``, direction inbound, no attempt yet, ``updated_ts`` when it was read); sfsync's
    own echo (``changeOrigin`` ``client=sfsync``) gets none."""
    sf = org.salesforce()
    producer = running()
    _wait_subscribed(org, timeout=GUARD)
    before = datetime.now(UTC)
    echo = sf.Account.create({"Name": "written by sfsync"}, headers=SFSYNC_HEADERS)["id"]
    acc = sf.Account.create({"Name": "Acme", "Local_Id__c": "a7"})["id"]
    sf.Account.update(acc, {"Name": "Acme 2"})
    con = sf.Contact.create({"LastName": "Doe"})["id"]
    _read_until(inbound, lambda evs: any(e.sfid == con for e in evs), GUARD)
    producer.stop()
    after = datetime.now(UTC)
    topic = TopicNames(cfg.kafka.topic_prefix).status
    latest = read_compacted(cfg.kafka, topic, key=bytes.decode,
                            decode=lambda v: Serde().decode(v, RecordStatus, topic), timeout=30)
    assert sorted(latest) == sorted([f"queued:inbound:Account:{acc}", f"queued:inbound:Contact:{con}"])
    assert f"queued:inbound:Account:{echo}" not in latest
    account, contact = latest[f"queued:inbound:Account:{acc}"], latest[f"queued:inbound:Contact:{con}"]
    # the latest change (the update) names no local key: only a create carries the external id unchanged
    assert (account.key, account.object, account.sfid, account.local_key) == (f"Account:{acc}", "Account", acc, None)
    assert (contact.key, contact.object, contact.sfid) == (f"Contact:{con}", "Contact", con)
    for status in (account, contact):
        assert status.state is SyncState.IN_QUEUE and status.direction is Direction.INBOUND
        assert status.last_attempt_ts is None and status.failure_count == 0 and before <= status.updated_ts <= after
