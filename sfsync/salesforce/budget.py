"""API budget: how fast sfsync may call Salesforce given the org's daily usage. Pure, no I/O.

The org-wide daily allowance is shared with every other integration; sfsync may use up to
``share`` of it (``salesforce.api_budget_share``). :func:`decide` turns the last
``Sforce-Limit-Info`` reading into one of

- ``GO``   — full speed;
- ``SLOW`` — sleep ``delay_s`` before the next call; the delay grows linearly from 0 at
  ``slow_from`` of the allowed calls to ``max_delay_s`` at the allowed calls;
- ``STOP`` — the next ``calls`` would go past the allowed calls: do not call, retry after
  ``retry_after_s``.

The decision is made BEFORE a call, counting the calls about to be made, so sfsync never pushes the
org past its share (and, as long as ``share`` < 1, never to ``REQUEST_LIMIT_EXCEEDED``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Pace(StrEnum):
    GO = "go"
    SLOW = "slow"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """What to do before the next call(s)."""

    pace: Pace
    delay_s: float = 0.0
    retry_after_s: float = 0.0
    allowed: int | None = None
    used: int | None = None


def allowed_calls(limit: int, share: float) -> int:
    """The number of daily calls sfsync may let the org reach: ``floor(limit * share)``, at most limit - 1
    when ``share`` < 1 (so the org always keeps one call)."""
    allowed = math.floor(limit * share)
    return min(allowed, limit - 1) if share < 1.0 else allowed


def decide(
    usage: tuple[int, int] | None,
    share: float,
    calls: int = 1,
    *,
    slow_from: float = 0.8,
    max_delay_s: float = 2.0,
    retry_after_s: float = 60.0,
) -> BudgetDecision:
    """The pace for making ``calls`` more API calls when the org has used ``usage = (used, limit)``.

    ``usage`` None (not yet known: no response seen) -> ``GO``; the first response tells.
    """
    if usage is None:
        return BudgetDecision(Pace.GO)
    used, limit = usage
    if limit <= 0:
        return BudgetDecision(Pace.STOP, retry_after_s=retry_after_s, allowed=0, used=used)
    allowed = allowed_calls(limit, share)
    if used + calls > allowed:
        return BudgetDecision(Pace.STOP, retry_after_s=retry_after_s, allowed=allowed, used=used)
    threshold = slow_from * allowed
    if used < threshold or allowed <= threshold:
        return BudgetDecision(Pace.GO, allowed=allowed, used=used)
    fraction = min(1.0, (used - threshold) / (allowed - threshold))
    return BudgetDecision(Pace.SLOW, delay_s=round(max_delay_s * fraction, 3), allowed=allowed, used=used)


def usage_share(usage: tuple[int, int] | None) -> float | None:
    """The share of the org's daily limit used (``used / limit``), for ``alerts.api_budget_warn_share``;
    ``None`` while no response told it (or a limit of 0)."""
    if usage is None or usage[1] <= 0:
        return None
    return usage[0] / usage[1]
