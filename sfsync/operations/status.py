"""Record status (``sfsync queue``) and the per-direction summary (``sfsync status``).

Contract:
- The per-record state is the compacted ``<prefix>.status`` topic (key ``{direction}:{record key}`` for the
  outcome, ``queued:{direction}:{record key}`` for In Queue), read to its end as of the call: the current
  :class:`~sfsync.records.RecordStatus` of every record and direction (:func:`current`). :func:`queue`
  turns it into the rows of the support desk's queue table, newest attempt first.
- :func:`direction_summaries` says, per direction: enabled or paused (and which objects are paused on
  their own, by whom, why), the last process time and the state of the record processed last, the
  records waiting (the sink group's lag on its apply and retry topics plus the processor's lag on the
  direction's change topic), and today's counts: records whose latest attempt was today (midnight to
  midnight in ``operations.time_zone``) and succeeded (or were superseded) / failed / were kept out by the
  object's record filters (``filtered``: the processor's decision, with the rule in the record's
  ``last_error``). A record synced
  twice today counts once, in the state of its latest attempt.
- Lag takes each partition's end from a fetch response, never from ListOffsets alone (the embedded
  broker under-reports it, docs/kafka.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition

from sfsync.config import SfsyncConfig
from sfsync.kafka.clients import make_consumer
from sfsync.kafka.compacted import read_compacted
from sfsync.kafka.topics import TopicNames
from sfsync.operations.control import ControlScope, read_control
from sfsync.records import QUEUED_PREFIX, Direction, RecordStatus, SyncState
from sfsync.serde import DecodeError, Serde

__all__ = ["DayCounts", "DirectionSummary", "QueueRow", "current", "day_counts", "direction_summaries", "queue",
           "read_statuses",
           "sink_of", "today_counts"]

#: which sink writes a direction
SINK_OF = {Direction.INBOUND: "postgres", Direction.OUTBOUND: "salesforce"}


def sink_of(direction: Direction) -> str:
    return SINK_OF[direction]


def read_statuses(cfg: SfsyncConfig, timeout: float = 30.0) -> list[RecordStatus]:
    """The current status of every record and direction (:func:`current`; a status it cannot decode is
    skipped)."""
    names = TopicNames(cfg.kafka.topic_prefix)
    serde = Serde.from_config(cfg.kafka)
    found = read_compacted(cfg.kafka, names.status, decode=lambda raw: serde.decode(raw, RecordStatus, names.status),
                           key=lambda raw: raw.decode(errors="replace"), skip=DecodeError, timeout=timeout,
                           missing_ok=True, role="status-reader")
    return current(found)


def current(latest: Mapping[str, RecordStatus]) -> list[RecordStatus]:
    """One status per record and direction from the status topic's latest value per key.

    A record has up to two keys per direction (:func:`~sfsync.records.queued_status_key`): its outcome
    (written by the processor and the sinks) and its In Queue state (written by the producers when they
    capture a change). In Queue is the current state while it is newer (``updated_ts``) than the outcome, or
    when there is no outcome yet; otherwise the outcome is. An outcome written for an earlier change after a
    later change was captured shows until that later change's own outcome arrives (the version a status
    covers is not recorded; the gap lasts one sink batch)."""
    outcomes: dict[str, RecordStatus] = {}
    queued: dict[str, RecordStatus] = {}
    for key, status in latest.items():
        if key.startswith(QUEUED_PREFIX):
            queued[key[len(QUEUED_PREFIX):]] = status
        else:
            outcomes[key] = status
    merged = dict(outcomes)
    for key, waiting in queued.items():
        done = outcomes.get(key)
        if done is None or waiting.updated_ts > done.updated_ts:
            merged[key] = waiting
    return list(merged.values())


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One row of the queue table (the columns an operator of the replaced products knows)."""

    last_attempt: datetime | None
    queue_id: str
    record_id: str
    record_type: str
    direction: Direction
    sync_status: SyncState
    failures: int
    last_error: str | None

    @classmethod
    def of(cls, s: RecordStatus) -> QueueRow:
        return cls(last_attempt=s.last_attempt_ts, queue_id=s.kafka_key, record_id=s.sfid or s.local_key or s.key,
                   record_type=s.object, direction=s.direction, sync_status=s.state, failures=s.failure_count,
                   last_error=s.last_error)


