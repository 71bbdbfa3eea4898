"""Dead letters: list, show, replay, purge (``sfsync dlq``), for every stage that writes them.

Contract:
- A dead letter is a message of ``<prefix>.dlq.<sink>`` with the failure headers of
  :mod:`sfsync.failures`. ``sfsync.stage`` says which kind it is:

  ==========================  ==================================  =====================================
  stage                       value                               replay
  ==========================  ==================================  =====================================
  ``<sink>-sink``             the ApplyCommand (attempt = tries)  to ``<prefix>.apply.<local|salesforce>``,
                                                                  ``attempt`` 0, no failure headers
  ``<sink>-sink``, undecodable  the raw bytes read                  the same bytes to the apply topic
  ``processor``               the change event it could not map   the same bytes and key to the change
                                                                  topic it came from (the processor
                                                                  decides again, e.g. after a mapping fix)
  ``*-producer``              a JSON document naming the change   none: re-save the row / touch the
                                                                  record (docs/runbook.md)
  ==========================  ==================================  =====================================

- A replay goes through the sinks' guarantees: the per-field versions at the target keep a replayed
  command from overwriting anything newer (it is then "superseded" and counts as done).
- Kafka messages cannot be changed, so replayed / purged is recorded by a **marker** appended to the
  same DLQ topic: key = the letter's key, no value, headers ``sfsync.dlq.marker`` (``replayed`` |
  ``purged``), ``sfsync.dlq.of`` (the letter's id), ``sfsync.dlq.by``, and for a replay
  ``sfsync.dlq.replayed_to`` (where the copy went). :func:`list_dead_letters` folds markers into each
  letter's ``state``; purged letters are hidden unless asked for, and never replayed again.
- A letter's id is ``<sink>:<partition>:<offset>``.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from confluent_kafka import KafkaError, Message

from sfsync.config import SfsyncConfig
from sfsync.failures import DeadLetterInfo, parse_failure_headers, read_headers
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import SINKS, TopicNames
from sfsync.operations._read import headers_of, read_all
from sfsync.operations.status import read_statuses
from sfsync.records import ApplyCommand, ChangeEvent, Direction, RecordStatus, SyncState
from sfsync.serde import DecodeError, Serde

__all__ = ["DeadLetter", "DlqFilter", "LetterKind", "LetterState", "ReplayOutcome", "list_dead_letters",
           "purge", "replay", "wait_for_outcomes"]

H_MARKER = "sfsync.dlq.marker"
H_OF = "sfsync.dlq.of"
H_BY = "sfsync.dlq.by"
H_REPLAYED_TO = "sfsync.dlq.replayed_to"
H_REPLAY_OF = "sfsync.replay.of"

DIRECTION_OF_SINK = {"postgres": Direction.INBOUND, "salesforce": Direction.OUTBOUND}


class LetterKind(StrEnum):
    COMMAND = "command"  # a sink's apply command
    RAW = "raw"  # a sink could not decode what it read
    CHANGE = "change"  # the processor could not map a change event
    CAPTURE = "capture"  # a producer could not send a change (not replayable)


class LetterState(StrEnum):
    DEAD = "dead"
    REPLAYED = "replayed"
    PURGED = "purged"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter with everything its headers and value say."""

    id: str
    sink: str
    topic: str
    partition: int
    offset: int
    key: str | None
    kind: LetterKind
    info: DeadLetterInfo
    object: str | None
    record_id: str | None
    written: datetime
    value: bytes | None
    command: ApplyCommand | None
    state: LetterState = LetterState.DEAD
    replayed_to: str | None = None

    @property
    def direction(self) -> Direction:
        return DIRECTION_OF_SINK[self.sink]

    @property
    def last_attempt(self) -> datetime:
        return self.info.last_attempt or self.written

    def to_json(self) -> dict[str, Any]:
        i = self.info
        return {
            "id": self.id, "sink": self.sink, "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "key": self.key, "kind": self.kind.value, "state": self.state.value, "object": self.object,
            "record_id": self.record_id, "stage": i.stage, "error_kind": i.kind, "error_class": i.error_class,
            "error_message": i.message, "attempt": i.attempt,
            "first_attempt": i.first_attempt.isoformat() if i.first_attempt else None,
            "last_attempt": i.last_attempt.isoformat() if i.last_attempt else None,
            "origin": f"{i.origin.topic}:{i.origin.partition}:{i.origin.offset}" if i.origin else None,
            "replayed_to": self.replayed_to,
            "values": {k: str(v) for k, v in self.command.values.items()} if self.command else None,
        }


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which letters a command is about; every given criterion must hold."""

    sink: str | None = None
    object: str | None = None
    error_class: str | None = None
    record_id: str | None = None
    stage: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: frozenset[str] | None = None
    states: frozenset[LetterState] = frozenset({LetterState.DEAD, LetterState.REPLAYED})

    def __call__(self, letter: DeadLetter) -> bool:
        if self.sink is not None and letter.sink != self.sink:
            return False
        if self.ids is not None and letter.id not in self.ids:
            return False
        if self.object is not None and (letter.object or "").lower() != self.object.lower():
            return False
        if self.error_class is not None and letter.info.error_class != self.error_class:
            return False
        if self.stage is not None and letter.info.stage != self.stage:
            return False
        if self.record_id is not None and self.record_id not in {letter.record_id, letter.key,
                                                                 letter.command.sfid if letter.command else None,
                                                                 letter.command.local_key if letter.command else None}:
            return False
        if self.since is not None and letter.last_attempt < self.since:
            return False
        if self.until is not None and letter.last_attempt > self.until:
            return False
        return letter.state in self.states


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def _object_of_key(key: str | None) -> str | None:
    return key.split(":", 1)[0] if key and ":" in key else None


def _letter(msg: Message, sink: str, serde: Serde) -> DeadLetter:
    headers = headers_of(msg)
    info = parse_failure_headers(headers)
    key = _text(msg.key())
    value = msg.value()
    command: ApplyCommand | None = None
    obj: str | None = _object_of_key(key)
    record_id: str | None = None
    if info.stage.endswith("-producer") or read_headers(headers).get("sfsync.value.format") == b"json":
        kind = LetterKind.CAPTURE
    elif info.stage == "processor":
        kind = LetterKind.CHANGE
        try:
            event = serde.decode(value or b"", ChangeEvent)
            obj, record_id = event.object, event.sfid or event.local_key
        except DecodeError:
            pass
    else:
        try:
            command = serde.decode(value or b"", ApplyCommand)
            kind = LetterKind.COMMAND
            obj, record_id = command.object, command.sfid or command.local_key
        except DecodeError:
            kind = LetterKind.RAW
    _, ts_ms = msg.timestamp()
    written = datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms and ts_ms > 0 else datetime.now(UTC)
    return DeadLetter(id=f"{sink}:{msg.partition()}:{msg.offset()}", sink=sink, topic=msg.topic() or "",
                      partition=msg.partition() or 0, offset=msg.offset() or 0, key=key, kind=kind, info=info,
                      object=obj, record_id=record_id or (key.rsplit(":", 1)[-1] if key else None), written=written,
                      value=value, command=command)


def list_dead_letters(cfg: SfsyncConfig, flt: DlqFilter | None = None, timeout: float = 60.0) -> list[DeadLetter]:
    """Every dead letter matching ``flt`` (default: not purged), oldest first per sink and partition."""
    flt = flt or DlqFilter()
    names = TopicNames(cfg.kafka.topic_prefix)
    serde = Serde.from_config(cfg.kafka)
    sinks = [flt.sink] if flt.sink else list(SINKS)
    letters: dict[str, DeadLetter] = {}
    markers: list[tuple[str, LetterState, str | None]] = []
    for sink in sinks:
        for msg in read_all(cfg.kafka, [names.dlq(sink)], timeout=timeout, role="dlq-reader"):
            h = read_headers(headers_of(msg))
            if H_MARKER in h:
                markers.append((h.get(H_OF, b"").decode(), LetterState(h[H_MARKER].decode()),
                                h[H_REPLAYED_TO].decode() if H_REPLAYED_TO in h else None))
                continue
            letter = _letter(msg, sink, serde)
            letters[letter.id] = letter
    for of, state, to in markers:
        marked = letters.get(of)
        if marked is None or marked.state is LetterState.PURGED:
            continue
        letters[of] = replace(marked, state=state, replayed_to=to if state is LetterState.REPLAYED else
                              marked.replayed_to)
    return [x for x in letters.values() if flt(x)]


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name in a bare container
        return f"unknown@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What ``replay`` did with one letter (``sent_to`` = ``topic:partition:offset`` of the copy)."""

    letter: DeadLetter
    replayed: bool
    detail: str
    sent_to: str | None = None
    record_key: str | None = None
    status: RecordStatus | None = None


