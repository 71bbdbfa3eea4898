"""The sink runner: one consume -> write -> route failures -> commit loop for every sink.

Contract (at-least-once, nothing lost):
- Messages are read from the sink's apply topic and its retry tiers (every
  ``<prefix>.retry.<sink>.*`` topic, by pattern: a renamed tier strands nothing), in
  batches of up to ``sinks.<name>.batch_size``. A batch waits ``linger_ms``
  after its first message; after that it keeps filling only while enough
  records to fill it are known to be waiting (:mod:`consumers.backlog`), so a
  backlog always goes out in full batches whatever the machine's speed.
- The sink writes the batch (:class:`consumers.base.Sink`). Per-record
  failures are routed by policy (:func:`route_failure`): transient ones to the
  next retry tier (``<prefix>.retry.<sink>.<tier>``, delayed by the tier's
  delay), permanent ones and exhausted retries to ``<prefix>.dlq.<sink>``,
  each with the failure headers of :mod:`sfsync.failures`.
- Retry/DLQ messages and status records are flushed (broker-acknowledged)
  BEFORE offsets are committed, and offsets are committed only after the
  write returned. A crash anywhere replays the uncommitted batch; the sinks
  are idempotent.
- ``SinkUnavailable``: the runner pauses its partitions, keeps the consumer
  alive, and retries the same batch with growing waits; nothing is committed
  meanwhile.
- Operator pause (``sfsync pause <direction> [--object X]``, the compacted control topic,
  :class:`sfsync.operations.control.ControlFollower`): the runner loads the control state before it
  writes anything (a pause survives its restart), and while its direction is paused it writes nothing:
  the same keep-alive as an outage (every assigned partition paused, also after a rebalance, anything a
  poll still returns sought back to; a batch already read is held, never committed unwritten). A paused
  object holds its partition from that object's first command on (order per partition is kept, so
  other objects behind it in that partition wait too); the other partitions flow.
- Acknowledged pause (:mod:`sfsync.operations.acks`): ``sfsync pause`` returns once every running sink took
  it. The loop marks the control state applied (:meth:`ControlFollower.mark_applied`, acknowledged by the
  follower's thread) only where no write is under way: at the top of each turn, and while it waits out a
  pause or an outage. Every write attempt is screened right before it against the state then (the direction,
  and each command's object again: a batch held through a pause or an outage meets the pauses made
  meanwhile; a command of an object paused since holds its partition from there, and that partition's rest
  of the batch is neither written nor committed), so nothing a marked pause covers is written after the mark.
- Every batch is screened against per-field versions kept at the target
  (:mod:`consumers.versions`): a retry writes the fields it alone carries and
  never overwrites a newer value, across restarts, rebalances and replicas.
- Alerts: an outage with an alert (credentials refused, ...) raises one alert and, once the target takes
  a batch again, one "resolved" alert of the same cause (an outage whose ``SinkUnavailable`` has a
  ``retry_when`` callable, refused credentials, is retried as soon as it returns True: the role's config
  file changed, :mod:`sfsync.config.credentials`); ``alerts.consecutive_failures`` records in a
  row that fail (per sink process) raise a ``consecutive_failures`` alert, the next success resolves it
  (:class:`sfsync.operations.alerts.FailureStreak`). A target unreachable (a ``SinkUnavailable`` without an
  alert of its own, at start or mid-run) for longer than a minute raises one ``connection_down`` alert
  (cause ``connection_down:<sink>-sink:<sink>``), resolved when the target answers again
  (:class:`~sfsync.operations.alerts.DownWatch`). With ``alerts.api_budget_warn_share``, a sink whose
  ``client`` reports API usage (``client.usage() -> (used, limit)``, the Salesforce sink) raises one
  ``api_budget`` warning when the org's usage reaches that share, resolved when it is read below it.
- Superseded: a command the versions screen drops whole (the target holds a newer version of every field
  it carries) is not written; its record's status becomes Superseded (it counts as done, like a success).
- Health (:mod:`sfsync.health`): alive while the loop turns; ready once the
  target answered and the group assigned this member its partitions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from consumers.backlog import BacklogProbe, FillState, batch_complete
from consumers.base import Sink, SinkUnavailable
from consumers.versions import VersionGuard
from sfsync.backoff import Backoff
from sfsync.config import SfsyncConfig, SinkConfig
from sfsync.failures import (
    H_NOT_BEFORE,
    Failure,
    FailureKind,
    Origin,
    failure_headers,
    parse_failure_headers,
    read_headers,
)
from sfsync.health import Health
from sfsync.kafka.clients import CheckedProducer, commit_messages, make_consumer, make_producer
from sfsync.kafka.lineage import read_lineage
from sfsync.kafka.topics import TopicNames
from sfsync.operations.acks import AckPublisher
from sfsync.operations.alerts import (
    DOWN_AFTER,
    DownWatch,
    FailureStreak,
    StreakEvent,
    ThresholdWatch,
    connection_cause,
    resolved_alert,
)
from sfsync.operations.control import ControlFollower
from sfsync.records import Alert, AlertKind, AlertSeverity, ApplyCommand, Direction, RecordStatus, SyncState
from sfsync.salesforce.budget import usage_share
from sfsync.serde import DecodeError, Serde

log = logging.getLogger("sfsync.sink")

#: no cut in a partition (:meth:`SinkRunner._screen_objects`)
_NO_CUT = 2**63

AfterWrite = Callable[[list[ApplyCommand], list[Failure | None]], None]
Usage = Callable[[], "tuple[int, int] | None"]


def _usage_of(sink: Sink) -> Usage | None:
    """The sink's API usage reading (``sink.client.usage``), when its target has a daily API budget."""
    usage = getattr(getattr(sink, "client", None), "usage", None)
    return usage if callable(usage) else None


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


