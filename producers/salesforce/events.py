"""The pure half of the CDC producer: CometD CDC messages -> envelopes, gap repair and catch-up queries,
and the replay positions stored in the ``offsets`` topic. No I/O here.

Contracts:

- :func:`parse_event` reads one CometD message (``{"channel", "data": {"payload": {"ChangeEventHeader":
  ...}, "event": {"replayId"}}}``) into a :class:`CdcEvent`, or raises ``ValueError`` naming what is missing.
  Record ids are normalised to their 18-character form (:func:`~sfsync.salesforce.values.canonical_sfid`;
  a value that is no id, e.g. a wildcard, is kept as it is); so are the values of id and reference fields
  (by the describe types) in every envelope, and the ids of rows read back over REST. Numbers arrive exact
  (the streaming client parses fractions as ``Decimal``, see :mod:`sfsync.salesforce.streaming`).
- :func:`change_events` turns a CREATE/UPDATE/DELETE/UNDELETE event into one
  :class:`~sfsync.records.ChangeEvent` per id in ``recordIds`` (values typed by the object's describe,
  ``nulledFields`` as ``None``, ``origin`` = ``changeOrigin`` so the processor can drop sfsync's echoes).
  Event ids are deterministic (channel, replay id, record id), so a replayed event has the same id.
- Gap events (``GAP_*``) carry no values: the producer re-reads the records with :func:`record_query`
  and turns the rows into ``snapshot`` (or ``delete``) envelopes with :func:`snapshot_events`.
  ``GAP_OVERFLOW`` and a replay id outside retention are repaired by :func:`catchup_query` (all
  records, deleted ones too, with ``SystemModstamp >= since``).
- :class:`OffsetRecord` is the value stored in the compacted offsets topic under :func:`offset_key`:
  the last replay id of a channel and the commit time of that event (the catch-up starting point).
  ``replay_id == -1`` means "subscribe to new events and catch up since ``commit_ms``".
- :func:`prepare_envelope` is the producer's decision per envelope: the message to write
  (:class:`Envelope`) or a permanent refusal (:class:`EnvelopeRefusal`: no record key, not encodable,
  over the message limit). Refusals and events that are no CDC event at all become dead letters for
  ``<prefix>.dlq.postgres`` (:func:`envelope_dead_letter`, :func:`event_dead_letter`, see
  :mod:`producers.deadletters`), written in the transaction of the event's position.
- :func:`queued_status` is the record's **In Queue** state the producer writes with each envelope (under
  ``queued_status_key``, :mod:`sfsync.records`), ``None`` for sfsync's own echo
  (:func:`~sfsync.salesforce.values.is_own_origin`: its ``changeOrigin`` names sfsync's client id,
  ``salesforce.call_options_client``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from producers.deadletters import SIZE_ERROR, DeadLetter, build_dead_letter, message_size, too_large
from producers.salesforce.parents import reference_field_guess, split_path
from sfsync.config import ObjectMapping
from sfsync.failures import Failure, FailureKind, Origin
from sfsync.records import ChangeEvent, Direction, FieldPyValue, Operation, RecordStatus, Source, SyncState
from sfsync.salesforce.soql import soql_string
from sfsync.salesforce.values import (
    SYSTEM_FIELDS,
    ObjectTypes,
    canonical_sfid,
    format_datetime,
    is_own_origin,
    parse_datetime,
)
from sfsync.serde import EncodeError, Serde

OPERATIONS: dict[str, Operation] = {
    "CREATE": Operation.CREATE,
    "UPDATE": Operation.UPDATE,
    "DELETE": Operation.DELETE,
    "UNDELETE": Operation.UNDELETE,
}
GAP_RECORD_TYPES = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"})
GAP_OVERFLOW = "GAP_OVERFLOW"
#: How far before the last seen commit a catch-up query starts (clock skew between commit time and
#: SystemModstamp, and changes committed in the same second).
CATCHUP_MARGIN_MS = 60_000
#: Ids per ``Id IN (...)`` query (keeps the GET URL well under Salesforce's 16 KB limit).
IDS_PER_QUERY = 200
OFFSET_KEY_PREFIX = "salesforce-cdc:"
_EVENT_NS = uuid.UUID("6a0c1b9e-6a53-4bb4-9d0f-5c3f4a1e2b7d")
STAGE = "salesforce-producer"


def channel_for(sobject: str) -> str:
    """The CDC channel of an object: ``Account`` -> ``/data/AccountChangeEvent``,
    ``Invoice__c`` -> ``/data/Invoice__ChangeEvent``."""
    base = sobject[:-1] if sobject.endswith("__c") else sobject
    return f"/data/{base}ChangeEvent"


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds -> aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class CdcEvent:
    """One CDC event as delivered over CometD."""

    channel: str
    replay_id: int
    entity: str
    change_type: str
    record_ids: list[str]
    commit_ms: int
    origin: str | None = None
    transaction_key: str | None = None
    sequence: int | None = None
    changed_fields: list[str] = field(default_factory=list)
    nulled_fields: list[str] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def commit_ts(self) -> datetime:
        return ms_to_datetime(self.commit_ms)

    @property
    def is_gap(self) -> bool:
        return self.change_type.startswith("GAP_")


def parse_event(message: Mapping[str, Any]) -> CdcEvent:
    """A CometD CDC message -> :class:`CdcEvent` (``ValueError`` when it is not one)."""
    try:
        data = message["data"]
        payload = data["payload"]
        header = payload["ChangeEventHeader"]
        replay_id = int(data["event"]["replayId"])
        commit_ms = int(header["commitTimestamp"])
        entity = str(header["entityName"])
        change_type = str(header["changeType"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a CDC event message (missing or bad {e})") from None
    sequence = header.get("sequenceNumber")
    return CdcEvent(
        channel=str(message.get("channel", "")),
        replay_id=replay_id,
        entity=entity,
        change_type=change_type,
        record_ids=[canonical_sfid(str(i)) or "" for i in header.get("recordIds") or []],
        commit_ms=commit_ms,
        origin=header.get("changeOrigin") or None,
        transaction_key=header.get("transactionKey"),
        sequence=int(sequence) if isinstance(sequence, int) else None,
        changed_fields=[str(f) for f in header.get("changedFields") or []],
        nulled_fields=[str(f) for f in header.get("nulledFields") or []],
        body={k: v for k, v in payload.items() if k != "ChangeEventHeader"},
    )


def event_id(channel: str, position: str, sfid: str) -> str:
    """Deterministic envelope id: the same CDC event (or repair) for the same record gets the same id."""
    return str(uuid.uuid5(_EVENT_NS, f"{channel}|{position}|{sfid}"))


def _local_key(values: Mapping[str, FieldPyValue], external_id_field: str | None) -> str | None:
    if not external_id_field:
        return None
    value = values.get(external_id_field)
    return None if value is None or value == "" else str(value)


def change_events(ev: CdcEvent, types: ObjectTypes, external_id_field: str | None = None) -> list[ChangeEvent]:
    """Envelopes for a CREATE/UPDATE/DELETE/UNDELETE event: one per record id (see module contract)."""
    operation = OPERATIONS.get(ev.change_type)
    if operation is None:
        raise ValueError(f"change type {ev.change_type} is not a record change")
    values: dict[str, FieldPyValue] = {}
    if operation is not Operation.DELETE:
        values = types.typed_values(ev.body)
        for name in types.field_names(ev.nulled_fields):
            values[name] = None
    changed = types.field_names(ev.changed_fields) if operation is Operation.UPDATE else sorted(values)
    local_key = _local_key(values, external_id_field)
    position = str(ev.replay_id)
    return [
        ChangeEvent(
            source=Source.SALESFORCE,
            object=ev.entity,
            operation=operation,
            commit_ts=ev.commit_ts,
            source_position=position,
            sfid=sfid,
            local_key=local_key,
            changed_fields=list(changed),
            values=dict(values),
            origin=ev.origin,
            entity=ev.entity,
            transaction_key=ev.transaction_key,
            sequence=ev.sequence,
            event_id=event_id(ev.channel, position, sfid),
        )
        for sfid in ev.record_ids
    ]


def query_fields(types: ObjectTypes, mapping: ObjectMapping | None) -> list[str]:
    """Fields a repair/catch-up query reads: system fields, the external id, the mapped fields (only those
    the describe knows, never compound address/location fields); for a parent path (``Owner.Name``) its
    reference field (``OwnerId``), which :mod:`producers.salesforce.parents` resolves."""
    wanted: list[str] = list(SYSTEM_FIELDS)
    if mapping is not None:
        wanted.append(mapping.external_id_field)
        for f in mapping.fields:
            split = split_path(f.field)
            wanted.append(f.field if split is None else reference_field_guess(split[0]))
    return types.queryable(wanted)


def record_query(sobject: str, fields: Sequence[str], ids: Sequence[str]) -> str:
    """``SELECT fields FROM sobject WHERE Id IN (...)`` (run it with queryAll to see deleted rows)."""
    if not ids:
        raise ValueError("record_query needs at least one id")
    id_list = ", ".join(soql_string(i) for i in ids)
    return f"SELECT {', '.join(fields)} FROM {sobject} WHERE Id IN ({id_list})"


def catchup_query(sobject: str, fields: Sequence[str], since: datetime) -> str:
    """Every record changed at or after ``since`` (run with queryAll: deleted rows become deletes)."""
    return (f"SELECT {', '.join(fields)} FROM {sobject} WHERE SystemModstamp >= {format_datetime(since)} "
            "ORDER BY SystemModstamp ASC")


def catchup_since(last_commit_ms: int | None, fallback_ms: int, margin_ms: int = CATCHUP_MARGIN_MS) -> datetime:
    """Start of a catch-up: the last commit seen (else ``fallback_ms``) minus ``margin_ms``."""
    base = last_commit_ms if last_commit_ms is not None and last_commit_ms > 0 else fallback_ms
    return ms_to_datetime(max(0, base - margin_ms))


def snapshot_events(
    sobject: str,
    rows: Iterable[Mapping[str, Any]],
    types: ObjectTypes,
    *,
    channel: str,
    position: str,
    fallback_ms: int,
    external_id_field: str | None = None,
    requested_ids: Iterable[str] = (),
) -> list[ChangeEvent]:
    """Envelopes for records read back over REST: ``snapshot`` with the current values, ``delete`` for a
    row with ``IsDeleted`` and for each requested id that came back not at all. ``commit_ts`` is the row's
    ``SystemModstamp`` (else ``fallback_ms``)."""
    out: list[ChangeEvent] = []
    seen: set[str] = set()
    for row in rows:
        sfid = canonical_sfid(str(row.get("Id") or "")) or ""
        if not sfid:
            continue
        seen.add(sfid)
        stamp = row.get("SystemModstamp") or row.get("LastModifiedDate")
        try:
            commit_ts = parse_datetime(stamp) if isinstance(stamp, str) else ms_to_datetime(fallback_ms)
        except ValueError:
            commit_ts = ms_to_datetime(fallback_ms)
        deleted = bool(row.get("IsDeleted"))
        current = types.typed_values(row, skip=("IsDeleted",))
        values = {} if deleted else current
        local_key = _local_key(current, external_id_field)
        out.append(ChangeEvent(
            source=Source.SALESFORCE,
            object=sobject,
            operation=Operation.DELETE if deleted else Operation.SNAPSHOT,
            commit_ts=commit_ts,
            source_position=position,
            sfid=sfid,
            local_key=local_key,
            changed_fields=sorted(values),
            values=values,
            entity=sobject,
            event_id=event_id(channel, position, sfid),
        ))
    for requested in requested_ids:
        sfid = canonical_sfid(requested) or ""
        if sfid in seen:
            continue
        seen.add(sfid)
        out.append(ChangeEvent(
            source=Source.SALESFORCE, object=sobject, operation=Operation.DELETE,
            commit_ts=ms_to_datetime(fallback_ms), source_position=position, sfid=sfid, entity=sobject,
            event_id=event_id(channel, position, sfid),
        ))
    return out


def chunks(items: Sequence[str], size: int = IDS_PER_QUERY) -> list[list[str]]:
    """``items`` in lists of at most ``size``."""
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


# --------------------------------------------------------------------------- offsets


@dataclass(frozen=True, slots=True)
class OffsetRecord:
    """The stored position of one CDC channel (value of the offsets topic, JSON)."""

    channel: str
    replay_id: int
    commit_ms: int

    def encode(self) -> bytes:
        return json.dumps({"channel": self.channel, "replay_id": self.replay_id, "commit_ms": self.commit_ms},
                          sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> OffsetRecord:
        """Parse a stored value (``ValueError`` when it is not one)."""
        try:
            d = json.loads(raw)
            return cls(str(d["channel"]), int(d["replay_id"]), int(d["commit_ms"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a CDC offset record: {e}") from None


def offset_key(channel: str) -> str:
    """Key of a channel's record in the compacted offsets topic."""
    return OFFSET_KEY_PREFIX + channel


