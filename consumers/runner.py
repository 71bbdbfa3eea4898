"""The sink runner: one consume -> write -> route failures -> commit loop for every sink.

Contract (at-least-once, nothing lost):
- Messages are read from the sink's apply topic and its retry tiers, in
  batches of up to ``sinks.<name>.batch_size``, waiting at most
  ``linger_ms`` after the batch's first message to fill one.
- The sink writes the batch (:class:`consumers.base.Sink`). Per-record
  failures are routed by policy (:func:`route_failure`): transient ones to the
  next retry tier (``<prefix>.retry.<sink>.<tier>``, delayed by the tier's
  delay), permanent ones and exhausted retries to ``<prefix>.dlq.<sink>``,
  each with the failure headers of :mod:`consumers.failures`.
- Retry/DLQ messages and status records are flushed (broker-acknowledged)
  BEFORE offsets are committed, and offsets are committed only after the
  write returned. A crash anywhere replays the uncommitted batch; the sinks
  are idempotent.
- ``SinkUnavailable``: the runner pauses its partitions, keeps the consumer
  alive, and retries the same batch with growing waits; nothing is committed
  meanwhile.
- A retried command older than a newer command already written for the same
  record is dropped (a retry never overwrites a newer change).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from confluent_kafka import Consumer, Message, TopicPartition

from consumers.base import Sink, SinkUnavailable
from consumers.failures import (
    H_NOT_BEFORE,
    Failure,
    FailureKind,
    Origin,
    failure_headers,
    parse_failure_headers,
    read_headers,
)
from sfsync.config import SfsyncConfig
from sfsync.kafka.clients import CheckedProducer, commit_messages, make_consumer, make_producer
from sfsync.kafka.topics import TopicNames
from sfsync.records import Alert, AlertKind, AlertSeverity, ApplyCommand, Direction, RecordStatus, SyncState
from sfsync.serde import DecodeError, Serde

log = logging.getLogger("sfsync.sink")

AfterWrite = Callable[[list[ApplyCommand], list[Failure | None]], None]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one failed record goes: a topic and the attempt number it will carry."""

    topic: str
    attempt: int
    delay_ms: int
    dead: bool


def route_failure(failure: Failure, attempt: int, cfg: SfsyncConfig, sink: str) -> Route:
    """Pure routing policy: transient -> retry tier ``attempt`` (0-based), else DLQ.

    ``attempt`` counts the attempts already made including this one (>= 1).
    """
    names = TopicNames(cfg.kafka.topic_prefix)
    tiers = cfg.retry.tiers
    if failure.kind is FailureKind.TRANSIENT and attempt < cfg.retry.max_attempts and tiers:
        tier = tiers[min(attempt - 1, len(tiers) - 1)]
        return Route(names.retry(sink, tier.name), attempt, tier.delay_ms, dead=False)
    return Route(names.dlq(sink), attempt, 0, dead=True)


