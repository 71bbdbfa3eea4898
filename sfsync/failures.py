"""Failures as data: the one contract for dead letters and retries, shared by every stage.

A stage that cannot write a record returns a :class:`Failure` (transient or
permanent — decided by type/code tables in the sinks, never by matching
message text). :func:`failure_headers` turns it into the Kafka headers every
dead letter and retry message carries, so ``sfsync dlq`` can show and replay
any of them without knowing which stage wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

HEADER_PREFIX = "sfsync."
H_KIND = "sfsync.error.kind"
H_CLASS = "sfsync.error.class"
H_MESSAGE = "sfsync.error.message"
H_ATTEMPT = "sfsync.attempt"
H_FIRST = "sfsync.first_attempt_ts"
H_LAST = "sfsync.last_attempt_ts"
H_TOPIC = "sfsync.origin.topic"
H_PARTITION = "sfsync.origin.partition"
H_OFFSET = "sfsync.origin.offset"
H_STAGE = "sfsync.stage"
H_NOT_BEFORE = "sfsync.retry.not_before_ms"

MAX_MESSAGE = 2000


class FailureKind(StrEnum):
    TRANSIENT = "transient"  # retry later: timeouts, 5xx, lock errors, limits, database down
    PERMANENT = "permanent"  # dead-letter now: validation, bad field, bad value


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one record was not written. ``error_class`` is a code (``UNABLE_TO_LOCK_ROW``,
    ``SQLSTATE 23502``, ``CoercionError``), ``message`` a readable reason."""

    kind: FailureKind
    error_class: str
    message: str


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the failed message was read (the original, not a retry topic, once known)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    kind: str
    error_class: str
    message: str
    attempt: int
    first_attempt: datetime | None
    last_attempt: datetime | None
    origin: Origin | None
    stage: str


def _ms(ts: datetime) -> bytes:
    return str(int(ts.timestamp() * 1000)).encode()


def failure_headers(
    failure: Failure,
    *,
    stage: str,
    attempt: int,
    origin: Origin,
    first_attempt: datetime | None = None,
    now: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """Headers for a dead letter or a retry message. Secrets must not be in ``failure.message``."""
    now = now or datetime.now(UTC)
    return [
        (H_KIND, failure.kind.value.encode()),
        (H_CLASS, failure.error_class.encode()),
        (H_MESSAGE, failure.message[:MAX_MESSAGE].encode()),
        (H_ATTEMPT, str(attempt).encode()),
        (H_FIRST, _ms(first_attempt or now)),
        (H_LAST, _ms(now)),
        (H_TOPIC, origin.topic.encode()),
        (H_PARTITION, str(origin.partition).encode()),
        (H_OFFSET, str(origin.offset).encode()),
        (H_STAGE, stage.encode()),
    ]


def _ts(raw: bytes | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromtimestamp(int(raw) / 1000, UTC)
    except ValueError:
        return None


def read_headers(headers: list[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    return {k: v for k, v in (headers or []) if k.startswith(HEADER_PREFIX) and v is not None}


def parse_failure_headers(headers: list[tuple[str, bytes | None]] | None) -> DeadLetterInfo:
    """Read back what :func:`failure_headers` wrote; missing headers become defaults."""
    h = read_headers(headers)

    def text(key: str) -> str:
        return h.get(key, b"").decode(errors="replace")

    origin = None
    if H_TOPIC in h:
        try:
            origin = Origin(text(H_TOPIC), int(text(H_PARTITION) or -1), int(text(H_OFFSET) or -1))
        except ValueError:
            origin = None
    try:
        attempt = int(text(H_ATTEMPT) or 0)
    except ValueError:
        attempt = 0
    return DeadLetterInfo(
        kind=text(H_KIND), error_class=text(H_CLASS), message=text(H_MESSAGE), attempt=attempt,
        first_attempt=_ts(h.get(H_FIRST)), last_attempt=_ts(h.get(H_LAST)), origin=origin, stage=text(H_STAGE),
    )
