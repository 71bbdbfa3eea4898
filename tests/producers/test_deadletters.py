"""The producers' dead letters and the per-row / per-envelope decisions that lead to them (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError

from producers.deadletters import (
    DEFAULT_MESSAGE_MAX_BYTES,
    H_FORMAT,
    DeadLetter,
    build_dead_letter,
    direction_dlq,
    is_size_error,
    message_limit,
)
from producers.postgres.convert import (
    OutboxRow,
    Prepared,
    Refused,
    TableIndex,
    outbox_event_id,
    outbox_source,
    prepare_row,
    row_dead_letter,
    row_to_event,
)
from producers.salesforce.events import (
    Envelope,
    EnvelopeRefusal,
    envelope_dead_letter,
    event_dead_letter,
    prepare_envelope,
)
from sfsync.config import KafkaConfig
from sfsync.database.testing import make_config
from sfsync.failures import DeadLetterInfo, Failure, FailureKind, Origin, parse_failure_headers
from sfsync.kafka.topics import TopicNames
from sfsync.records import AlertKind, ChangeEvent, Direction, Operation, Source
from sfsync.serde import Serde

TS = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TOPIC = "p.changes.outbound"
SOURCE = outbox_source("db", "s", "sfsync_outbox", 16384)


def _info(headers: list[tuple[str, bytes]]) -> DeadLetterInfo:
    raw: list[tuple[str, bytes | None]] = list(headers)
    return parse_failure_headers(raw)


def _letter(failure: Failure, bulky_size: int, limit: int = 100_000) -> tuple[dict[str, Any], DeadLetter]:
    letter = build_dead_letter(topic="p.dlq.salesforce", key="Contact:local:1", failure=failure, stage="st",
                               origin=Origin("s.sfsync_outbox", -1, 7), document={"outbox_id": 7},
                               bulky=("new_values", {"v": "x" * bulky_size}), limit=limit, alert_identity="a|7",
                               alert_object="Contact", alert_details={"outbox_id": "7"})
    return json.loads(letter.value), letter


def test_a_dead_letter_keeps_the_bulky_part_when_it_fits_with_a_lean_fallback() -> None:
    doc, letter = _letter(Failure(FailureKind.PERMANENT, "MissingRecordKey", "no key"), 10)
    assert doc == {"outbox_id": 7, "new_values": {"v": "x" * 10}}
    info = _info(letter.headers)
    assert (info.kind, info.error_class, info.message, info.stage, info.attempt) == (
        "permanent", "MissingRecordKey", "no key", "st", 1)
    assert info.origin == Origin("s.sfsync_outbox", -1, 7)
    assert dict(letter.headers)[H_FORMAT] == b"json"
    assert letter.lean is not None and json.loads(letter.lean.value) == {"outbox_id": 7}
    assert "left out of this dead letter" in _info(letter.lean.headers).message
    assert letter.lean.alert == letter.alert  # one alert, whichever copy is written
    assert letter.alert.kind is AlertKind.OTHER and letter.alert.details["reason"] == "dead_letter"
    assert letter.alert.details["dlq"] == "p.dlq.salesforce" and letter.alert.details["outbox_id"] == "7"
    _, again = _letter(Failure(FailureKind.PERMANENT, "MissingRecordKey", "no key"), 10)
    assert again.alert.alert_id == letter.alert.alert_id  # the same bad change, the same alert id


def test_a_dead_letter_leaves_out_what_does_not_fit_and_says_so() -> None:
    doc, letter = _letter(Failure(FailureKind.PERMANENT, "MissingRecordKey", "no key"), 200_000)
    assert doc == {"outbox_id": 7} and letter.lean is None
    message = _info(letter.headers).message
    assert message.startswith("no key (new_values left out of this dead letter: the message is ")
    assert "over the limit 100000 bytes" in message
    doc, letter = _letter(Failure(FailureKind.PERMANENT, "MSG_SIZE_TOO_LARGE", "too big"), 10)
    assert doc == {"outbox_id": 7} and letter.lean is None  # a size failure never carries the values


def test_limits_and_size_errors() -> None:
    assert message_limit(KafkaConfig()) == DEFAULT_MESSAGE_MAX_BYTES
    assert message_limit(KafkaConfig(librdkafka={"message.max.bytes": "5000"})) == 5000
    assert is_size_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)) and not is_size_error(None)
    assert not is_size_error(KafkaError(KafkaError._MSG_TIMED_OUT))
    names = TopicNames("p")
    assert direction_dlq(names, Direction.OUTBOUND) == "p.dlq.salesforce"
    assert direction_dlq(names, Direction.INBOUND) == "p.dlq.postgres"


def _row(**changes: object) -> OutboxRow:
    base: dict[str, object] = dict(id=7, table_name="contacts", local_key="42", operation="insert",
                                   changed_columns=["last_name"], new_values={"id": 42, "last_name": "Ada"},
                                   txid=900, committed_at=TS)
    base.update(changes)
    return OutboxRow(**base)  # type: ignore[arg-type]


def test_event_ids_are_derived_from_the_outbox_and_the_row() -> None:
    index = TableIndex.from_config(make_config("postgresql://x@127.0.0.1:1/x", "s"))
    first = row_to_event(_row(), index, SOURCE)
    assert first.event_id == row_to_event(_row(), index, SOURCE).event_id == outbox_event_id(SOURCE, 7)
    assert first.event_id != row_to_event(_row(id=8), index, SOURCE).event_id
    recreated = outbox_source("db", "s", "sfsync_outbox", 16999)  # same ids, new table: new event ids
    assert first.event_id != row_to_event(_row(), index, recreated).event_id


def test_prepare_row_refuses_what_can_never_be_sent() -> None:
    index = TableIndex.from_config(make_config("postgresql://x@127.0.0.1:1/x", "s"))
    serde = Serde()
    ok = prepare_row(_row(), index, serde, TOPIC, SOURCE, 100_000)
    assert isinstance(ok, Prepared) and ok.key == "Contact:local:42" and ok.object == "Contact"
    assert serde.decode(ok.value, ChangeEvent, TOPIC).event_id == outbox_event_id(SOURCE, 7)
    linked = prepare_row(_row(local_key=None, new_values={"sfid": "003A"}), index, serde, TOPIC, SOURCE, 100_000)
    assert isinstance(linked, Prepared) and linked.key == "Contact:003A"
    for key, state in ((None, "NULL"), ("", "empty")):
        refused = prepare_row(_row(local_key=key), index, serde, TOPIC, SOURCE, 100_000)
        assert isinstance(refused, Refused) and refused.error_class == "MissingRecordKey" and refused.key is None
        assert refused.reason.startswith(f"outbox row 7 of table contacts has no key: local_key is {state}")
    big = prepare_row(_row(new_values={"last_name": "x" * 5000}), index, serde, TOPIC, SOURCE, 1000, 40)
    assert isinstance(big, Refused) and big.error_class == "MSG_SIZE_TOO_LARGE" and big.limit == 1000
    assert big.size is not None and big.size > 5000
    assert f"the message is {big.size} bytes, over the limit 1000 bytes" in big.reason
    assert "(key Contact:local:42)" in big.reason and "values are not in this dead letter" in big.reason
    bad = prepare_row(_row(operation="truncate"), index, serde, TOPIC, SOURCE, 100_000)
    assert isinstance(bad, Refused) and bad.error_class == "InvalidOutboxRow" and "unknown operation" in bad.reason
    letter = row_dead_letter(big, dlq="p.dlq.salesforce", outbox="s.sfsync_outbox", source=SOURCE, limit=1000)
    doc = json.loads(letter.value)
    assert doc["outbox_id"] == 7 and doc["size"] == big.size and "new_values" not in doc
    assert letter.key == "Contact:local:42" and letter.alert.object == "Contact"
    assert _info(letter.headers).origin == Origin("s.sfsync_outbox", -1, 7)


def _envelope(sfid: str, **values: object) -> ChangeEvent:
    return ChangeEvent(source=Source.SALESFORCE, object="Account", operation=Operation.UPDATE, commit_ts=TS,
                       source_position="42", sfid=sfid, values=dict(values))  # type: ignore[arg-type]


def test_prepare_envelope_and_the_cdc_dead_letters() -> None:
    serde, channel, topic = Serde(), "/data/AccountChangeEvent", "p.changes.inbound"
    ok = prepare_envelope(_envelope("001A", Name="n"), serde, topic, channel, 100_000)
    assert isinstance(ok, Envelope) and ok.key == "Account:001A"
    no_id = prepare_envelope(_envelope(""), serde, topic, channel, 100_000)
    assert isinstance(no_id, EnvelopeRefusal) and no_id.error_class == "MissingRecordKey"
    assert no_id.reason.startswith(f"CDC event replay id 42 on {channel} names a Account record without an id")
    big = prepare_envelope(_envelope("001A", Description="x" * 3000), serde, topic, channel, 1000)
    assert isinstance(big, EnvelopeRefusal) and big.error_class == "MSG_SIZE_TOO_LARGE"
    assert f"CDC event replay id 42 on {channel} (Account 001A): the message is" in big.reason
    message = {"channel": channel, "data": {"payload": {}, "event": {"replayId": 42}}}
    letter = envelope_dead_letter(big, channel=channel, message=message, dlq="p.dlq.postgres", limit=1000)
    doc = json.loads(letter.value)
    assert doc["replay_id"] == 42 and doc["sfid"] == "001A" and "message" not in doc and doc["limit"] == 1000
    assert letter.alert.details["replay_id"] == "42" and letter.key == "Account:001A"
    keyless = envelope_dead_letter(no_id, channel=channel, message=message, dlq="p.dlq.postgres", limit=100_000)
    assert json.loads(keyless.value)["message"] == message and keyless.key is None
    unreadable = event_dead_letter(channel=channel, message={"channel": channel, "data": "?"},
                                   error_class="MalformedCdcEvent", reason="not a CDC event", dlq="p.dlq.postgres",
                                   limit=100_000, sobject="Account")
    info = _info(unreadable.headers)
    assert info.origin == Origin(channel, -1, -1)
    assert info.message == f"CDC event (replay id unreadable) on {channel}: not a CDC event"
    assert json.loads(unreadable.value)["replay_id"] is None
