"""Sink acknowledgements on the control topic: ``sfsync pause`` / ``resume`` wait until the running sinks took it.

Contract:
- Every running sink instance keeps one :class:`~sfsync.records.SinkAck` on the compacted ``<prefix>.control``
  topic under ``ack:<direction>:<instance>`` (:func:`ack_key`; the instance id, :func:`instance_id`, is unique
  per sink runner: host, pid and a random part). It says up to which control-topic offset (per partition,
  the next offset) the instance's write loop has the control state in force: nothing a pause below that
  offset covers is written after the record is produced. The instance writes it (:class:`AckPublisher`, from
  its control follower's thread) when it starts (nothing applied yet: it is waited for while it loads), as
  soon as its loop took a new control change, and every :data:`BEAT_S` seconds as a liveness beat; a clean
  stop writes a tombstone for its key. Pause readers (:meth:`~sfsync.operations.control.ControlScope.parse`,
  :func:`~sfsync.operations.control.parse_suspension_key`) do not parse these keys, so they ignore them.
- Avro like every other record (``schemas/sink_ack.avsc``), but always in single-object encoding, also when
  ``kafka.schema_registry`` is set (as the drift sinks' parked values, docs/schema-drift.md): a registry
  checks every schema of a subject for compatibility with the previous one, and the control topic's subject
  (TopicNameStrategy) holds ``ControlRecord`` s, so registering a second record type there would be refused.
  Acknowledgements are sfsync's own bookkeeping, read only by sfsync (the sinks skip them by key, the CLI
  decodes them): nothing else needs the registry for them.
- :func:`judge` (pure): an instance is *live* while its last beat is at most :data:`STALE_BEATS` of its own
  beat intervals old (the writer's clock against the reader's: a skew up to that is tolerated); a live
  instance *acknowledged* a control record once its applied offset for the record's partition is past the
  record's offset; the others are *pending*. Silent instances (killed, no tombstone) are *stale*: not waited
  for, and named.
- :func:`wait_for_acks` reads the control topic to its end, then follows it until no live instance of the
  direction is pending, or the timeout. A sink that is not running is not waited for: it loads the control
  topic before it writes anything, so the change holds for it anyway.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from sfsync.config import KafkaConfig, SfsyncConfig
from sfsync.kafka.clients import make_consumer, make_producer
from sfsync.kafka.topics import TopicNames
from sfsync.records import Direction, SinkAck, utcnow
from sfsync.serde import DecodeError, Serde

log = logging.getLogger("sfsync.operations.acks")

__all__ = ["ACK_PREFIX", "BEAT_S", "STALE_BEATS", "AckPublisher", "AckReport", "ControlPosition", "ack_key",
           "instance_id", "is_live", "judge", "parse_ack_key", "wait_for_acks"]

#: keys of sink acknowledgements on the control topic
ACK_PREFIX = "ack:"
#: how often a running sink refreshes its acknowledgement (its liveness beat)
BEAT_S = 5.0
#: beats an instance may miss before readers take it for stopped
STALE_BEATS = 3


def ack_key(direction: Direction, instance: str) -> str:
    """``ack:<direction>:<instance>``: the key of one sink instance's acknowledgement."""
    return f"{ACK_PREFIX}{direction.value}:{instance}"


def parse_ack_key(key: str) -> tuple[Direction, str] | None:
    """``(direction, instance)`` of an acknowledgement key; ``None`` for any other key."""
    if not key.startswith(ACK_PREFIX):
        return None
    head, _, instance = key[len(ACK_PREFIX):].partition(":")
    try:
        direction = Direction(head)
    except ValueError:
        return None
    return (direction, instance) if instance else None