def latest_offsets(records: Iterable[tuple[bytes | str | None, bytes | None]]) -> dict[str, OffsetRecord]:
    """The last record per channel from ``(key, value)`` pairs read in offset order (tombstones clear;
    foreign keys and unreadable values are ignored)."""
    out: dict[str, OffsetRecord] = {}
    for key, value in records:
        text = key.decode(errors="replace") if isinstance(key, bytes) else key
        if not text or not text.startswith(OFFSET_KEY_PREFIX):
            continue
        channel = text[len(OFFSET_KEY_PREFIX):]
        if value is None:
            out.pop(channel, None)
            continue
        try:
            out[channel] = OffsetRecord.decode(value)
        except ValueError:
            continue
    return out


def start_replay_id(stored: OffsetRecord | None, start: str) -> int:
    """Replay id to subscribe with: the stored one, else -1 (``latest``) or -2 (``all``)."""
    if stored is not None:
        return stored.replay_id
    return -2 if start == "all" else -1


def is_invalid_replay(error_code: int | None, replay_id: int) -> bool:
    """A subscribe refused with 400 while asking for a concrete replay id: the id is outside retention."""
    return error_code == 400 and replay_id >= 0


# --------------------------------------------------------------------------- bad changes


@dataclass(frozen=True, slots=True)
class Envelope:
    """An envelope as the message the producer writes: Kafka key and encoded value."""

    event: ChangeEvent
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class EnvelopeRefusal:
    """An envelope that can never be written as it is: ``error_class`` ``MissingRecordKey``,
    ``EncodeError`` or ``MSG_SIZE_TOO_LARGE``; ``reason`` names channel, replay id, record and size vs limit."""

    event: ChangeEvent
    key: str | None
    error_class: str
    reason: str
    size: int | None = None
    limit: int | None = None


