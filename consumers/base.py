"""The sink contract: what ``consumers/runner.py`` needs from the PostgreSQL and Salesforce sinks.

A sink writes a batch of apply commands and says, per command, whether it
succeeded or why not. It never commits Kafka offsets and never produces to
retry/DLQ topics: the runner does that, after the write returned — so offsets
are committed only for work that is durable, and a failure is routed by
policy (retry tier or DLQ) in one place.

- :meth:`Sink.write` returns one entry per command, in order: ``None`` for
  success, a :class:`~consumers.failures.Failure` for a record that failed
  (transient -> retry tier, permanent -> DLQ). Records of one batch that
  failed must not have been written (or must be safe to write again).
- If the whole target is unavailable (database down, credentials refused,
  API budget spent) the sink raises :class:`SinkUnavailable`: nothing of the
  batch counts as written, the runner pauses its partitions, waits
  ``retry_after`` seconds (keeping the consumer alive) and calls ``write``
  again with the same batch. Nothing is committed meanwhile; nothing is lost.
"""

from __future__ import annotations

from typing import Protocol

from consumers.failures import Failure
from sfsync.records import ApplyCommand


class SinkUnavailable(Exception):
    """The target cannot take writes now; retry the same batch after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0, alert: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.alert = alert


class Sink(Protocol):
    #: "postgres" or "salesforce": names the retry/DLQ topics (sfsync.retry.<name>.<tier>, sfsync.dlq.<name>)
    name: str

    def write(self, batch: list[ApplyCommand]) -> list[Failure | None]: ...

    def close(self) -> None: ...
