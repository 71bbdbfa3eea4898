"""Salesforce calls of a role that has no sink runner, paced by the API budget.

The Salesforce sink gates its own writes (``consumers.salesforce.sink``); the CDC producer's describe, gap
repair, catch-up and parent-field queries, and ``sfsync backfill``, go through :class:`PacedCalls`:

- before each call, :func:`sfsync.salesforce.budget.decide` on the org's usage from the client's last
  response (no call of its own while the budget allows): ``GO`` calls, ``SLOW`` sleeps first;
- ``STOP`` (``salesforce.api_budget_share`` spent): with ``wait=False`` raises :class:`BudgetSpent` (a
  command that can be run again later); with ``wait=True`` (a long-running role) logs once, waits
  ``salesforce.api_budget_retry_s``, spends one ``GET limits`` to read the usage again (a new day, a raised
  limit) and re-decides: the role makes no other call until the budget allows it.
- :attr:`PacedCalls.count` counts the calls made through it (``GET limits`` included).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sfsync.salesforce.budget import BudgetDecision, Pace, decide
from sfsync.salesforce.rest import SalesforceClient

log = logging.getLogger("sfsync.salesforce.budget")

T = TypeVar("T")


class BudgetSpent(Exception):
    """sfsync's share of the org's daily API calls is used up."""

    def __init__(self, decision: BudgetDecision) -> None:
        super().__init__(f"sfsync's API budget is spent ({decision.used} of {decision.allowed} allowed daily calls "
                         "used)")
        self.decision = decision


class PacedCalls:
    """Every call made through it waits for the API budget (module contract)."""

    def __init__(self, client: SalesforceClient, share: float, *, wait: bool, retry_s: float = 60.0,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.client, self.share, self.wait, self.retry_s, self._sleep = client, share, wait, retry_s, sleep
        self.count = 0
        self.waited_s = 0.0

    def __call__(self, fn: Callable[[], T]) -> T:
        decision = decide(self.client.usage(), self.share, 1)
        while decision.pace is Pace.STOP:
            if not self.wait:
                raise BudgetSpent(decision)
            log.warning("API budget spent (%s of %s allowed daily calls used): no Salesforce call for %.0f s",
                        decision.used, decision.allowed, self.retry_s)
            self._pause(self.retry_s)
            self.count += 1
            self.client.restful("limits")  # reads the usage again
            decision = decide(self.client.usage(), self.share, 1)
        if decision.pace is Pace.SLOW:
            self._pause(decision.delay_s)
        self.count += 1
        return fn()

    def wrap(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` with every call paced: ``wrap(client.query_records)(soql, True)``."""

        def paced(*args: Any, **kwargs: Any) -> T:
            return self(lambda: fn(*args, **kwargs))

        return paced

    def _pause(self, seconds: float) -> None:
        self.waited_s += seconds
        self._sleep(seconds)