def queued_status(event: ChangeEvent, client: str, now: datetime) -> RecordStatus | None:
    """The **In Queue** state of the record of an inbound change (``now``: when it was captured, for readers
    to order it against the record's outcome); ``None`` for an echo of sfsync's own write (its outcome is
    sfsync's own, already known) and for a change without a record key (it is dead-lettered)."""
    if is_own_origin(event.origin, client):
        return None
    try:
        key = event.key
    except ValueError:
        return None
    return RecordStatus(key=key, object=event.object, direction=Direction.INBOUND, state=SyncState.IN_QUEUE,
                        sfid=event.sfid, local_key=event.local_key, last_attempt_ts=None, updated_ts=now)


def replay_id_of(message: Mapping[str, Any]) -> int | None:
    """The replay id of a CometD message, if it has a readable one (even when the rest is malformed)."""
    try:
        return int(message["data"]["event"]["replayId"])
    except (KeyError, TypeError, ValueError):
        return None


def describe_change(channel: str, position: str | int | None, sobject: str | None = None,
                    sfid: str | None = None) -> str:
    """``CDC event replay id 42 on /data/AccountChangeEvent (Account 001...)``: how errors name a change."""
    text = str(position)
    if position is None:
        where = "CDC event (replay id unreadable)"
    else:
        where = f"CDC event replay id {text}" if text.lstrip("-").isdigit() else f"CDC {text}"
    record = f" ({sobject} {sfid})" if sobject and sfid else ""
    return f"{where} on {channel}{record}"


