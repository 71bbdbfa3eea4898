"""Keep CPython's full garbage collections short in a process with a large, long-lived heap.

Why: a full (generation 2) collection walks every object the collector tracks, and the processor keeps a
lot of them alive: its imports (~130,000 objects), and the decoded Table entries it caches
(:class:`processors.entry.EntryCache`, about 30 objects per record). In ``bench/outbound.py`` its full
collections grew from 0.10 s to 0.57 s as the cache filled, and each one stops the event loop: the
processor hop's trickle p99 went from 83 ms (no cache) to 494 ms, and the outbound trickle p99 over 500 ms.

What: objects that survived a full collection are moved to the permanent generation (:func:`gc.freeze`),
which later collections do not walk, so a full collection costs what was allocated since the last one,
not the whole heap. Reference counting still frees a frozen object the moment its last reference goes (an
evicted cache entry, a released message): only *cyclic* garbage among frozen objects waits, until
:meth:`GcFreezer.reclaim` puts everything back (:func:`gc.unfreeze`) and collects it all once, every
``reclaim_s`` (one full-heap pause per period, logged with its length).

Contract: :meth:`install` once per process, on the thread that runs the event loop; :meth:`tick` from a
periodic task of that loop (it freezes after a full collection happened since the last tick, and reclaims
when a period is over). Nothing here changes what the process computes, only when memory is walked.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sfsync.gcfreeze")

#: how often frozen cyclic garbage is collected (one walk of the whole heap)
RECLAIM_S = 600.0


class GcFreezer:
    """Freeze the survivors of each full collection; collect everything once every ``reclaim_s``."""

    def __init__(self, reclaim_s: float = RECLAIM_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.reclaim_s = reclaim_s
        self._clock = clock
        self._full_collected = False
        self._installed = False
        self._last_reclaim = clock()
        #: full collections seen, freezes and reclaims done (for the log and tests)
        self.counts = {"full": 0, "frozen": 0, "reclaimed": 0}

    def install(self) -> None:
        """Freeze what is alive now (the imports, the built app) and watch for full collections."""
        if self._installed:
            return
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._on_gc)
        self._installed = True
        self._last_reclaim = self._clock()
        log.debug("froze %d objects at start", gc.get_freeze_count())

    def uninstall(self) -> None:
        """Stop watching and put every frozen object back (tests; a process does not need it)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._installed = False
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # runs inside the collector: only note it; the freeze happens in tick(), outside any collection
        if phase == "stop" and info.get("generation") == 2:
            self._full_collected = True

    def tick(self) -> None:
        """Freeze the survivors of a full collection that ran since the last tick; reclaim when due."""
        if self._clock() - self._last_reclaim >= self.reclaim_s:
            self.reclaim()
            return
        if self._full_collected:
            self._full_collected = False
            self.counts["full"] += 1
            gc.freeze()
            self.counts["frozen"] += 1

    def reclaim(self) -> int:
        """Collect the whole heap once (frozen objects included), then freeze the survivors again.
        Returns the number of unreachable objects found."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._full_collected = False
        self._last_reclaim = self._clock()
        self.counts["reclaimed"] += 1
        log.info("garbage collection of the whole heap: %d unreachable objects, %.3f s (every %.0f s)", found,
                 time.perf_counter() - started, self.reclaim_s)
        return found