class NewestWritten:
    """Bounded memory of the newest source commit time written per record key."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._data: OrderedDict[str, datetime] = OrderedDict()
        self.capacity = capacity

    def is_stale(self, key: str, ts: datetime) -> bool:
        newest = self._data.get(key)
        return newest is not None and ts < newest

    def record(self, key: str, ts: datetime) -> None:
        newest = self._data.get(key)
        if newest is None or ts > newest:
            self._data[key] = ts
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)


@dataclass
class SinkStats:
    written: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    stale_skipped: int = 0
    batches: int = 0
    unavailable: int = 0


class SinkRunner:
    """Drives one :class:`~consumers.base.Sink` (see the module docstring for the guarantees)."""

    def __init__(self, cfg: SfsyncConfig, sink: Sink, after_write: AfterWrite | None = None) -> None:
        self.cfg = cfg
        self.sink = sink
        self.after_write = after_write
        self.names = TopicNames(cfg.kafka.topic_prefix)
        sink_cfg = cfg.sinks.postgres if sink.name == "postgres" else cfg.sinks.salesforce
        self.batch_size = sink_cfg.batch_size
        self.linger_s = sink_cfg.linger_ms / 1000
        self.source = self.names.apply_local if sink.name == "postgres" else self.names.apply_salesforce
        self.direction = Direction.INBOUND if sink.name == "postgres" else Direction.OUTBOUND
        self.retry_topics = [self.names.retry(sink.name, t.name) for t in cfg.retry.tiers]
        self.serde = Serde(registry_url=cfg.kafka.schema_registry.url if cfg.kafka.schema_registry else None)
        self.newest = NewestWritten()
        self.stats = SinkStats()
        self._delayed: dict[tuple[str, int], float] = {}
        self.consumer: Consumer = make_consumer(cfg.kafka, f"{cfg.kafka.topic_prefix}-{sink.name}-sink",
                                                f"{sink.name}-sink")
        self.producer: CheckedProducer = make_producer(cfg.kafka, f"{sink.name}-sink")

    # ------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe([self.source, *self.retry_topics])
        try:
            while not stop.is_set():
                self._resume_due()
                messages = self._next_batch()
                if messages:
                    self.process(messages, stop)
        finally:
            self.consumer.close()
            self.producer.flush(30)
            self.sink.close()

    def _next_batch(self, idle_wait: float = 0.5) -> list[Message]:
        """Up to ``batch_size`` messages, waiting at most ``linger`` after the FIRST one arrived.

        Counting the linger from the first message (not from the call) keeps batches full while
        records flow, e.g. 10,000 inserts in 50 calls of 200, and bounds a lone record's wait.
        """
        first = self.consumer.poll(idle_wait)
        if first is None:
            return []
        messages = [first]
        deadline = time.monotonic() + self.linger_s
        while len(messages) < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            messages += self.consumer.consume(self.batch_size - len(messages), remaining)
        return messages

    def process(self, messages: list[Message], stop: threading.Event) -> None:
        """Write one batch, route its failures, then commit. Exposed for tests."""
        batch: list[tuple[Message, ApplyCommand]] = []
        consumed: list[Message] = []
        held: set[tuple[str, int]] = set()
        for msg in messages:
            if msg.error() is not None:
                log.warning("consumer error: %s", msg.error())
                continue
            tp = (msg.topic() or "", msg.partition() or 0)
            if tp in held:
                continue  # a delayed retry earlier in this partition holds the rest back
            if self._hold_if_early(msg):
                held.add(tp)
                continue
            consumed.append(msg)
            try:
                command = self.serde.decode(msg.value() or b"", ApplyCommand, msg.topic())
            except DecodeError as e:
                self._dead_letter_raw(msg, Failure(FailureKind.PERMANENT, "DecodeError", e.reason))
                continue
            if self.newest.is_stale(command.key, command.source_commit_ts):
                self.stats.stale_skipped += 1
                continue
            batch.append((msg, command))
        if batch:
            results = self._write_until_accepted([c for _, c in batch], stop)
            if results is None:
                return  # stopping while the target was unavailable: nothing committed
            self._route(batch, results)
        self.producer.flush(60)
        commit_messages(self.consumer, consumed)
        self.stats.batches += 1

    def _write_until_accepted(self, commands: list[ApplyCommand], stop: threading.Event) -> list[Failure | None] | None:
        wait = 0.5
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    results = self.sink.write(commands)
                    if len(results) != len(commands):
                        raise RuntimeError(f"{self.sink.name} sink returned {len(results)} results for "
                                           f"{len(commands)} commands")
                    if self.after_write is not None:
                        self.after_write(commands, results)
                    return results
                except SinkUnavailable as e:
                    self.stats.unavailable += 1
                    if e.alert and not paused:  # once per outage, not per retry
                        self._alert(e)
                    log.warning("%s sink unavailable (%s); retrying the batch of %d in %.1f s",
                                self.sink.name, e, len(commands), max(wait, e.retry_after))
                    if not paused:
                        paused = list(self.consumer.assignment())
                        self.consumer.pause(paused)
                    deadline = time.monotonic() + max(wait, e.retry_after)
                    while time.monotonic() < deadline:
                        if stop.is_set():
                            return None
                        self.consumer.poll(0.1)  # keeps the group membership alive; paused: returns nothing
                    wait = min(wait * 2, 30.0)
        finally:
            if paused:
                self.consumer.resume(paused)

    # ------------------------------------------------------------ routing

    def _route(self, batch: list[tuple[Message, ApplyCommand]], results: list[Failure | None]) -> None:
        now = datetime.now(UTC)
        for (msg, command), failure in zip(batch, results, strict=True):
            attempt = command.attempt + 1
            if failure is None:
                self.stats.written += 1
                self.newest.record(command.key, command.source_commit_ts)
                self._status(command, SyncState.SUCCESS, attempt - 1, None, now)
                continue
            self.stats.failed += 1
            route = route_failure(failure, attempt, self.cfg, self.sink.name)
            previous = parse_failure_headers(_headers(msg))
            origin = previous.origin or Origin(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            headers = failure_headers(failure, stage=f"{self.sink.name}-sink", attempt=attempt, origin=origin,
                                      first_attempt=previous.first_attempt, now=now)
            if route.dead:
                self.stats.dead_lettered += 1
                value = self.serde.encode(replace(command, attempt=attempt), route.topic)
                log.warning("dead letter %s %s: %s %s", route.topic, command.key, failure.error_class, failure.message)
            else:
                self.stats.retried += 1
                value = self.serde.encode(replace(command, attempt=attempt), route.topic)
                not_before = int(now.timestamp() * 1000) + route.delay_ms
                headers.append((H_NOT_BEFORE, str(not_before).encode()))
            self.producer.produce(route.topic, value, key=command.key, headers=list(headers))
            self._status(command, SyncState.FAILED, attempt, f"{failure.error_class}: {failure.message}", now)

    def _alert(self, e: SinkUnavailable) -> None:
        raw_kind = str(getattr(e, "alert_kind", "other"))
        kind = AlertKind(raw_kind) if raw_kind in {k.value for k in AlertKind} else AlertKind.OTHER
        alert = Alert(kind=kind,
                      severity=AlertSeverity.CRITICAL, message=f"{self.sink.name} sink paused: {e}",
                      details={"sink": self.sink.name})
        self.producer.produce(self.names.alerts, self.serde.encode(alert, self.names.alerts), key=self.sink.name)
        self.producer.flush(30)

    def _dead_letter_raw(self, msg: Message, failure: Failure) -> None:
        self.stats.dead_lettered += 1
        origin = Origin(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        headers = failure_headers(failure, stage=f"{self.sink.name}-sink", attempt=1, origin=origin)
        self.producer.produce(self.names.dlq(self.sink.name), msg.value(), key=msg.key(), headers=list(headers))

    def _status(self, command: ApplyCommand, state: SyncState, failures: int, error: str | None,
                now: datetime) -> None:
        status = RecordStatus(key=command.key, object=command.object, direction=self.direction, state=state,
                              sfid=command.sfid, local_key=command.local_key, failure_count=failures,
                              last_error=error, last_attempt_ts=now, updated_ts=now)
        self.producer.produce(self.names.status, self.serde.encode(status, self.names.status),
                              key=status.kafka_key)

    # ------------------------------------------------------- retry delays

    def _hold_if_early(self, msg: Message) -> bool:
        """A retry message whose delay has not passed: pause its partition and rewind to it."""
        if msg.topic() not in self.retry_topics:
            return False
        raw = read_headers(_headers(msg)).get(H_NOT_BEFORE)
        if not raw:
            return False
        due = int(raw) / 1000
        if due <= time.time():
            return False
        tp = TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        self.consumer.pause([tp])
        self.consumer.seek(tp)
        self._delayed[(msg.topic() or "", msg.partition() or 0)] = due
        return True

    def _resume_due(self) -> None:
        if not self._delayed:
            return
        now = time.time()
        due = [tp for tp, at in self._delayed.items() if at <= now]
        for topic, partition in due:
            del self._delayed[(topic, partition)]
            self.consumer.resume([TopicPartition(topic, partition)])


def _headers(msg: Message) -> list[tuple[str, bytes | None]]:
    """Message headers as (name, bytes) pairs, whatever form librdkafka returned."""
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]