def _replay_target(letter: DeadLetter, names: TopicNames, serde: Serde) -> tuple[str, bytes | None, str | None] | str:
    """(topic, value, record key) of the copy to send, or why the letter cannot be replayed."""
    if letter.state is LetterState.PURGED:
        return "purged"
    if letter.kind is LetterKind.CAPTURE:
        return "a capture dead letter is not a change: re-save the row / touch the record (docs/runbook.md)"
    apply_topic = names.apply(letter.direction)
    if letter.kind is LetterKind.COMMAND and letter.command is not None:
        fresh = replace(letter.command, attempt=0)
        return apply_topic, serde.encode(fresh, apply_topic), fresh.key
    if letter.kind is LetterKind.RAW:
        return apply_topic, letter.value, letter.key
    origin = letter.info.origin
    if origin is None or not origin.topic:
        return "the dead letter does not say which change topic it came from (no sfsync.origin.topic)"
    return origin.topic, letter.value, letter.key


def replay(cfg: SfsyncConfig, letters: Iterable[DeadLetter], *, on_each: Callable[[ReplayOutcome], None] | None = None,
           requested_by: str | None = None, timeout: float = 60.0) -> list[ReplayOutcome]:
    """Send each letter back (see the module contract); a marker records each one sent. One outcome per letter.

    A copy counts as sent once the broker acknowledged it; only then is its marker written.
    """
    names = TopicNames(cfg.kafka.topic_prefix)
    serde = Serde.from_config(cfg.kafka)
    producer = make_producer(cfg.kafka, "dlq-replay")
    by = (requested_by or _who()).encode()
    out: list[ReplayOutcome] = []
    for letter in letters:
        target = _replay_target(letter, names, serde)
        if isinstance(target, str):
            outcome = ReplayOutcome(letter, False, f"skipped: {target}")
        else:
            topic, value, key = target
            where: list[str] = []

            def delivered(err: KafkaError | None, msg: Message, where: list[str] = where) -> None:
                if err is None:
                    where.append(f"{msg.topic()}:{msg.partition()}:{msg.offset()}")

            producer.produce(topic, value, key=key, headers=[(H_REPLAY_OF, letter.id.encode())], on_delivery=delivered)
            producer.flush(timeout)
            sent_to = where[0] if where else topic
            producer.produce(letter.topic, None, key=letter.key, headers=[
                (H_MARKER, LetterState.REPLAYED.value.encode()), (H_OF, letter.id.encode()), (H_BY, by),
                (H_REPLAYED_TO, sent_to.encode())])
            producer.flush(timeout)
            outcome = ReplayOutcome(letter, True, f"sent to {sent_to}", sent_to, key)
        out.append(outcome)
        if on_each is not None:
            on_each(outcome)
    return out