@dataclass
class SinkStats:
    written: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    superseded: int = 0
    batches: int = 0
    unavailable: int = 0


class SinkRunner:
    """Drives one :class:`~consumers.base.Sink` (see the module docstring for the guarantees)."""

    def __init__(self, cfg: SfsyncConfig, sink: Sink, after_write: AfterWrite | None = None,
                 health: Health | None = None, *, down_after_s: float = DOWN_AFTER) -> None:
        self.cfg = cfg
        self.sink = sink
        self.after_write = after_write
        self.names = TopicNames(cfg.kafka.topic_prefix)
        sink_cfg: SinkConfig = getattr(cfg.sinks, sink.name)
        self.batch_size = sink_cfg.batch_size
        self.linger_s = sink_cfg.linger_ms / 1000
        self.stall_s = sink_cfg.stall_ms / 1000
        self.direction = sink.direction
        self.source = self.names.apply(sink.direction)
        # every tier's topic by pattern, so a renamed tier's topic is still read until it is empty
        self.retry_pattern = self.names.retry_pattern(sink.name)
        self.serde = Serde.from_config(cfg.kafka)
        self.versions = VersionGuard(cfg, sink.direction)
        self.stats = SinkStats()
        self.health = health or Health(f"{sink.name}-sink", checks=("target", "group"))
        self._delayed: dict[tuple[str, int], float] = {}
        #: partitions held at the first command of an object the operator paused: partition -> object
        self._object_held: dict[tuple[str, int], str] = {}
        acks = AckPublisher(cfg.kafka, sink.direction, sink.name)
        #: the id this instance acknowledges control changes under (``sfsync pause`` names it)
        self.instance = acks.instance
        self.control = ControlFollower(cfg.kafka, f"{sink.name}-sink", acks)
        self.streak = FailureStreak(cfg.alerts.consecutive_failures)
        self.down = DownWatch(down_after_s)
        warn = cfg.alerts.api_budget_warn_share
        self._usage = _usage_of(sink) if warn is not None else None
        self.budget_warn = ThresholdWatch(warn) if warn is not None else None
        self._owned: set[int] = set()
        self.consumer: Consumer = make_consumer(cfg.kafka, self.names.sink_group(sink.name), f"{sink.name}-sink")
        self.producer: CheckedProducer = make_producer(cfg.kafka, f"{sink.name}-sink")
        upstream = self.names.changes(sink.direction)
        self.backlog = BacklogProbe(
            self.consumer, self.source,
            # follows the change topic's end; a small queue, as what it reads is thrown away
            make_consumer(cfg.kafka, self.names.processor_group, f"{sink.name}-sink-probe",
                          **{"queued.max.messages.kbytes": 1024}), upstream,
            # the CDC producer writes changes.inbound in transactions: a commit marker takes one offset
            markers=sink.direction is Direction.INBOUND)

    # ------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        try:
            if not self._wait_for_target(stop) or not self._wait_for_control(stop):
                return
            self.consumer.subscribe([self.source, self.retry_pattern], on_assign=self._on_assign,
                                    on_revoke=self._on_revoke)
            while not stop.is_set():
                self.health.beat()
                self._mark_applied()  # no write under way: what follows is screened against this state or newer
                self.backlog.pump()
                self._resume_due()
                self._release_objects()
                if self._direction_paused():
                    self._wait_while_paused(stop)
                    continue
                messages = self._next_batch()
                if messages:
                    self.process(messages, stop)
        finally:
            self.control.close()
            self.consumer.close()
            self.backlog.close()
            self.versions.close()
            self.producer.flush(30)
            self.sink.close()

    def _wait_for_target(self, stop: threading.Event) -> bool:
        """Probe the target until it answers (ready needs it); False when stopped first."""
        backoff = Backoff(0.5, 10.0)
        while not stop.is_set():
            self.health.beat()
            try:
                self.sink.probe()
            except SinkUnavailable as e:
                self.health.mark("target", False, str(e))
                self._connection_down(e)
                wait = backoff.next()
                log.warning("%s sink: target not reachable yet (%s); retrying in %.1f s", self.sink.name, e, wait)
                stop.wait(wait)
                continue
            self.health.mark("target", True, "reachable")
            self._connection_up()
            return True
        return False

    def _wait_for_control(self, stop: threading.Event) -> bool:
        """Load the operator's pause/resume state before anything is written; False when stopped first."""
        self.control.start()
        while not stop.is_set():
            self.health.beat()
            if self.control.wait_loaded(0.5):
                if self._direction_paused():
                    log.warning("%s sink: %s is paused by the operator; writing nothing until `sfsync resume %s`",
                                self.sink.name, self.direction.value, self.direction.value)
                return True
        return False

    def _direction_paused(self) -> bool:
        return self.control.state.direction_paused(self.direction)

    def _mark_applied(self) -> None:
        """The control state now is in force from here on (call only where no write is under way; see the
        module doc): the follower acknowledges it."""
        self.control.mark_applied(self.control.state)

    def _wait_while_paused(self, stop: threading.Event) -> bool:
        """Keep the group membership while the operator pauses this direction; True once resumed,
        False when stopped first. Partitions are resumed afterwards (holds re-establish themselves)."""
        log.info("%s sink: %s paused by the operator", self.sink.name, self.direction.value)
        try:
            while self._direction_paused():
                if stop.is_set():
                    return False
                self.health.beat()
                self._mark_applied()  # a batch held here is screened again before it is written
                self.backlog.pump()
                self._keep_alive_paused()
        finally:
            self.consumer.resume(self.consumer.assignment())
        log.info("%s sink: %s resumed", self.sink.name, self.direction.value)
        return True

    def _release_objects(self) -> None:
        """Resume the partitions held for objects the operator has resumed since."""
        if not self._object_held:
            return
        paused = self.control.state.paused_objects(self.direction)
        for tp, obj in list(self._object_held.items()):
            if obj not in paused:
                del self._object_held[tp]
                self.consumer.resume([TopicPartition(*tp)])

    def _hold_for_object(self, msg: Message, obj: str) -> None:
        """A command of a paused object: pause its partition and rewind to it (it is written on resume)."""
        tp = TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        self.consumer.pause([tp])
        self.consumer.seek(tp)
        self._object_held[(tp.topic, tp.partition)] = obj

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # cooperative-sticky: callbacks carry increments, and the consumer's assignment is updated after them
        self._owned |= {tp.partition for tp in partitions if tp.topic == self.source}
        self._mark_assignment()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._owned -= {tp.partition for tp in partitions if tp.topic == self.source}
        for tp in partitions:  # a held partition taken away is its new owner's to hold
            self._object_held.pop((tp.topic, tp.partition), None)
        self._mark_assignment()

    def _mark_assignment(self) -> None:
        self.health.mark("group", True, f"joined; {len(self._owned)} partition(s) of {self.source} assigned")

    def _next_batch(self, idle_wait: float = 0.5) -> list[Message]:
        """Up to ``batch_size`` messages: full, or complete by :func:`consumers.backlog.batch_complete`.

        The linger counts from the batch's FIRST message (it bounds a lone record's wait); past it the
        batch keeps filling while enough records to fill it are known to be on their way, so a backlog
        goes out in full batches (10,000 inserts: 50 calls of 200) on an idle or a busy machine alike.
        """
        first = self.consumer.poll(idle_wait)
        if first is None:
            return []
        messages = [first]
        self._note_lineage(first)
        started = last_arrival = time.monotonic()
        while True:
            now = time.monotonic()
            state = FillState(size=len(messages), batch_size=self.batch_size, since_first_s=now - started,
                              since_last_arrival_s=now - last_arrival, linger_s=self.linger_s, stall_s=self.stall_s)
            lingering = state.since_first_s < self.linger_s
            if batch_complete(state, None if lingering or state.size >= self.batch_size else self.backlog.waiting()):
                return messages
            wait = self.linger_s - state.since_first_s if lingering else 0.02
            got = self.consumer.consume(self.batch_size - len(messages), max(wait, 0.001))
            if got:
                last_arrival = time.monotonic()
                for msg in got:
                    self._note_lineage(msg)
                messages += got

    def _note_lineage(self, msg: Message) -> None:
        if msg.topic() == self.source and msg.error() is None:
            lineage = read_lineage(_headers(msg))
            if lineage is not None:
                self.backlog.seen(*lineage)

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
            try:
                command = self.serde.decode(msg.value() or b"", ApplyCommand, msg.topic())
            except DecodeError as e:
                consumed.append(msg)
                self._dead_letter_raw(msg, Failure(FailureKind.PERMANENT, "DecodeError", e.reason))
                continue
            if command.object in self.control.state.paused_objects(self.direction):
                held.add(tp)  # the rest of this partition waits behind it: order per partition is kept
                self._hold_for_object(msg, command.object)
                continue
            consumed.append(msg)
            batch.append((msg, command))
        cut: dict[tuple[str, int], int] = {}
        if batch:
            outcome = self._write_until_accepted(batch, stop, cut)
            if outcome is None:
                return  # stopping while the target was unavailable: nothing committed
            batch, results, superseded = outcome
            self._route(batch, results, superseded)
        self.producer.flush(60)
        # partitions taken away meanwhile (a rebalance during an outage) are their new owner's, and a partition
        # held for an object paused since the batch was read is read again from the held command: not committed
        owned = self._assigned()
        self._commit([m for m in consumed if (tp := (m.topic() or "", m.partition() or 0)) in owned
                      and (m.offset() or 0) < cut.get(tp, _NO_CUT)])
        self.stats.batches += 1

    def _assigned(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def _commit(self, messages: list[Message]) -> None:
        try:
            commit_messages(self.consumer, messages)
        except KafkaException as e:
            # The group moved on (this member was too slow or left): the new owner reads these messages
            # again from the last commit; the versions at the target make the repeat harmless.
            log.warning("%s sink: offsets not committed, the batch is abandoned to the partitions' new owner (%s)",
                        self.sink.name, e)

    def _write_until_accepted(self, batch: list[tuple[Message, ApplyCommand]], stop: threading.Event,
                              cut: dict[tuple[str, int], int]
                              ) -> tuple[list[tuple[Message, ApplyCommand]], list[Failure | None], set[int]] | None:
        """Write ``batch`` until the target takes it: (what was written, its results, the indexes of superseded
        commands); ``None`` when stopped.

        While the target is unavailable every assigned partition stays paused, also those a rebalance
        assigns meanwhile, and anything a keep-alive poll still returns is sought back to, so nothing
        received is lost. Before each attempt, the records of partitions taken away are dropped from the
        batch: their new owner writes them; and the batch is screened against the objects paused then
        (:meth:`_screen_objects`, which records in ``cut`` where a partition is held from).
        """
        backoff = Backoff(0.5, 30.0)
        paused = False
        alerted: SinkUnavailable | None = None
        try:
            while True:
                if self._direction_paused():  # the operator paused while this batch was being read: hold it
                    paused = True
                    if not self._wait_while_paused(stop):
                        return None
                if paused:
                    owned = self._assigned()
                    batch = [(m, c) for m, c in batch if (m.topic() or "", m.partition() or 0) in owned]
                batch = self._screen_objects(batch, cut)
                if not batch:
                    return [], [], set()
                try:
                    results, superseded = self._write_versioned([c for _, c in batch])
                    if alerted is not None:
                        self._resolve_outage(alerted)
                    self._connection_up()
                    self._check_budget()
                    return batch, results, superseded
                except SinkUnavailable as e:
                    self.stats.unavailable += 1
                    if e.alert and alerted is None:  # once per outage, not per retry
                        self._alert(e)
                        alerted = e
                    elif not e.alert:
                        self._connection_down(e)
                    wait = max(backoff.next(), e.retry_after)
                    log.warning("%s sink unavailable (%s); retrying the batch of %d in %.1f s",
                                self.sink.name, e, len(batch), wait)
                    paused = True
                    deadline = time.monotonic() + wait
                    # e.g. refused credentials: the config file changed, so retry now, not at the outage pace
                    retry_when: Callable[[], bool] | None = getattr(e, "retry_when", None)
                    while time.monotonic() < deadline:
                        if stop.is_set():
                            return None
                        self.health.beat()
                        self._mark_applied()  # the batch is screened again before the next attempt
                        if not e.alert and self.down.check() is StreakEvent.ALERT:
                            self._send_connection_alert()
                        self._keep_alive_paused()
                        if retry_when is not None and retry_when():
                            break
        finally:
            if paused:
                self.consumer.resume(self.consumer.assignment())

    def _screen_objects(self, batch: list[tuple[Message, ApplyCommand]], cut: dict[tuple[str, int], int]
                        ) -> list[tuple[Message, ApplyCommand]]:
        """``batch`` without what an object pause holds now: at a paused object's first command of a partition
        the partition is held (:meth:`_hold_for_object`) and ``cut`` records its offset; that command and the
        partition's rest of the batch are dropped (read again on the object's resume, in order)."""
        paused = self.control.state.paused_objects(self.direction)
        if not paused:
            return batch
        kept = []
        for msg, command in batch:  # in offset order per partition
            tp = (msg.topic() or "", msg.partition() or 0)
            offset = msg.offset() or 0
            if offset >= cut.get(tp, _NO_CUT):
                continue
            if command.object in paused:
                cut[tp] = offset
                self._hold_for_object(msg, command.object)
                continue
            kept.append((msg, command))
        return kept

    def _keep_alive_paused(self) -> None:
        """Poll to keep the group membership, with every assigned partition paused (a rebalance may have
        added some since the last poll); a message that still comes is sought back to, for later."""
        self.consumer.pause(self.consumer.assignment())
        msg = self.consumer.poll(0.1)
        if msg is not None and msg.error() is None:
            self.consumer.seek(TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0))
            self.consumer.pause(self.consumer.assignment())

    def _write_versioned(self, commands: list[ApplyCommand]) -> tuple[list[Failure | None], set[int]]:
        """Write what is not older than the target's versions (:mod:`consumers.versions`), with the records
        locked, and record the new versions of what was written: (results per command, the indexes of the
        superseded ones: not written, and counted as done)."""
        with self.versions.batch(commands) as screened:
            indexes, to_write = screened.to_write()
            written = self.sink.write(to_write) if to_write else []
            if len(written) != len(to_write):
                raise RuntimeError(f"{self.sink.name} sink returned {len(written)} results for "
                                   f"{len(to_write)} commands")
            results: list[Failure | None] = [None] * len(commands)
            for i, result in zip(indexes, written, strict=True):
                results[i] = result
            if self.after_write is not None:
                self.after_write(to_write, written)
            self.versions.save(screened.record(results))
            self.stats.superseded += screened.superseded
        return results, {i for i, c in enumerate(screened.commands) if c is None}

    # ------------------------------------------------------------ routing

    def _route(self, batch: list[tuple[Message, ApplyCommand]], results: list[Failure | None],
               superseded: set[int] | None = None) -> None:
        now = datetime.now(UTC)
        for i, ((msg, command), failure) in enumerate(zip(batch, results, strict=True)):
            attempt = command.attempt + 1
            if failure is None:
                self.stats.written += 1
                if superseded and i in superseded:
                    self._status(command, SyncState.SUPERSEDED, 0,
                                 "not written: the target holds a newer version of every field it carries", now)
                else:
                    self._status(command, SyncState.SUCCESS, attempt - 1, None, now)
                if self.streak.record(True) is StreakEvent.RESOLVED:
                    self._streak_resolved()
                continue
            self.stats.failed += 1
            if self.streak.record(False) is StreakEvent.ALERT:
                self._streak_alert(failure)
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
        alert = Alert(kind=e.alert_kind,
                      severity=AlertSeverity.CRITICAL, message=f"{self.sink.name} sink paused: {e}",
                      details={"sink": self.sink.name, "direction": self.direction.value,
                               "cause": self._outage_cause(e)})
        self._send_alert(alert)

    def _outage_cause(self, e: SinkUnavailable) -> str:
        # an outage may name the system that caused it (the Salesforce sink's link-back writes to PostgreSQL)
        return f"{e.alert_kind.value}:{getattr(e, 'target', None) or self.sink.name}"

    def _resolve_outage(self, e: SinkUnavailable) -> None:
        self._send_alert(resolved_alert(self._outage_cause(e), e.alert_kind,
                                        f"{self.sink.name} sink writes again (was: {e})",
                                        {"sink": self.sink.name, "direction": self.direction.value}))

    def _streak_cause(self) -> str:
        return f"{AlertKind.CONSECUTIVE_FAILURES.value}:{self.direction.value}"

    def _streak_alert(self, failure: Failure) -> None:
        n = self.streak.count
        self._send_alert(Alert(
            kind=AlertKind.CONSECUTIVE_FAILURES, severity=AlertSeverity.CRITICAL,
            message=f"{n} {self.direction.value} records in a row failed in the {self.sink.name} sink; "
                    f"last: {failure.error_class}: {failure.message[:300]}",
            details={"sink": self.sink.name, "direction": self.direction.value, "count": str(n),
                     "error_class": failure.error_class, "cause": self._streak_cause()}))

    def _streak_resolved(self) -> None:
        self._send_alert(resolved_alert(self._streak_cause(), AlertKind.CONSECUTIVE_FAILURES,
                                        f"{self.direction.value} records are written again by the "
                                        f"{self.sink.name} sink",
                                        {"sink": self.sink.name, "direction": self.direction.value}))

    def _connection_down(self, e: SinkUnavailable) -> None:
        if self.down.down(str(e)) is StreakEvent.ALERT:
            self._send_connection_alert()

    def _connection_cause(self) -> str:
        return connection_cause(f"{self.sink.name}-sink", self.sink.name)

    def _send_connection_alert(self) -> None:
        down_s = self.down.down_for()
        self._send_alert(Alert(
            kind=AlertKind.CONNECTION_DOWN, severity=AlertSeverity.CRITICAL,
            message=f"the {self.sink.name} sink cannot reach its target for {down_s:.0f} s: {self.down.detail[:300]}",
            details={"sink": self.sink.name, "direction": self.direction.value, "role": f"{self.sink.name}-sink",
                     "target": self.sink.name, "down_s": f"{down_s:.0f}", "cause": self._connection_cause()}))

    def _connection_up(self) -> None:
        down_s = self.down.down_for()
        if self.down.up() is StreakEvent.RESOLVED:
            self._send_alert(resolved_alert(self._connection_cause(), AlertKind.CONNECTION_DOWN,
                                            f"the {self.sink.name} sink reaches its target again "
                                            f"(after {down_s:.0f} s)",
                                            {"sink": self.sink.name, "direction": self.direction.value,
                                             "role": f"{self.sink.name}-sink", "target": self.sink.name}))

    def _budget_cause(self) -> str:
        return f"{AlertKind.API_BUDGET.value}_warn:{self.sink.name}"

    def _check_budget(self) -> None:
        """After a write: the org's API usage against ``alerts.api_budget_warn_share`` (no call of its own)."""
        if self._usage is None or self.budget_warn is None:
            return
        usage = self._usage()
        event = self.budget_warn.observe(usage_share(usage))
        if event is None or usage is None:
            return
        used, limit = usage
        details = {"sink": self.sink.name, "direction": self.direction.value, "used": str(used),
                   "limit": str(limit), "warn_share": str(self.budget_warn.threshold),
                   "stop_share": str(self.cfg.salesforce.api_budget_share)}
        if event is StreakEvent.ALERT:
            self._send_alert(Alert(
                kind=AlertKind.API_BUDGET, severity=AlertSeverity.WARNING,
                message=f"the org has used {used} of its {limit} daily API requests ({used / limit:.0%}, warning "
                        f"at {self.budget_warn.threshold:.0%}); the {self.sink.name} sink stops at "
                        f"{self.cfg.salesforce.api_budget_share:.0%}",
                details={**details, "cause": self._budget_cause()}))
        else:
            self._send_alert(resolved_alert(self._budget_cause(), AlertKind.API_BUDGET,
                                            f"the org's daily API usage is below "
                                            f"{self.budget_warn.threshold:.0%} again ({used} of {limit})", details))

    def _send_alert(self, alert: Alert) -> None:
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
        if not self.names.is_retry(msg.topic() or "", self.sink.name):
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