def refuse_envelope_for_size(envelope: Envelope, channel: str, size: int, limit: int | None) -> EnvelopeRefusal:
    """The refusal of an envelope too large to write (``limit`` ``None``: the broker's lower limit refused it)."""
    ev = envelope.event
    what = too_large(size, limit) if limit is not None else f"the broker refused the {size}-byte message for its size"
    return EnvelopeRefusal(ev, envelope.key, SIZE_ERROR,
                           f"{describe_change(channel, ev.source_position, ev.object, ev.sfid)}: {what}: its values "
                           "are not in this dead letter, which holds what identifies the change (once the limit "
                           "allows, touch the record in Salesforce to send its current values)", size, limit)


def prepare_envelope(event: ChangeEvent, serde: Serde, topic: str, channel: str,
                     limit: int) -> Envelope | EnvelopeRefusal:
    """The message of one envelope, or why it can never be written: no record key (an empty record id),
    not encodable, over ``limit`` bytes (key + value). A Schema Registry outage (``RegistryError``) propagates."""
    try:
        key = event.key
    except ValueError:
        return EnvelopeRefusal(event, None, "MissingRecordKey",
                               f"{describe_change(channel, event.source_position)} names a {event.object} record "
                               f"without an id ({event.sfid!r}): the change cannot be keyed")
    try:
        value = serde.encode(event, topic)
    except EncodeError as e:
        return EnvelopeRefusal(event, key, "EncodeError",
                               f"{describe_change(channel, event.source_position, event.object, event.sfid)} "
                               f"cannot be encoded: {e}"[:1000])
    envelope = Envelope(event, key, value)
    size = message_size(key, value)
    if size > limit:
        return refuse_envelope_for_size(envelope, channel, size, limit)
    return envelope


