"""What an alert is about, which alerts are open, and when one is worth telling a person.

Contract:
- Every alert has a **cause**: ``details.cause`` when its producer set one, else
  ``{kind}:{sink|stage|direction}:{object}`` from what it carries (:func:`alert_cause`). Alerts of one
  cause are one problem.
- An alert with ``details.state = resolved`` closes its cause (:func:`resolved_alert` makes one). A cause
  is **open** while its latest alert is not a resolution (:func:`open_alerts`).
- :class:`Deduper` decides delivery from the alerts' own timestamps (so it can be rebuilt by replaying
  the topic): the first alert of a cause is delivered, repeats within ``window`` (one hour) are not, a
  repeat after the window is delivered again (with how many were held back), and a resolution is
  delivered once for a cause that was delivered open.
- :class:`FailureStreak` is the sinks' "N consecutive failures" counter (``alerts.consecutive_failures``):
  it says ``alert`` at the N-th failure in a row and ``resolved`` at the first success after that.
- :class:`DownWatch` is "a connection broken for over a minute": fed ``down`` / ``up`` by the role that
  sees the connection, it says ``alert`` once the connection has been down longer than ``after`` (checked
  at every ``down``/``check``), and ``resolved`` at the first ``up`` after that; an outage shorter than
  ``after`` says nothing. The clock is injected (monotonic seconds).
- :class:`ThresholdWatch` is a level against a threshold (the org's API usage against
  ``alerts.api_budget_warn_share``): ``alert`` when the level is first seen at or above the threshold,
  ``resolved`` when it is next seen below it (a new day resets Salesforce's count).
- :func:`stale_dead_letters` / :class:`DlqAgeWatch` are "a record in the DLQ for more than a day": per
  DLQ topic, ``alert`` when a letter still dead (not replayed, not purged) entered it more than
  ``max_age`` ago, ``resolved`` when none is left; the watch's state is rebuilt from the alerts topic
  (:meth:`DlqAgeWatch.note`), so a restarted notifier neither repeats nor forgets an open cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from sfsync.config import SfsyncConfig
from sfsync.kafka.topics import TopicNames
from sfsync.operations._read import read_all
from sfsync.records import Alert, AlertKind, AlertSeverity, Direction
from sfsync.serde import DecodeError, Serde

__all__ = ["DLQ_MAX_AGE", "DOWN_AFTER", "Deduper", "DlqAgeWatch", "DownWatch", "FailureStreak", "StaleLetters",
           "StreakEvent", "ThresholdWatch", "alert_cause", "alert_direction", "connection_cause", "dlq_age_cause",
           "is_resolved", "open_alerts", "read_alerts", "resolved_alert", "stale_dead_letters"]

STATE = "state"
RESOLVED = "resolved"
CAUSE = "cause"
WINDOW = timedelta(hours=1)
#: "a connection broken for over a minute"
DOWN_AFTER = 60.0
#: "a record in the DLQ for more than a day"
DLQ_MAX_AGE = timedelta(days=1)

#: which direction a sink's or a stage's alert is about
_DIRECTION_OF = {"postgres": Direction.INBOUND, "salesforce": Direction.OUTBOUND,
                 "postgres-sink": Direction.INBOUND, "salesforce-sink": Direction.OUTBOUND,
                 "salesforce-producer": Direction.INBOUND, "postgres-producer": Direction.OUTBOUND}


def alert_cause(alert: Alert) -> str:
    """The problem an alert is about (see the module contract)."""
    d = alert.details
    if d.get(CAUSE):
        return d[CAUSE]
    where = d.get("sink") or d.get("stage") or d.get("direction") or d.get("channel") or d.get("table") or ""
    return f"{alert.kind.value}:{where}:{alert.object or ''}"


def alert_direction(alert: Alert) -> Direction | None:
    """The direction an alert is about, when it says (``details.direction``, its sink or stage)."""
    d = alert.details
    if d.get("direction") in ("inbound", "outbound"):
        return Direction(d["direction"])
    for key in ("sink", "stage"):
        if d.get(key) in _DIRECTION_OF:
            return _DIRECTION_OF[d[key]]
    return None


def is_resolved(alert: Alert) -> bool:
    return alert.details.get(STATE) == RESOLVED


def resolved_alert(cause: str, kind: AlertKind, message: str, details: dict[str, str] | None = None,
                   obj: str | None = None) -> Alert:
    """The alert that closes ``cause``."""
    return Alert(kind=kind, severity=AlertSeverity.INFO, message=message, object=obj,
                 details={**(details or {}), CAUSE: cause, STATE: RESOLVED})


def read_alerts(cfg: SfsyncConfig, timeout: float = 30.0) -> list[Alert]:
    """Every alert on ``<prefix>.alerts`` (its retention: ``kafka.retention_ms``), oldest first."""
    names = TopicNames(cfg.kafka.topic_prefix)
    serde = Serde.from_config(cfg.kafka)
    out = []
    for msg in read_all(cfg.kafka, [names.alerts], timeout=timeout, role="alerts-reader"):
        try:
            out.append(serde.decode(msg.value() or b"", Alert, names.alerts))
        except DecodeError:
            continue
    return out


def open_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    """The latest alert of every cause whose latest alert is not a resolution, oldest first."""
    latest: dict[str, Alert] = {}
    for a in alerts:
        latest[alert_cause(a)] = a
    return sorted((a for a in latest.values() if not is_resolved(a)), key=lambda a: a.ts)


@dataclass
class _Cause:
    open: bool = False
    delivered_at: datetime | None = None
    held_back: int = 0


@dataclass
class Deduper:
    """One delivery per cause per ``window``, then one "resolved" (see the module contract)."""

    window: timedelta = WINDOW
    causes: dict[str, _Cause] = field(default_factory=dict)

    def decide(self, alert: Alert) -> Alert | None:
        """The alert to deliver for ``alert`` (with ``details.repeated`` when repeats were held back), or None."""
        cause = self.causes.setdefault(alert_cause(alert), _Cause())
        if is_resolved(alert):
            if not cause.open:
                return None
            cause.open, cause.delivered_at, cause.held_back = False, None, 0
            return alert
        if cause.open and cause.delivered_at is not None and alert.ts - cause.delivered_at < self.window:
            cause.held_back += 1
            return None
        out = alert if not cause.held_back else replace(
            alert, details={**alert.details, "repeated": str(cause.held_back)})
        cause.open, cause.delivered_at, cause.held_back = True, alert.ts, 0
        return out


class StreakEvent(StrEnum):
    ALERT = "alert"
    RESOLVED = "resolved"


@dataclass
class FailureStreak:
    """Consecutive record failures of one sink (see the module contract)."""

    threshold: int
    count: int = 0
    alerted: bool = False

    def record(self, ok: bool) -> StreakEvent | None:
        if ok:
            self.count = 0
            if self.alerted:
                self.alerted = False
                return StreakEvent.RESOLVED
            return None
        self.count += 1
        if self.count >= self.threshold and not self.alerted:
            self.alerted = True
            return StreakEvent.ALERT
        return None


def connection_cause(role: str, target: str) -> str:
    """The cause of "``role`` cannot reach ``target``" (``connection_down:salesforce-sink:postgres``)."""
    return f"{AlertKind.CONNECTION_DOWN.value}:{role}:{target}"


def dlq_age_cause(topic: str) -> str:
    """The cause of "letters older than a day in ``topic``" (``dlq_age:sfsync.dlq.salesforce``)."""
    return f"{AlertKind.DLQ_AGE.value}:{topic}"


@dataclass
class DownWatch:
    """One connection's outage, timed (see the module contract). Not thread-safe: one role loop feeds it."""

    after: float = DOWN_AFTER
    clock: Callable[[], float] = time.monotonic
    since: float | None = None
    detail: str = ""
    alerted: bool = False

    def down(self, detail: str) -> StreakEvent | None:
        """The connection failed (again); ``alert`` when it has now been down longer than ``after``."""
        if self.since is None:
            self.since = self.clock()
        self.detail = detail
        return self.check()

    def check(self) -> StreakEvent | None:
        """``alert`` once the current outage is older than ``after``; else nothing."""
        if self.since is None or self.alerted or self.down_for() <= self.after:
            return None
        self.alerted = True
        return StreakEvent.ALERT

    def up(self) -> StreakEvent | None:
        """The connection works; ``resolved`` when its outage had been alerted."""
        alerted = self.alerted
        self.since, self.detail, self.alerted = None, "", False
        return StreakEvent.RESOLVED if alerted else None

    def down_for(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since


@dataclass
class ThresholdWatch:
    """A level against a threshold: ``alert`` on crossing up, ``resolved`` on the next reading below."""

    threshold: float
    alerted: bool = False

    def observe(self, level: float | None) -> StreakEvent | None:
        """``level`` None (not known yet) says nothing."""
        if level is None:
            return None
        if level >= self.threshold and not self.alerted:
            self.alerted = True
            return StreakEvent.ALERT
        if level < self.threshold and self.alerted:
            self.alerted = False
            return StreakEvent.RESOLVED
        return None


@dataclass(frozen=True, slots=True)
class StaleLetters:
    """The dead letters of one DLQ topic that are older than the limit."""

    topic: str
    count: int
    oldest: datetime
    ids: tuple[str, ...]


def stale_dead_letters(letters: Iterable[tuple[str, str, datetime]], now: datetime,
                       max_age: timedelta = DLQ_MAX_AGE) -> dict[str, StaleLetters]:
    """Per DLQ topic, the letters ``(topic, id, entered)`` that entered it more than ``max_age`` before ``now``.

    The caller passes only letters still dead (a replayed or purged letter is handled)."""
    found: dict[str, list[tuple[datetime, str]]] = {}
    for topic, letter_id, entered in letters:
        if now - entered > max_age:
            found.setdefault(topic, []).append((entered, letter_id))
    return {topic: StaleLetters(topic, len(items), min(t for t, _ in items), tuple(i for _, i in sorted(items)))
            for topic, items in found.items()}


@dataclass
class DlqAgeWatch:
    """Which DLQ topics have an open ``dlq_age`` alert, and what a new scan changes (module contract)."""

    open: set[str] = field(default_factory=set)

    def note(self, alert: Alert) -> None:
        """Follow the alerts topic (also alerts this watch made itself)."""
        if alert.kind is not AlertKind.DLQ_AGE or not alert.details.get("dlq"):
            return
        if is_resolved(alert):
            self.open.discard(alert.details["dlq"])
        else:
            self.open.add(alert.details["dlq"])

    def decide(self, topics: Iterable[str], stale: dict[str, StaleLetters]
               ) -> list[tuple[str, StreakEvent, StaleLetters | None]]:
        """For every scanned DLQ topic: ``alert`` when it has stale letters and no open alert, ``resolved``
        when it has none and an open alert; the watch assumes the alerts it returns are sent."""
        out: list[tuple[str, StreakEvent, StaleLetters | None]] = []
        for topic in sorted(set(topics) | set(stale)):
            if topic in stale and topic not in self.open:
                self.open.add(topic)
                out.append((topic, StreakEvent.ALERT, stale[topic]))
            elif topic not in stale and topic in self.open:
                self.open.discard(topic)
                out.append((topic, StreakEvent.RESOLVED, None))
        return out