def wait_for_outcomes(cfg: SfsyncConfig, outcomes: list[ReplayOutcome], since: datetime, timeout: float,
                      poll: Callable[[float], object]) -> list[ReplayOutcome]:
    """The outcomes with the status each replayed record reached after ``since`` (Success or Failed), waiting
    up to ``timeout`` for every replayed record to have one; ``poll(seconds)`` waits between reads."""
    import time

    deadline = time.monotonic() + timeout
    pending = {i for i, o in enumerate(outcomes) if o.replayed and o.record_key}
    found: dict[int, RecordStatus] = {}
    while pending:
        latest = {s.kafka_key: s for s in read_statuses(cfg)}
        for i in list(pending):
            o = outcomes[i]
            s = latest.get(f"{o.letter.direction.value}:{o.record_key}")
            if s is not None and s.updated_ts >= since and s.state in (SyncState.SUCCESS, SyncState.SUPERSEDED,
                                                                        SyncState.FAILED):
                found[i] = s
                if s.state is not SyncState.FAILED or time.monotonic() >= deadline:
                    pending.discard(i)
        if not pending or time.monotonic() >= deadline:
            break
        poll(0.5)
    return [replace(o, status=found.get(i)) for i, o in enumerate(outcomes)]


def purge(cfg: SfsyncConfig, letters: Iterable[DeadLetter], *, on_each: Callable[[DeadLetter], None] | None = None,
          requested_by: str | None = None, timeout: float = 60.0) -> int:
    """Mark each letter purged (hidden from ``dlq list``, never replayed); how many were marked."""
    producer = make_producer(cfg.kafka, "dlq-purge")
    by = (requested_by or _who()).encode()
    n = 0
    for letter in letters:
        if letter.state is LetterState.PURGED:
            continue
        producer.produce(letter.topic, None, key=letter.key, headers=[
            (H_MARKER, LetterState.PURGED.value.encode()), (H_OF, letter.id.encode()), (H_BY, by)])
        n += 1
        if on_each is not None:
            on_each(letter)
    producer.flush(timeout)
    return n
