"""When a sink's batch is complete: full, or nothing more is on its way.

A batch that goes out when a timer runs out depends on the machine's speed: on
a busy machine the processor emits a backlog more slowly, the linger expires
between its records, and 10,000 inserts take 59 calls instead of 50. The rule
here does not depend on speed:

- a batch goes out when it holds ``batch_size`` records;
- before its linger has passed (counted from its first record), it waits;
- after that it keeps filling only while enough records are known to be
  waiting to fill it — the sink's own lag on its apply partitions plus the
  processor's backlog on the matching partitions of the change topic it reads
  (records the processor still has to turn into commands for this sink). So a
  backlog goes out in full batches, and a trickle (a record or two in flight
  at any moment) after the linger;
- a backlog that delivers nothing for ``stall_s`` (the processor is down or
  every waiting change is filtered out) does not hold a batch back forever.

:func:`batch_complete` is the pure rule; :class:`BacklogProbe` measures
"waiting" from the broker (watermarks, the processor group's committed offsets).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from sfsync.kafka.lag import upstream_remainder

log = logging.getLogger("sfsync.sink.backlog")


@dataclass(frozen=True, slots=True)
class FillState:
    """One moment of a batch being filled."""

    size: int
    batch_size: int
    since_first_s: float
    since_last_arrival_s: float
    linger_s: float
    stall_s: float


def batch_complete(state: FillState, waiting: int | None) -> bool:
    """True when the batch should go out now. ``waiting=None``: not measured (before the linger)."""
    if state.size >= state.batch_size:
        return True
    if state.since_first_s < state.linger_s:
        return False
    if waiting is None:
        raise ValueError("after the linger the backlog must be measured")
    # Keep filling only while enough is known to be on its way to fill the batch: a backlog. A trickle
    # (a record or two in flight at any moment) goes out after the linger, as before.
    return waiting < state.batch_size - state.size or state.since_last_arrival_s >= state.stall_s


class BacklogProbe:
    """Counts records waiting for one sink: its own lag plus the processor's backlog upstream.

    ``own`` is the sink's consumer (its assignment names the partitions it owns);
    ``upstream`` is a consumer in the processor's group that never subscribes (so it never joins or
    disturbs that group): it reads the group's committed offsets and follows the end of
    ``upstream_topic``, the change topic the processor turns into this sink's commands
    (co-partitioned: the same partition numbers).

    Partition ends come from fetch responses (librdkafka's cached watermarks), not from a
    ListOffsets request: the embedded broker answers ListOffsets with the base offset of a
    partition's last record batch plus one (docs/kafka.md), which would hide all but one record of
    that batch. So the upstream consumer keeps fetching the end of the topic; :meth:`pump` drains
    what it reads (nothing is done with it) and must be called from the sink's loop.
    """

    def __init__(self, own: Consumer, apply_topic: str, upstream: Consumer | None, upstream_topic: str,
                 markers: bool = False, min_interval_s: float = 0.05) -> None:
        self.own = own
        self.apply_topic = apply_topic
        self.upstream = upstream
        self.upstream_topic = upstream_topic
        self.markers = markers
        self.min_interval_s = min_interval_s
        self._seen: dict[int, int] = {}
        self._last: tuple[float, int] | None = None
        self._following = False

    def seen(self, partition: int, offset: int) -> None:
        """The sink received a command made from change ``offset`` of upstream ``partition``."""
        if offset > self._seen.get(partition, -1):
            self._seen[partition] = offset

    def pump(self) -> None:
        """Keep following the upstream topic's end (its fetch responses carry the partition ends)."""
        if self.upstream is None:
            return
        if not self._following:
            metadata = self.upstream.list_topics(self.upstream_topic, timeout=10).topics.get(self.upstream_topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                return
            self.upstream.assign([TopicPartition(self.upstream_topic, p, OFFSET_END) for p in metadata.partitions])
            self._following = True
        while self.upstream.consume(1000, 0):
            pass

    def waiting(self, timeout: float = 5.0) -> int:
        """Records known to be on their way to this sink (0 when nothing is; errors count as 0)."""
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.min_interval_s:
            return self._last[1]
        partitions = sorted(tp.partition for tp in self.own.assignment() if tp.topic == self.apply_topic)
        total = 0
        try:
            self.pump()
            total += self._own_lag(partitions)
            total += self._upstream_lag(partitions, timeout)
        except KafkaException as e:  # a probe failure must not stall the sink: send what we have
            log.warning("could not measure the backlog (%s); sending the batch", e)
            total = 0
        self._last = (time.monotonic(), total)
        return total

    def _own_lag(self, partitions: list[int]) -> int:
        if not partitions:
            return 0
        lag = 0
        for tp in self.own.position([TopicPartition(self.apply_topic, p) for p in partitions]):
            _low, high = self.own.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                lag += max(0, high - tp.offset)
        return lag

    def _upstream_lag(self, partitions: list[int], timeout: float) -> int:
        if self.upstream is None or not partitions or not self._following:
            return 0
        committed = self.upstream.committed([TopicPartition(self.upstream_topic, p) for p in partitions],
                                            timeout=timeout)
        lag = 0
        for tp in committed:
            low, high = self.upstream.get_watermark_offsets(tp, cached=True)
            if high < 0:  # no fetch answered yet: nothing known
                continue
            lag += upstream_remainder(max(low, 0), high, tp.offset if tp.offset != OFFSET_INVALID else -1,
                                      self._seen.get(tp.partition, -1), self.markers)
        return lag

    def close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
