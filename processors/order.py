"""Each source partition processed gaplessly, in offset order. Pure, no I/O.

The processor's redelivery rule (:mod:`processors.conflicts`: a change at or below the position stored with
its record's state is a replay and is not decided again) is only sound if every offset below a processed one
was processed first. faust does not guarantee that around a rebalance: it resumes fetching before it seeks
back to the committed offsets (faust-streaming issues 216 and 221), so a worker can be handed offset 247 while
223..246 were dropped from its buffers, and get 223..246 again only later, or never. Processed out of order,
those older changes would then be taken for replays of changes already decided: lost. The embedded broker can
also skip a whole record batch for a tailing consumer (docs/kafka.md).

:class:`SourceOrder` is told every event's ``(partition, offset)`` before it is processed and answers:

- :attr:`Verdict.PROCESS` — the next offset of its partition (or an offset below it: a re-read, which the
  redelivery rule handles);
- :attr:`Verdict.SEEK` — a jump past offsets not seen yet: read the partition again from :attr:`Check.seek`
  and drop events until the re-read arrives (:attr:`Verdict.DROP`);
- :attr:`Verdict.HOLE` — the re-read confirmed offsets that no record fills, in a topic whose offsets have
  none (one idempotent producer): records are missing, the worker must stop without committing past them.

A jump the re-read confirms is legitimate in a transactional topic (aborted records on Apache Kafka):
:attr:`Check.gap` names it so faust may commit past it. One offset more than the next (a transaction's commit
marker) is expected there and passes at once. Where a partition starts is its committed offset, looked up by
the caller after every assignment (:meth:`SourceOrder.start`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    PROCESS = "process"
    SEEK = "seek"
    DROP = "drop"
    HOLE = "hole"


@dataclass(frozen=True, slots=True)
class Check:
    """What to do with one event; ``seek``: the offset to read again from (SEEK); ``reread``: the event is
    the first of the re-read (PROCESS, HOLE); ``gap``: offsets ``[start, end)`` it confirmed empty."""

    verdict: Verdict
    seek: int | None = None
    gap: tuple[int, int] | None = None
    reread: bool = False


@dataclass
class SourceOrder:
    """Per source partition (any hashable key, e.g. faust's TP) the next offset to process.

    ``marker_gap(tp)``: how many offsets a partition may skip between two records without a re-read (0 for a
    topic without holes, 1 for a transactional one: its commit marker)."""

    marker_gap: dict[str, int]
    _next: dict[Hashable, int] = field(default_factory=dict)
    _resync: dict[Hashable, int] = field(default_factory=dict)  # tp -> the offset that jumped
    _started: set[Hashable] = field(default_factory=set)

    def start(self, tp: Hashable, committed: int | None) -> None:
        """``tp`` (re)assigned: processing resumes at its committed offset (``None``: never committed,
        the first record read is where it starts)."""
        self._resync.pop(tp, None)
        self._started.add(tp)
        if committed is None:
            self._next.pop(tp, None)
        else:
            self._next[tp] = committed

    def forget(self) -> None:
        """Partitions revoked: nothing is known until :meth:`start` is called again."""
        self._next.clear()
        self._resync.clear()
        self._started.clear()

    def known(self, tp: Hashable) -> bool:
        """Was :meth:`start` called for ``tp`` since the last :meth:`forget`?"""
        return tp in self._started

    def check(self, tp: Hashable, topic: str, offset: int) -> Check:
        want = self._next.get(tp)
        jumped = self._resync.get(tp)
        if jumped is not None:
            if offset > jumped or (want is not None and offset < want):
                return Check(Verdict.DROP)  # read before the seek took effect
            del self._resync[tp]
            self._next[tp] = offset + 1
            if want is not None and offset > want + self.marker_gap.get(topic, 1):
                verdict = Verdict.HOLE if self.marker_gap.get(topic, 1) == 0 else Verdict.PROCESS
                return Check(verdict, gap=(want, offset), reread=True)
            return Check(Verdict.PROCESS, reread=True)
        if want is not None and offset > want + self.marker_gap.get(topic, 1):
            self._resync[tp] = offset
            return Check(Verdict.SEEK, seek=want)
        self._next[tp] = offset + 1
        return Check(Verdict.PROCESS)