def _origin(channel: str, position: str | int | None) -> Origin:
    text = str(position)
    return Origin(channel, -1, int(text) if text.lstrip("-").isdigit() else -1)


def envelope_dead_letter(refusal: EnvelopeRefusal, *, channel: str, message: Mapping[str, Any] | None, dlq: str,
                         limit: int) -> DeadLetter:
    """The dead letter of a refused envelope: its identity as JSON (channel, replay id, object, sfid, local key,
    operation, changed fields, event id, transaction key, commit time, for a size failure size and limit) and,
    when it fits and size was not the problem, the CometD ``message`` it came from (else its ``values``).
    Origin: the channel, partition -1, offset = the replay id (-1 for a catch-up). One alert per event and
    error class (an event of 200 records too large makes 200 dead letters and one alert)."""
    ev = refusal.event
    origin = _origin(channel, ev.source_position)
    document: dict[str, Any] = {
        "channel": channel, "replay_id": origin.offset if origin.offset >= 0 else None,
        "position": ev.source_position, "object": ev.object, "sfid": ev.sfid, "local_key": ev.local_key,
        "operation": ev.operation.value, "changed_fields": ev.changed_fields, "event_id": ev.event_id,
        "transaction_key": ev.transaction_key, "commit_ts": ev.commit_ts.isoformat(),
        "error_class": refusal.error_class,
    }
    if refusal.size is not None:
        document["size"] = refusal.size
        document["limit"] = refusal.limit
    bulky: tuple[str, Any] = ("message", message) if message is not None else ("values", ev.values)
    details = {"channel": channel, "replay_id": ev.source_position}
    if ev.sfid:
        details["sfid"] = ev.sfid
    return build_dead_letter(
        topic=dlq, key=refusal.key, failure=Failure(FailureKind.PERMANENT, refusal.error_class, refusal.reason),
        stage=STAGE, origin=origin, document=document, bulky=bulky, limit=limit,
        alert_identity=f"{channel}|{ev.source_position}|{refusal.error_class}", alert_object=ev.object,
        alert_details=details,
    )


def event_dead_letter(*, channel: str, message: Mapping[str, Any], error_class: str, reason: str, dlq: str,
                      limit: int, sobject: str | None) -> DeadLetter:
    """The dead letter of a CometD message that makes no envelope at all (not a CDC event, values that make no
    envelope): channel, replay id (when readable) and the message itself as JSON when it fits."""
    replay_id = replay_id_of(message)
    failure = Failure(FailureKind.PERMANENT, error_class, f"{describe_change(channel, replay_id)}: {reason}"[:1000])
    return build_dead_letter(
        topic=dlq, key=None, failure=failure, stage=STAGE, origin=_origin(channel, replay_id),
        document={"channel": channel, "replay_id": replay_id, "object": sobject, "error_class": error_class},
        bulky=("message", message), limit=limit, alert_identity=f"{channel}|{replay_id}|{error_class}",
        alert_object=sobject, alert_details={"channel": channel, "replay_id": str(replay_id)},
    )
