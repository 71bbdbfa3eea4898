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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from sfsync.config import SfsyncConfig
from sfsync.kafka.topics import TopicNames
from sfsync.operations._read import read_all
from sfsync.records import Alert, AlertKind, AlertSeverity, Direction
from sfsync.serde import DecodeError, Serde

__all__ = ["Deduper", "FailureStreak", "StreakEvent", "alert_cause", "alert_direction", "is_resolved",
           "open_alerts", "read_alerts", "resolved_alert"]

STATE = "state"
RESOLVED = "resolved"
CAUSE = "cause"
WINDOW = timedelta(hours=1)

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
