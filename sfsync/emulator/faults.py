"""Fault injection rules and API statistics.

A :class:`FaultRule` matches requests on method, a path regex (searched in the URL path) and the
sObject named in the path (``sobjects/{type}`` or ``composite/sobjects/{type}``); it fires with a
probability and at most ``count`` times (None = unlimited). Effects, applied in order: added latency,
then either a dropped connection, or an error response (HTTP status + errorCode/message, rendered as a
Salesforce error array), or nothing more (latency only). ``UNABLE_TO_LOCK_ROW`` is the shorthand
``error_code="UNABLE_TO_LOCK_ROW"`` with status 400 and Salesforce's message.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

LOCK_MESSAGE = "unable to obtain exclusive access to this record or 1 records"


@dataclass
class FaultRule:
    """One fault rule (see module docstring)."""

    id: int
    method: str | None = None
    path: str | None = None
    sobject: str | None = None
    status: int | None = None
    error_code: str | None = None
    message: str | None = None
    latency_ms: int = 0
    drop_connection: bool = False
    probability: float = 1.0
    count: int | None = None
    fired: int = 0
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path) if self.path else None
        if self.error_code == "UNABLE_TO_LOCK_ROW":
            self.status = self.status or 400
            self.message = self.message or LOCK_MESSAGE
        if self.error_code and not self.status:
            self.status = 400
        if self.status and not self.error_code:
            self.error_code = "UNKNOWN_EXCEPTION" if self.status >= 500 else "INJECTED_FAULT"

    def matches(self, method: str, path: str, sobject: str | None) -> bool:
        """True when the rule applies to this request (ignoring probability and count)."""
        if self.count is not None and self.fired >= self.count:
            return False
        if self.method and self.method.upper() != method:
            return False
        if self._regex and not self._regex.search(path):
            return False
        return not (self.sobject and (sobject or "").lower() != self.sobject.lower())

    def error_body(self) -> list[dict[str, Any]]:
        """The Salesforce error array this rule answers with."""
        return [{"message": self.message or "Injected fault", "errorCode": self.error_code, "fields": []}]

    def public(self) -> dict[str, Any]:
        """JSON view for the control API."""
        return {"id": self.id, "method": self.method, "path": self.path, "sobject": self.sobject,
                "status": self.status, "error_code": self.error_code, "message": self.message,
                "latency_ms": self.latency_ms, "drop_connection": self.drop_connection,
                "probability": self.probability, "count": self.count, "fired": self.fired}


class Faults:
    """The active fault rules; the first matching rule that fires wins."""

    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._random = random.Random(seed)

    def add(self, **spec: Any) -> FaultRule:
        """Add a rule built from FaultRule's fields (except id/fired)."""
        rule = FaultRule(id=next(self._ids), **spec)
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        """Remove one rule; False if unknown."""
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        """Remove every rule."""
        self.rules.clear()

    def pick(self, method: str, path: str, sobject: str | None) -> FaultRule | None:
        """The rule that fires for this request, if any (its ``fired`` count is incremented)."""
        for rule in self.rules:
            if rule.matches(method, path, sobject) and self._random.random() < rule.probability:
                rule.fired += 1
                return rule
        return None


class Stats:
    """Counters the tests assert on: API calls per endpoint, records per collection call, events."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self.api_calls: Counter[str] = Counter()
        self.api_calls_total = 0
        self.other_calls: Counter[str] = Counter()
        self.collection_calls: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.collection_records_total = 0
        self.events_emitted = 0
        self.faults_injected = 0
        #: the SOQL text of the latest queries (``query``/``queryAll``), oldest first: tests assert which
        #: queries a role ran (e.g. one parent lookup for many children)
        self.queries: deque[str] = deque(maxlen=1_000)

    def count_api(self, endpoint: str) -> None:
        """Count one REST API call (the calls that use the daily API allowance)."""
        self.api_calls[endpoint] += 1
        self.api_calls_total += 1

    def count_other(self, endpoint: str) -> None:
        """Count a call that does not use the API allowance (OAuth, CometD)."""
        self.other_calls[endpoint] += 1

    def count_collection(self, endpoint: str, records: int) -> None:
        """Record the size of one sObject Collections call."""
        self.collection_calls.append({"endpoint": endpoint, "records": records})
        self.collection_records_total += records

    def count_query(self, soql: str) -> None:
        """Remember one SOQL query's text."""
        self.queries.append(soql)

    def count_events(self, n: int) -> None:
        """Count emitted CDC events."""
        self.events_emitted += n

    def snapshot(self) -> dict[str, Any]:
        """JSON view for ``GET /__emulator/stats``."""
        sizes = [c["records"] for c in self.collection_calls]
        return {
            "api_calls_total": self.api_calls_total,
            "api_calls": dict(self.api_calls),
            "other_calls": dict(self.other_calls),
            "collection_calls": len(sizes),
            "collection_records_total": self.collection_records_total,
            "records_per_collection_call": sizes,
            "max_records_per_collection_call": max(sizes, default=0),
            "events_emitted": self.events_emitted,
            "faults_injected": self.faults_injected,
            "queries": list(self.queries),
        }
