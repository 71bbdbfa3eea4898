"""A processor worker that holds partitions with changes waiting, and handles none of them, restarts.

Seen on the embedded broker (docs/kafka.md): a restarted worker logged aiokafka's ``Error sending
JoinGroupRequest``, reported itself assigned and ready, and then processed nothing, for good. The join
watchdog (:class:`sfsync.health.JoinWatch`) does not see it, the worker being assigned, and its health
stays green, its event loop running its timers. So a watchdog thread, outside that loop, asks the broker
what the worker's partitions hold beyond the group's committed offsets; when something is waiting there
and the worker's agent has handled no event for ``processor.stall_timeout_s``, the worker exits with
:data:`~sfsync.health.RESTART_EXIT_CODE` and its supervisor starts a fresh one. Exiting is safe at any
point: nothing unacknowledged is committed (as after ``kill -9``).

Why "handled no event" and not "committed nothing": under a backlog with several workers, the head of every
partition can wait for its identity handover (:mod:`processors.identity`) for minutes while the agent keeps
handling the events behind it; its offsets do not move, its agent does. The reverse (events handled, every
commit failing) is faust's to report. A worker whose changes all wait for a handover that cannot come, with
nothing else arriving, is restarted too: the restarted worker reads them again and pulls again.

:class:`StallWatch` is the pure rule; :class:`WaitingProbe` asks the broker; :func:`watch_stall` is the
thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_INVALID, KafkaException, TopicPartition

from sfsync.config import KafkaConfig
from sfsync.health import RESTART_EXIT_CODE
from sfsync.kafka.clients import make_consumer
from sfsync.kafka.ends import partition_ends
from sfsync.kafka.lag import upstream_remainder

log = logging.getLogger("sfsync.processor.stall")

TP = tuple[str, int]


@dataclass
class StallWatch:
    """Whether a worker is stalled: armed (assigned, rebalance complete), something waiting on its
    partitions, and its count of handled events unchanged for ``after_s`` seconds.

    Thread-safe: the worker's signals arm and disarm it; the watchdog thread calls :meth:`stalled` with the
    agent's event count (:attr:`processors.app.ProcessorStats.events`)."""

    after_s: float
    _armed: bool = field(default=False, init=False)
    _seen_events: int = field(default=-1, init=False)
    _progress_at: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def arm(self, now: float) -> None:
        """A rebalance completed with partitions assigned: the clock starts now."""
        with self._lock:
            self._armed, self._progress_at, self._seen_events = True, now, -1

    def disarm(self) -> None:
        """Partitions revoked (or none assigned): recovering tables after a rebalance can rightly take long."""
        with self._lock:
            self._armed = False

    def stalled(self, now: float, waiting: int, events: int) -> float | None:
        """Seconds without a handled event (``events``: the agent's count so far) while ``waiting`` records
        were there; ``None`` while not stalled. Nothing waiting is idle, not stalled: it counts as progress,
        as does the first look after :meth:`arm`."""
        with self._lock:
            if not self._armed:
                return None
            if waiting <= 0 or events != self._seen_events:
                self._seen_events, self._progress_at = events, now
                return None
            quiet = now - self._progress_at
            return quiet if quiet >= self.after_s else None


class WaitingProbe:
    """How many records the worker's partitions hold beyond the processor group's committed offsets.

    A consumer in the processor's group that never subscribes (it never joins the group, so it never
    disturbs it) reads the committed offsets; the partition ends are ListOffsets' answer checked against
    a fetch (:func:`sfsync.kafka.ends.partition_ends`: the embedded broker under-reports ends).
    ``markers``: topics written in transactions, where a remainder of one is the commit marker."""

    def __init__(self, cfg: KafkaConfig, group: str, markers: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.markers = frozenset(markers)
        self.consumer = make_consumer(cfg, group, "processor-stall-probe")

    def waiting(self, partitions: Iterable[TP], timeout: float = 10.0) -> int:
        tps = [TopicPartition(topic, partition) for topic, partition in sorted(partitions)]
        if not tps:
            return 0
        committed = {(tp.topic, tp.partition): tp.offset for tp in self.consumer.committed(tps, timeout=timeout)}
        reported: dict[TP, int] = {}
        lows: dict[TP, int] = {}
        for tp in tps:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            reported[(tp.topic, tp.partition)], lows[(tp.topic, tp.partition)] = high, low
        ends = partition_ends(self.cfg, reported, timeout=timeout)
        total = 0
        for key, end in ends.items():
            offset = committed.get(key, OFFSET_INVALID)
            total += upstream_remainder(max(lows[key], 0), end, offset if offset >= 0 else -1, -1,
                                        key[0] in self.markers)
        return total

    def close(self) -> None:
        self.consumer.close()


def watch_stall(watch: StallWatch, probe: Callable[[], int], events: Callable[[], int], *, interval_s: float,
                exit: Callable[[int], object] = os._exit, clock: Callable[[], float] = time.monotonic,
                stop: threading.Event | None = None) -> threading.Thread:
    """Start a daemon thread that reads ``events()`` (the agent's count) and measures ``probe()`` (records
    waiting) every ``interval_s``, and ends the process with :data:`RESTART_EXIT_CODE` once ``watch`` says
    stalled. A probe that fails is logged and skipped: a broker the probe cannot reach says nothing about
    the worker. ``stop`` ends the thread (tests)."""
    ended = stop or threading.Event()

    def run() -> None:
        while not ended.wait(interval_s):
            handled = events()  # before the probe: an event handled meanwhile is progress next time
            try:
                waiting = probe()
            except KafkaException as e:
                log.warning("could not measure the records waiting for this worker (%s); not checked", e)
                continue
            quiet = watch.stalled(clock(), waiting, handled)
            if quiet is not None:
                log.error("no change handled for %.0f s while %d record(s) wait on this worker's partitions "
                          "(processor.stall_timeout_s %.0f): exiting with %d to be restarted", quiet, waiting,
                          watch.after_s, RESTART_EXIT_CODE)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                exit(RESTART_EXIT_CODE)
                return

    thread = threading.Thread(target=run, name="stall-watch", daemon=True)
    thread.start()
    return thread

