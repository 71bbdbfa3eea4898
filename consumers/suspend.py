"""The durable half of schema drift, both directions: suspended targets and parked values on the compacted
control topic.

Why the control topic: it is compacted (the latest record per key survives every restart of every role and
of the broker), it exists wherever sfsync runs (``sfsync topics apply``), and a suspended field is control
state of one direction, like a paused object. Its pause/resume readers ignore these keys (they do not start
with a direction). Key forms: :mod:`consumers.drift`. One store per sink: ``sink`` (``salesforce`` /
``postgres``) and its ``direction`` choose the keys it reads and writes, so the two sinks never see each
other's state.

Contract of :class:`DriftStore`:

- a suspension is a ``ControlRecord`` (direction, ``pause``, by ``<sink>-sink``, reason = the alert's
  text) under the field's key; its end is a ``resume`` record under the same key;
- a parked value is an :class:`ApplyCommand` of that one field, encoded with Avro single-object encoding
  whatever ``kafka.schema_registry`` says: it is the sink's own state, read only by the sink, and never
  registered under the control topic's subject (whose records are ``ControlRecord``);
- :meth:`suspend` and :meth:`park` return once the broker acknowledged (or raise ``SinkUnavailable``: the
  runner then repeats the batch, nothing is committed), so a value is durable before the batch that
  stripped it counts as written;
- :meth:`resume` writes the replays to the apply topic (keyed by record: the runner and its version guard
  write them like any command), then tombstones the parked keys, then the ``resume`` record, then the
  resolved alert, each step acknowledged before the next: a crash in between replays again, harmlessly
  (a replay already written is screened out by its stored version).
- alerts go to ``<prefix>.alerts`` keyed by the sink's name, as the runner sends its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaException

from consumers import drift
from consumers.base import SinkUnavailable
from sfsync.config import SfsyncConfig
from sfsync.kafka.clients import make_producer
from sfsync.kafka.compacted import CompactedReadTimeout, read_compacted
from sfsync.kafka.topics import TopicNames
from sfsync.operations.control import parse_suspension_key, suspension_key
from sfsync.records import Alert, ApplyCommand, ControlAction, ControlRecord, Direction
from sfsync.serde import DecodeError, Serde

log = logging.getLogger("sfsync.consumers.drift")

K = TypeVar("K")
V = TypeVar("V")


class DriftStore:
    """Reads and writes the sink's drift state (see module contract)."""

    def __init__(self, cfg: SfsyncConfig, *, sink: str, direction: Direction, timeout: float = 30.0) -> None:
        self.cfg = cfg
        self.sink = sink
        self.direction = direction
        self.names = TopicNames(cfg.kafka.topic_prefix)
        self.serde = Serde.from_config(cfg.kafka)
        self.own = Serde()  # parked values: single-object encoding always (see module contract)
        self.timeout = timeout
        self.producer = make_producer(cfg.kafka, f"{sink}-sink-drift")

    def close(self) -> None:
        try:
            self.producer.flush(10)
        except Exception as e:  # closing: what was not acknowledged is repeated with its batch
            log.warning("drift state: not every record was acknowledged at close (%s)", e)

    # ------------------------------------------------------------------ reads
    def load(self) -> dict[tuple[str, str], ControlRecord]:
        """The suspensions in force of this direction: ``(object, target) -> pause record``."""
        def key(raw: bytes) -> tuple[str, str] | None:
            return parse_suspension_key(raw.decode(errors="replace"), self.direction)

        entries = self._read(key, lambda raw: self.serde.decode(raw, ControlRecord, self.names.control))
        return {k: r for k, r in entries.items() if r.action is ControlAction.PAUSE}

    def parked(self, obj: str, field: str) -> dict[str, ApplyCommand]:
        """Every value parked for one target: parked key -> its command."""
        prefix = drift.parked_prefix(self.direction, obj, field)

        def key(raw: bytes) -> str | None:
            text = raw.decode(errors="replace")
            return text if text.startswith(prefix) else None

        return self._read(key, lambda raw: self.own.decode(raw, ApplyCommand, self.names.control))

    def _read(self, key: Callable[[bytes], K | None], decode: Callable[[bytes], V]) -> dict[K, V]:
        try:
            return read_compacted(self.cfg.kafka, self.names.control, decode=decode, key=key, skip=DecodeError,
                                  timeout=self.timeout, missing_ok=True, role=f"{self.sink}-sink-drift-reader")
        except (CompactedReadTimeout, KafkaException) as e:
            raise SinkUnavailable(f"drift state on {self.names.control} unreadable: {e}", retry_after=2.0) from None

    # ------------------------------------------------------------------ writes
    def suspend(self, suspension: drift.Suspension, alert: Alert) -> None:
        m = suspension.mapped
        record = ControlRecord(direction=self.direction, action=ControlAction.PAUSE,
                               requested_by=f"{self.sink}-sink", reason=suspension.reason)
        self.producer.produce(self.names.control, self.serde.encode(record, self.names.control),
                              key=suspension_key(self.direction, m.object, m.target))
        self.producer.produce(self.names.alerts, self.serde.encode(alert, self.names.alerts), key=self.sink)
        self._flush()

    def park(self, parked: list[tuple[str, ApplyCommand]]) -> None:
        """Write ``(parked key, command)`` pairs and wait for the broker."""
        for key, command in parked:
            self.producer.produce(self.names.control, self.own.encode(command, self.names.control), key=key)
        if parked:
            self._flush()

    def resume(self, mapped: drift.MappedField, parked: dict[str, ApplyCommand], resolved: Alert) -> int:
        """Replay the newest of ``parked`` per record through the apply topic, then clear the keys read, then
        end the suspension; how many values were replayed."""
        topic = self.names.apply(self.direction)
        replays = drift.newest_per_record(parked.values(), self.direction)
        for command in replays:
            replay = drift.replay_command(command)
            self.producer.produce(topic, self.serde.encode(replay, topic), key=replay.key)
        self._flush()
        replayed = len(replays)
        for key in parked:
            self.producer.produce(self.names.control, None, key=key)
        what = "Salesforce field" if self.direction is Direction.OUTBOUND else "local column"
        record = ControlRecord(direction=self.direction, action=ControlAction.RESUME,
                               requested_by=f"{self.sink}-sink", reason=f"{what} {mapped.name} is back")
        self.producer.produce(self.names.control, self.serde.encode(record, self.names.control),
                              key=suspension_key(self.direction, mapped.object, mapped.target))
        self.producer.produce(self.names.alerts, self.serde.encode(resolved, self.names.alerts), key=self.sink)
        self._flush()
        return replayed

    def _flush(self) -> None:
        try:
            self.producer.flush(self.timeout)
        except Exception as e:  # a delivery failure or timeout: the batch is repeated, nothing is committed
            raise SinkUnavailable(f"drift state not acknowledged by the broker: {e}", retry_after=2.0) from None
