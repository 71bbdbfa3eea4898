"""Pause and resume a direction (or one object of it): the compacted ``<prefix>.control`` topic.

Contract:
- A control record's scope is its Kafka key: ``inbound`` / ``outbound`` (the whole direction) or
  ``inbound:Contact`` (one object of it). The value is a :class:`~sfsync.records.ControlRecord`
  (direction, action, who, why, when); the Avro record has no object field, the key carries it.
  The latest record per key is in force, so the state survives a restart of every role and of the
  broker (the topic is compacted, never deleted).
- A direction is paused while its own key says ``pause``; an object is paused while its direction is,
  or its own key says ``pause``. Resuming the direction does not resume an object paused on its own.
- :func:`set_control` returns once the broker acknowledged the record, with where it landed (a
  :class:`~sfsync.operations.acks.ControlPosition`); :func:`~sfsync.operations.acks.wait_for_acks` then
  waits until every running sink of the direction took it (``sfsync pause`` does both). :func:`read_control`
  reads the topic to its end as of the call.
- :class:`ControlFollower` is how a sink knows: loaded to the end before the sink writes anything, then
  followed in a background thread, so a pause reaches a running sink within a fetch wait. With an
  :class:`~sfsync.operations.acks.AckPublisher` it also acknowledges, from that thread, what the sink's write
  loop marked applied (:meth:`ControlFollower.mark_applied`).
- Other keys share the topic: suspended fields (``field:...``, :func:`suspension_key`) and sink
  acknowledgements (``ack:...``, :mod:`sfsync.operations.acks`); :meth:`ControlScope.parse` returns ``None``
  for them, so pause/resume readers skip them.
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from sfsync.config import KafkaConfig, SfsyncConfig
from sfsync.kafka.clients import make_consumer, make_producer
from sfsync.kafka.compacted import read_compacted
from sfsync.kafka.topics import TopicNames
from sfsync.operations.acks import AckPublisher, ControlPosition
from sfsync.records import ControlAction, ControlRecord, Direction
from sfsync.serde import DecodeError, Serde

log = logging.getLogger("sfsync.operations.control")

__all__ = ["ControlFollower", "ControlScope", "ControlState", "ControlWrite", "parse_suspension_key", "read_control",
           "set_control", "suspended_fields", "suspension_key"]

#: keys of suspended fields (schema drift, docs/schema-drift.md) on the control topic; pause/resume readers
#: skip them (:meth:`ControlScope.parse` does not parse them)
SUSPENSION_PREFIX = "field:"


def suspension_key(direction: Direction, obj: str, field: str) -> str:
    """``field:<direction>:<Object>.<Field>``: the key of a field's suspension record (pause: suspended,
    resume: back) on the control topic."""
    return f"{SUSPENSION_PREFIX}{direction.value}:{obj}.{field}"


def parse_suspension_key(key: str, direction: Direction) -> tuple[str, str] | None:
    """``(object, field)`` of a suspension key of ``direction``; ``None`` for any other key."""
    head = f"{SUSPENSION_PREFIX}{direction.value}:"
    if not key.startswith(head):
        return None
    obj, dot, field = key[len(head):].partition(".")
    return (obj, field) if dot and obj and field else None


@dataclass(frozen=True, slots=True, order=True)
class ControlScope:
    """What one control record governs: a direction, or one object of it."""

    direction: Direction
    object: str | None = None

    @property
    def key(self) -> str:
        """The Kafka key on the control topic."""
        return self.direction.value if self.object is None else f"{self.direction.value}:{self.object}"

    @classmethod
    def parse(cls, key: str) -> ControlScope | None:
        """The scope of a control key; ``None`` for a key that is none (ignored by readers)."""
        head, _, obj = key.partition(":")
        try:
            direction = Direction(head)
        except ValueError:
            return None
        return cls(direction, obj or None)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class ControlState:
    """The control records in force, by scope (an immutable snapshot).

    A follower's snapshot also says how far it read: ``position`` (partition -> next offset: every record
    below it, of any key, is reflected) and ``changes`` (how many control records it applied: moves only with
    a pause or resume, not with the other keys of the topic). :func:`read_control` leaves both empty."""

    entries: Mapping[ControlScope, ControlRecord] = field(default_factory=lambda: MappingProxyType({}))
    position: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    changes: int = 0

    def direction_paused(self, direction: Direction) -> bool:
        record = self.entries.get(ControlScope(direction))
        return record is not None and record.action is ControlAction.PAUSE

    def paused_objects(self, direction: Direction) -> frozenset[str]:
        """Objects paused on their own (not counting a paused direction)."""
        return frozenset(s.object for s, r in self.entries.items()
                         if s.direction is direction and s.object is not None and r.action is ControlAction.PAUSE)

    def is_paused(self, direction: Direction, obj: str | None = None) -> bool:
        return self.direction_paused(direction) or (obj is not None and obj in self.paused_objects(direction))

    def record(self, scope: ControlScope) -> ControlRecord | None:
        return self.entries.get(scope)


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name in a bare container: the host is still worth knowing
        return f"unknown@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class ControlWrite:
    """A control record the broker acknowledged, and where it landed (what sinks acknowledge)."""

    scope: ControlScope
    record: ControlRecord
    position: ControlPosition


def set_control(cfg: SfsyncConfig, scope: ControlScope, action: ControlAction, *, requested_by: str | None = None,
                reason: str | None = None, timeout: float = 30.0) -> ControlWrite:
    """Write one control record and wait for the broker's acknowledgement (raises when it does not come:
    ``DeliveryError``, ``FlushTimeout``); the record written and its position."""
    names = TopicNames(cfg.kafka.topic_prefix)
    record = ControlRecord(direction=scope.direction, action=action, requested_by=requested_by or _who(),
                           reason=reason)
    producer = make_producer(cfg.kafka, "control")
    landed: list[ControlPosition] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            landed.append(ControlPosition(msg.partition() or 0, msg.offset() or 0))

    producer.produce(names.control, Serde.from_config(cfg.kafka).encode(record, names.control), key=scope.key,
                     on_delivery=delivered)
    producer.flush(timeout)
    return ControlWrite(scope, record, landed[0])


def read_control(cfg: SfsyncConfig, timeout: float = 30.0) -> ControlState:
    """The control state in force now (the control topic read to its end; a missing topic: nothing paused)."""
    names = TopicNames(cfg.kafka.topic_prefix)
    serde = Serde.from_config(cfg.kafka)
    entries = read_compacted(cfg.kafka, names.control, decode=lambda raw: serde.decode(raw, ControlRecord),
                             key=lambda raw: ControlScope.parse(raw.decode(errors="replace")), skip=DecodeError,
                             timeout=timeout, missing_ok=True, role="control-reader")
    return ControlState(MappingProxyType(dict(entries)))


def suspended_fields(cfg: SfsyncConfig, direction: Direction = Direction.OUTBOUND,
                     timeout: float = 30.0) -> frozenset[tuple[str, str]]:
    """``(object, field)`` of every field suspended now in ``direction`` (a missing topic: none)."""
    serde = Serde.from_config(cfg.kafka)
    entries = read_compacted(cfg.kafka, TopicNames(cfg.kafka.topic_prefix).control,
                             decode=lambda raw: serde.decode(raw, ControlRecord),
                             key=lambda raw: parse_suspension_key(raw.decode(errors="replace"), direction),
                             skip=DecodeError, timeout=timeout, missing_ok=True, role="control-reader")
    return frozenset(k for k, record in entries.items() if record.action is ControlAction.PAUSE)


class ControlFollower:
    """Follows ``<prefix>.control`` in a background thread; :attr:`state` is the latest snapshot.

    No consumer group: every partition is assigned from its beginning, so any number of sinks follow it
    and none commits anything. :meth:`wait_loaded` returns True once every partition was read to its end
    at least once (before that the state is unknown: a sink must not write). A record it cannot decode is
    skipped with a warning (its key keeps its previous value). A control topic that does not exist yet
    counts as empty and is looked for again every few seconds.

    With ``acks`` (a sink): the instance announces itself before it loads the topic (so a pause written
    after the announcement is in what it loads), then acknowledges what its write loop passed to
    :meth:`mark_applied`, at once when that holds a new control change, else once a beat; :meth:`close`
    withdraws the acknowledgement. Marking is the write loop's promise: every write it starts afterwards is
    screened against a state at least as new as the one marked.
    """

    def __init__(self, kafka_cfg: KafkaConfig, role: str, acks: AckPublisher | None = None) -> None:
        self.names = TopicNames(kafka_cfg.topic_prefix)
        self.serde = Serde.from_config(kafka_cfg)
        self._consumer = make_consumer(kafka_cfg, f"{kafka_cfg.topic_prefix}-{role}-control", f"{role}-control",
                                       **{"enable.partition.eof": True})
        self._entries: dict[ControlScope, ControlRecord] = {}
        self._position: dict[int, int] = {}
        self.state = ControlState()
        self._acks = acks
        self._marked: ControlState | None = None
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ControlFollower:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="control-follower", daemon=True)
            self._thread.start()
        return self

    def wait_loaded(self, timeout: float) -> bool:
        return self._loaded.wait(timeout)

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def instance(self) -> str | None:
        """The id this sink instance acknowledges under (``None`` without acknowledgements)."""
        return self._acks.instance if self._acks is not None else None

    def mark_applied(self, state: ControlState) -> None:
        """The write loop has ``state`` (one of :attr:`state`'s snapshots) in force from now on; acknowledged
        from the follower's thread."""
        self._marked = state

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._acks is not None:
            self._acks.withdraw()
        self._consumer.close()

    def _assign(self) -> set[int] | None:
        topic = self.names.control
        try:
            info = self._consumer.list_topics(topic, timeout=5).topics.get(topic)
        except Exception as e:  # KafkaException: broker not reachable yet; retried
            log.warning("control topic %s: cannot read its metadata yet (%s)", topic, e)
            return None
        if info is None or info.error is not None or not info.partitions:
            if info is not None and info.error is not None and info.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            log.warning("control topic %s does not exist: nothing is paused (run `sfsync topics apply`)", topic)
            self._loaded.set()
            return None
        partitions = set(info.partitions)
        if self._acks is not None:
            self._acks.announce()
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending = set()
        for p in partitions:  # an empty partition may never report its end: nothing to wait for there
            try:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            except Exception as e:  # KafkaException: not answered yet; wait for the partition's end instead
                log.warning("control topic %s[%d]: no watermarks yet (%s)", topic, p, e)
                low, high = 0, 1
            if high > low:
                pending.add(p)
        if not pending:
            self._loaded.set()
        return pending

    def _run(self) -> None:
        pending: set[int] | None = None
        while not self._stop.is_set():
            if pending is None:
                pending = self._assign()
                if pending is None:
                    self._stop.wait(3.0)
                    continue
            for msg in self._consumer.consume(100, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                        if not pending and not self._loaded.is_set():
                            self._loaded.set()
                    else:
                        log.warning("control topic: %s", err)
                    continue
                self._apply(msg.key(), msg.value(), msg.partition() or 0, msg.offset() or 0)
            self._acknowledge()

    def _acknowledge(self) -> None:
        marked = self._marked
        if self._acks is not None and self._loaded.is_set():
            self._acks.publish(marked.position if marked is not None else {},
                               marked.changes if marked is not None else -1)

    def _apply(self, raw_key: bytes | str | None, value: bytes | None, partition: int, offset: int) -> None:
        """Take one record; every record moves the position, only a control record changes the entries."""
        self._position[partition] = offset + 1
        scope = None if raw_key is None else ControlScope.parse(
            raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else raw_key)
        if scope is not None and self._take(scope, value):
            self.state = ControlState(MappingProxyType(dict(self._entries)), MappingProxyType(dict(self._position)),
                                      self.state.changes + 1)
        else:
            self.state = replace(self.state, position=MappingProxyType(dict(self._position)))

    def _take(self, scope: ControlScope, value: bytes | None) -> bool:
        """Apply one control record to the entries; False for one skipped."""
        if value is None:
            self._entries.pop(scope, None)
            return True
        try:
            record = self.serde.decode(value, ControlRecord, self.names.control)
        except DecodeError as e:
            log.warning("control record %s skipped: %s", scope, e)
            return False
        before = self.state.is_paused(scope.direction, scope.object)
        self._entries[scope] = record
        if self._loaded.is_set() or before != (record.action is ControlAction.PAUSE):
            log.info("control: %s %s (by %s%s)", scope, record.action.value, record.requested_by,
                     f": {record.reason}" if record.reason else "")
        return True