def queue(statuses: Iterable[RecordStatus], *, direction: Direction | None = None, state: SyncState | None = None,
          obj: str | None = None, limit: int | None = None) -> list[QueueRow]:
    """The queue rows matching the filters, newest attempt first (never attempted: last)."""
    rows = [QueueRow.of(s) for s in statuses
            if (direction is None or s.direction is direction) and (state is None or s.state is state)
            and (obj is None or s.object.lower() == obj.lower())]
    epoch = datetime.min.replace(tzinfo=UTC)
    rows.sort(key=lambda r: (r.last_attempt or epoch, r.queue_id), reverse=True)
    return rows[:limit] if limit is not None else rows


@dataclass(frozen=True, slots=True)
class DirectionSummary:
    direction: Direction
    sink: str
    paused: bool
    paused_by: str | None
    paused_reason: str | None
    paused_since: datetime | None
    paused_objects: tuple[str, ...]
    last_process_time: datetime | None
    last_status: SyncState | None
    waiting: int | None
    today_success: int
    today_failed: int
    today_filtered: int
    day: str
    time_zone: str
    open_alerts: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "direction": self.direction.value, "sink": self.sink, "enabled": not self.paused, "paused": self.paused,
            "paused_by": self.paused_by, "paused_reason": self.paused_reason,
            "paused_since": self.paused_since.isoformat() if self.paused_since else None,
            "paused_objects": list(self.paused_objects),
            "last_process_time": self.last_process_time.isoformat() if self.last_process_time else None,
            "last_status": self.last_status.value if self.last_status else None,
            "waiting": self.waiting, "today": {"day": self.day, "time_zone": self.time_zone,
                                               "success": self.today_success, "failed": self.today_failed,
                                               "filtered": self.today_filtered},
            "open_alerts": self.open_alerts, "problems": self.problems,
        }


@dataclass(frozen=True, slots=True)
class DayCounts:
    """One direction's records whose latest attempt falls on one day, by the state of that attempt."""

    success: int = 0
    failed: int = 0
    filtered: int = 0


def day_counts(statuses: Iterable[RecordStatus], direction: Direction, now: datetime, zone: tzinfo) -> DayCounts:
    """The :class:`DayCounts` of ``direction`` on ``now``'s date in ``zone`` (the day resets at midnight there).

    Each status is a record's latest (compacted topic), so a record counts once, in its latest state.
    Superseded counts as successful: the target already held newer data, the record is current (the sinks
    treat it as done, like a success). Other states (in queue, conflict, ambiguous) are not counted here."""
    day = now.astimezone(zone).date()
    tally = {SyncState.SUCCESS: 0, SyncState.FAILED: 0, SyncState.FILTERED: 0}
    for s in statuses:
        state = SyncState.SUCCESS if s.state is SyncState.SUPERSEDED else s.state
        if s.direction is not direction or s.last_attempt_ts is None or state not in tally:
            continue
        if s.last_attempt_ts.astimezone(zone).date() == day:
            tally[state] += 1
    return DayCounts(success=tally[SyncState.SUCCESS], failed=tally[SyncState.FAILED],
                     filtered=tally[SyncState.FILTERED])


def today_counts(statuses: Iterable[RecordStatus], direction: Direction, now: datetime, zone: tzinfo
                 ) -> tuple[int, int]:
    """(successful, failed) records of ``direction`` whose latest attempt is on ``now``'s date in ``zone``
    (:func:`day_counts` without the filtered count)."""
    counts = day_counts(statuses, direction, now, zone)
    return counts.success, counts.failed


