"""How many changes of a partition a consumer group still has to process. Pure, no I/O.

Shared by the sinks' backlog rule (:mod:`consumers.backlog`) and the processor's stall watchdog
(:mod:`processors.stall`), which both read the processor group's committed offsets against partition ends.
"""

from __future__ import annotations


def upstream_remainder(low: int, high: int, committed: int, seen: int, markers: bool) -> int:
    """Changes of one partition (offsets ``low`` to ``high``) the processor may still have to process.

    Everything below the group's ``committed`` offset is done, and so is everything up to ``seen``, the
    newest change a downstream sink has already received a command of (-1: none known). ``markers``: the
    topic is written in transactions, whose commit marker takes an offset of its own; a remainder of one is
    then that marker, not a change.
    """
    start = max(low, committed, seen + 1)
    remainder = max(0, high - start)
    return 0 if markers and remainder <= 1 else remainder