def instance_id() -> str:
    """A sink runner's id: host and pid say where it runs, the random part keeps two runners of one process
    (and a pid reused in a container) apart."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class ControlPosition:
    """Where one control record landed on the control topic."""

    partition: int
    offset: int


def is_live(ack: SinkAck, now: datetime, stale_beats: int = STALE_BEATS) -> bool:
    """Whether the instance beat within ``stale_beats`` of its beat intervals before ``now``."""
    return (now - ack.ts).total_seconds() * 1000 <= stale_beats * ack.beat_ms


def covers(ack: SinkAck, position: ControlPosition) -> bool:
    """Whether the instance has the control record at ``position`` in force in its write loop."""
    return ack.applied_offset(position.partition) > position.offset


@dataclass(frozen=True, slots=True)
class AckReport:
    """The instances of a direction against one control record (sorted by instance id).

    ``complete``: the control topic was read to its end (otherwise an instance may be missing)."""

    direction: Direction
    position: ControlPosition
    acknowledged: tuple[SinkAck, ...] = ()
    pending: tuple[SinkAck, ...] = ()
    stale: tuple[SinkAck, ...] = ()
    complete: bool = True

    @property
    def done(self) -> bool:
        """Every running instance took the record (also when none runs)."""
        return self.complete and not self.pending


def judge(acks: Iterable[SinkAck], direction: Direction, position: ControlPosition, now: datetime,
          *, complete: bool = True) -> AckReport:
    """Sort the acknowledgements of ``direction`` into acknowledged / pending / stale (see the module doc)."""
    acknowledged: list[SinkAck] = []
    pending: list[SinkAck] = []
    stale: list[SinkAck] = []
    for ack in sorted(acks, key=lambda a: a.instance):
        if ack.direction is not direction:
            continue
        if not is_live(ack, now):
            stale.append(ack)
        elif covers(ack, position):
            acknowledged.append(ack)
        else:
            pending.append(ack)
    return AckReport(direction, position, tuple(acknowledged), tuple(pending), tuple(stale), complete)


def wait_for_acks(cfg: SfsyncConfig, direction: Direction, position: ControlPosition,
                  timeout: float = 30.0) -> AckReport:
    """Follow the control topic until every live instance of ``direction`` acknowledged ``position``; the
    report as of then, or as of the timeout (``done`` False: someone is pending, or the topic could not be
    read to its end)."""
    topic = TopicNames(cfg.kafka.topic_prefix).control
    serde = Serde()  # single-object encoding always (module doc)
    deadline = time.monotonic() + timeout
    consumer = make_consumer(cfg.kafka, f"{cfg.kafka.topic_prefix}-ack-reader", "ack-reader",
                             **{"enable.partition.eof": True})
    acks: dict[str, SinkAck] = {}
    try:
        info = consumer.list_topics(topic, timeout=max(0.1, min(5.0, timeout))).topics.get(topic)
        if info is None or info.error is not None:
            raise LookupError(f"control topic {topic} not readable: {info.error if info else 'unknown'}")
        unread: set[int] = set()
        for p in info.partitions:  # an empty partition may never report its end: nothing to read there
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            if high > low:
                unread.add(p)
        unread.add(position.partition)  # holds the record just written, whatever the watermarks said
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions])
        while True:
            for msg in consumer.consume(200, 0.1):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        unread.discard(msg.partition() or 0)
                        continue
                    raise KafkaException(err)
                _take(acks, msg, direction, serde, topic)
            report = judge(acks.values(), direction, position, utcnow(), complete=not unread)
            if report.done or time.monotonic() >= deadline:
                return report
    finally:
        consumer.close()


def _take(acks: dict[str, SinkAck], msg: Message, direction: Direction, serde: Serde, topic: str) -> None:
    raw = msg.key()
    if raw is None:
        return
    key = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    parsed = parse_ack_key(key)
    if parsed is None or parsed[0] is not direction:
        return
    value = msg.value()
    if value is None:
        acks.pop(key, None)
        return
    try:
        acks[key] = serde.decode(value, SinkAck, topic)
    except DecodeError as e:
        log.warning("acknowledgement %s skipped: %s", key, e)


class AckPublisher:
    """Writes one sink instance's acknowledgement (see the module doc); called from one thread only.

    Best effort: a record that cannot be written is logged and tried again at the next beat (a reader then
    waits for the instance, or reports it, never takes it for done).
    """

    def __init__(self, kafka_cfg: KafkaConfig, direction: Direction, sink: str, *, beat_s: float = BEAT_S,
                 instance: str | None = None) -> None:
        self.direction = direction
        self.sink = sink
        self.beat_s = beat_s
        self.instance = instance or instance_id()
        self.key = ack_key(direction, self.instance)
        self._topic = TopicNames(kafka_cfg.topic_prefix).control
        self._serde = Serde()  # single-object encoding always (module doc)
        self._producer = make_producer(kafka_cfg, f"{sink}-sink-ack")
        self._sent_at = -math.inf
        self._sent_changes: int | None = None
        self._announced = False

    def announce(self, timeout: float = 5.0) -> None:
        """The instance is starting: nothing applied yet. Waits for the broker, so a control record written
        after this one is in the control state the instance then loads."""
        self._announced = True
        self._send({}, None)
        if self._producer.producer.flush(timeout):
            log.warning("%s sink: acknowledgement %s not delivered within %.0f s", self.sink, self.key, timeout)

    def publish(self, applied: Mapping[int, int], changes: int) -> None:
        """Write the acknowledgement when the loop took a new control change (``changes`` moved), or a beat is
        due; else nothing."""
        if changes != self._sent_changes or time.monotonic() - self._sent_at >= self.beat_s:
            self._send(applied, changes)
        self._producer.poll(0)

    def withdraw(self, timeout: float = 5.0) -> None:
        """A clean stop: a tombstone for the key (readers stop waiting for this instance). Nothing when it never
        announced itself (no control topic)."""
        if not self._announced:
            return
        try:
            self._producer.queue(self._topic, None, self.key, on_delivery=self._delivered)
            if self._producer.producer.flush(timeout):
                log.warning("%s sink: acknowledgement %s not withdrawn within %.0f s", self.sink, self.key, timeout)
        except Exception as e:  # BufferError, KafkaException: a reader will take the instance for stale
            log.warning("%s sink: acknowledgement %s not withdrawn: %s", self.sink, self.key, e)

    def _send(self, applied: Mapping[int, int], changes: int | None) -> None:
        ack = SinkAck(direction=self.direction, sink=self.sink, instance=self.instance,
                      applied={str(p): o for p, o in applied.items()}, beat_ms=int(self.beat_s * 1000))
        try:
            self._producer.queue(self._topic, self._serde.encode(ack, self._topic), self.key,
                                 on_delivery=self._delivered)
        except Exception as e:  # RegistryError, KafkaException: tried again at the next beat
            log.warning("%s sink: acknowledgement %s not written: %s", self.sink, self.key, e)
            return
        self._sent_at = time.monotonic()
        self._sent_changes = changes

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._sent_changes = None  # written again at the next call
            log.warning("%s sink: acknowledgement %s not delivered: %s", self.sink, self.key, err.str())
