"""Doubling waits between attempts at something that is down: the one retry pace of every role.

Contract: :meth:`Backoff.next` returns ``first``, then twice the previous wait,
never more than ``cap``; :meth:`Backoff.reset` starts over after a success. No
jitter: each role retries one target, so there is no herd to spread.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    first: float
    cap: float
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"backoff needs 0 < first <= cap, got first={self.first} cap={self.cap}")
        self._next = self.first

    def next(self) -> float:
        """The wait before the next attempt (and double it for the one after)."""
        wait = self._next
        self._next = min(wait * 2, self.cap)
        return wait

    def reset(self) -> None:
        self._next = self.first
