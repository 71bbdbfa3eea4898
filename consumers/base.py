"""The sink contract: what ``consumers/runner.py`` needs from the PostgreSQL and Salesforce sinks.

A sink writes a batch of apply commands and says, per command, whether it
succeeded or why not. It never commits Kafka offsets and never produces to
retry/DLQ topics: the runner does that, after the write returned — so offsets
are committed only for work that is durable, and a failure is routed by
policy (retry tier or DLQ) in one place.

- :meth:`Sink.write` returns one entry per command, in order: ``None`` for
  success, a :class:`~sfsync.failures.Failure` for a record that failed
  (transient -> retry tier, permanent -> DLQ). Records of one batch that
  failed must not have been written (or must be safe to write again).
- If the whole target is unavailable (database down, credentials refused,
  API budget spent) the sink raises :class:`SinkUnavailable`: nothing of the
  batch counts as written, the runner pauses its partitions, waits
  ``retry_after`` seconds (keeping the consumer alive) and calls ``write``
  again with the same batch. Nothing is committed meanwhile; nothing is lost.
- :meth:`Sink.probe` tells readiness whether the target answers, before the
  runner joins its group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sfsync.failures import Failure
from sfsync.records import AlertKind, ApplyCommand, Direction


class SinkUnavailable(Exception):
    """The target cannot take writes now; retry the same batch after ``retry_after`` seconds.

    ``alert_kind`` is the kind of the alert the runner raises once per outage when ``alert`` is set;
    subclasses name theirs (credentials refused, API budget spent).
    """

    alert_kind: AlertKind = AlertKind.OTHER

    def __init__(self, message: str, retry_after: float = 1.0, alert: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.alert = alert


class CredentialsRefused(SinkUnavailable):
    """A target refused sfsync's credentials: one ``credential_failure`` alert, pause, keep the batch.
    ``retry_when`` makes the runner retry at once when it says so (the role's config file changed:
    :mod:`sfsync.config.credentials`); ``target`` names the refusing side in the alert's cause
    (``credential_failure:<target>``; ``None``: the sink's own target)."""

    alert_kind = AlertKind.CREDENTIAL_FAILURE
    target: str | None = None

    def __init__(self, message: str, retry_after: float = 30.0,
                 retry_when: Callable[[], bool] | None = None) -> None:
        super().__init__(message, retry_after=retry_after, alert=True)
        self.retry_when = retry_when


class Sink(Protocol):
    #: "postgres" or "salesforce": names the retry/DLQ topics (sfsync.retry.<name>.<tier>, sfsync.dlq.<name>),
    #: the consumer group and the config section ``sinks.<name>``
    name: str
    #: which direction's commands it applies (inbound: Salesforce -> here; outbound: here -> Salesforce)
    direction: Direction

    def write(self, batch: list[ApplyCommand]) -> list[Failure | None]: ...

    def probe(self) -> None:
        """Raise :class:`SinkUnavailable` unless the target answers now (readiness; costs no data call)."""
        ...

    def close(self) -> None: ...