def direction_summaries(cfg: SfsyncConfig, *, statuses: list[RecordStatus] | None = None,
                        now: datetime | None = None, open_alerts: dict[Direction | None, int] | None = None,
                        timeout: float = 30.0) -> list[DirectionSummary]:
    """One summary per direction (see the module contract)."""
    zone = ZoneInfo(cfg.operations.time_zone)
    now = now or datetime.now(UTC)
    statuses = read_statuses(cfg, timeout) if statuses is None else statuses
    control = read_control(cfg, timeout)
    names = TopicNames(cfg.kafka.topic_prefix)
    out = []
    for direction in Direction:
        mine = [s for s in statuses if s.direction is direction and s.last_attempt_ts is not None]
        last = max(mine, key=lambda s: s.last_attempt_ts or now, default=None)
        record = control.record(ControlScope(direction))
        paused = control.direction_paused(direction)
        problems: list[str] = []
        try:
            sink_lag = lag(cfg, names.sink_group(sink_of(direction)), [names.apply(direction)],
                           names.retry_pattern(sink_of(direction)), timeout)
            # the CDC producer writes changes.inbound in transactions: a commit marker takes an offset
            waiting: int | None = sink_lag + lag(cfg, names.processor_group, [names.changes(direction)], None, timeout,
                           markers=direction is Direction.INBOUND)
        except Exception as e:  # KafkaException: reported, the rest of the summary is still worth printing
            waiting = None
            problems.append(f"lag unknown: {e}")
        counts = day_counts(statuses, direction, now, zone)
        out.append(DirectionSummary(
            direction=direction, sink=sink_of(direction), paused=paused,
            paused_by=record.requested_by if paused and record else None,
            paused_reason=record.reason if paused and record else None,
            paused_since=record.ts if paused and record else None,
            paused_objects=tuple(sorted(control.paused_objects(direction))),
            last_process_time=last.last_attempt_ts if last else None, last_status=last.state if last else None,
            waiting=waiting, today_success=counts.success, today_failed=counts.failed,
            today_filtered=counts.filtered, day=now.astimezone(zone).date().isoformat(),
            time_zone=cfg.operations.time_zone, open_alerts=(open_alerts or {}).get(direction, 0),
            problems=problems))
    return out


def lag(cfg: SfsyncConfig, group: str, topics: list[str], pattern: str | None, timeout: float = 15.0,
        markers: bool = False) -> int:
    """Records of ``topics`` (and topics matching the librdkafka regex ``pattern``) past ``group``'s commits.

    ``markers``: the topics are written in transactions; a remainder of one is a commit marker, not a record.
    """
    consumer = make_consumer(cfg.kafka, group, "status-lag", **{"enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(timeout=timeout).topics
        wanted = set(topics) | ({t for t in metadata if re.fullmatch(pattern[1:-1], t)} if pattern else set())
        tps = [TopicPartition(t, p) for t in sorted(wanted) if t in metadata and metadata[t].error is None
               for p in metadata[t].partitions]
        if not tps:
            return 0
        ends = partition_ends(consumer, tps, timeout)
        total = 0
        for tp in consumer.committed(tps, timeout=timeout):
            low, high = ends[(tp.topic, tp.partition)]
            start = tp.offset if tp.offset not in (OFFSET_INVALID, -1001) and tp.offset >= 0 else low
            remainder = max(0, high - max(start, low))
            total += 0 if markers and remainder <= 1 else remainder
        return total
    finally:
        consumer.close()


def partition_ends(consumer: Consumer, tps: list[TopicPartition], timeout: float
                   ) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, high) of each partition, the high from a fetch response (see the module contract)."""
    listed: dict[tuple[str, int], tuple[int, int]] = {}
    for tp in tps:
        listed[(tp.topic, tp.partition)] = consumer.get_watermark_offsets(tp, timeout=timeout)
    probe = [TopicPartition(t, p, hi - 1) for (t, p), (lo, hi) in listed.items() if hi > lo]
    if not probe:
        return listed
    consumer.assign(probe)
    pending = {(tp.topic, tp.partition) for tp in probe}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.2):
            key = (msg.topic() or "", msg.partition() or 0)
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                continue
            pending.discard(key)
    out = dict(listed)
    for tp in probe:
        low, high = listed[(tp.topic, tp.partition)]
        _, fetched = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
        out[(tp.topic, tp.partition)] = (low, max(high, fetched))
    return out
