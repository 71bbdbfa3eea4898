"""Dead letters of the producers: a captured change that cannot become a message on its change topic.

Pure functions, no I/O; both producers (the outbox relay and the CDC producer) build their dead letters
and alerts here, so the two directions look the same to an operator.

Contract:

- A bad change (no record key, not convertible, not encodable, larger than the message limit) goes to its
  direction's DLQ: ``<prefix>.dlq.salesforce`` for outbound changes (PostgreSQL -> Salesforce),
  ``<prefix>.dlq.postgres`` for inbound ones — the DLQ of the sink the change was meant for
  (:func:`direction_dlq`). Everything behind it flows.
- Headers: :func:`sfsync.failures.failure_headers` of a ``permanent`` :class:`~sfsync.failures.Failure`
  (``attempt`` 1; ``origin`` = where the change was read: the outbox table and the outbox id, or the CDC
  channel and the replay id, with partition -1 as it was not read from Kafka) plus
  ``sfsync.value.format: json``.
- Value: a JSON document that identifies the change (:func:`build_dead_letter`). Its bulky part (the
  outbox row's ``new_values``, the CDC event's CometD ``message``) is kept when the failure is not about
  size and the document fits the message limit with room for the headers; otherwise it is left out and
  the error message says so and why. A lean copy (without the bulky part) is kept as the fallback for a
  broker whose own limit is lower than the client's.
- One alert per bad change (:func:`dead_letter_alert`): kind ``other``, severity ``warning``, details
  ``reason=dead_letter`` with the stage, the DLQ topic, the error class and the change's identity. Its
  ``alert_id`` is derived from stage + identity, so the alert of a dead letter written again after a crash
  (at least once) is recognisably the same alert.
- Error messages name the bad thing (table, key, outbox id / channel, replay id, size vs limit) and never
  a secret: they carry no configuration, no DSN and no field values.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from sfsync.config import KafkaConfig
from sfsync.failures import HEADER_PREFIX, MAX_MESSAGE, Failure, FailureKind, Origin, failure_headers
from sfsync.kafka.topics import TopicNames
from sfsync.records import Alert, AlertKind, AlertSeverity, Direction

#: librdkafka's default ``message.max.bytes`` (the client refuses a larger message before sending it).
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
#: Room kept for the key, the headers (a failure message is at most ``MAX_MESSAGE`` characters) and the
#: record overhead when deciding whether a dead letter's document fits the message limit.
HEADROOM = MAX_MESSAGE + 2048
#: Error classes of a message refused for its size (librdkafka's names, also the broker's).
SIZE_ERRORS: Mapping[int, str] = {
    KafkaError.MSG_SIZE_TOO_LARGE: "MSG_SIZE_TOO_LARGE",
    KafkaError.RECORD_LIST_TOO_LARGE: "RECORD_LIST_TOO_LARGE",
}
SIZE_ERROR = "MSG_SIZE_TOO_LARGE"
H_FORMAT = f"{HEADER_PREFIX}value.format"
_ALERT_NS = uuid.UUID("0b7a7f5e-3f4c-4f0b-9a57-52d2b1f7c0d3")


def direction_dlq(names: TopicNames, direction: Direction) -> str:
    """The DLQ of a direction: the one of the sink its changes are meant for."""
    return names.dlq("postgres" if direction is Direction.INBOUND else "salesforce")


def message_limit(kafka: KafkaConfig) -> int:
    """The largest message the producer sends: ``kafka.librdkafka['message.max.bytes']`` or librdkafka's
    default. (The broker or the topic may have a lower limit: such a refusal arrives as a delivery error.)"""
    raw = kafka.librdkafka.get("message.max.bytes")
    try:
        return int(raw) if raw is not None else DEFAULT_MESSAGE_MAX_BYTES
    except ValueError:
        return DEFAULT_MESSAGE_MAX_BYTES


def message_size(key: str | bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> int:
    """Bytes of key, value and headers: what the client compares with ``message.max.bytes`` (less the
    record's few bytes of overhead)."""
    size = len(value) + (len(key.encode() if isinstance(key, str) else key) if key is not None else 0)
    return size + sum(len(k) + len(v) for k, v in headers or [])


def is_size_error(error: KafkaError | None) -> bool:
    """True for a delivery (or local produce) error that refuses the message for its size: permanent for
    that message, whatever the retries."""
    return error is not None and error.code() in SIZE_ERRORS


def too_large(size: int, limit: int) -> str:
    """The sentence every size failure carries."""
    return f"the message is {size} bytes, over the limit {limit} bytes (message.max.bytes)"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter ready to produce, with its alert and the lean fallback (``None`` when this is lean)."""

    topic: str
    key: str | None
    value: bytes
    headers: list[tuple[str, bytes]]
    alert: Alert
    lean: DeadLetter | None = None


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, default=str, separators=(",", ":"), sort_keys=True).encode()


def build_dead_letter(
    *,
    topic: str,
    key: str | None,
    failure: Failure,
    stage: str,
    origin: Origin,
    document: Mapping[str, Any],
    bulky: tuple[str, Any] | None,
    limit: int,
    alert_identity: str,
    alert_object: str | None,
    alert_details: Mapping[str, str],
) -> DeadLetter:
    """The dead letter of one bad change (see the module contract for value, headers and alert).

    ``document`` identifies the change; ``bulky`` is the ``(name, value)`` kept in the document only when it
    fits and the failure is not about size. ``failure.kind`` must be permanent.
    """
    if failure.kind is not FailureKind.PERMANENT:
        raise ValueError("a producer dead-letters permanent failures only")
    lean_doc = dict(document)
    size_failure = failure.error_class in SIZE_ERRORS.values()
    alert = dead_letter_alert(stage=stage, topic=topic, failure=failure, identity=alert_identity,
                              object=alert_object, details=alert_details)

    def letter(doc: Mapping[str, Any], message: str, lean: DeadLetter | None = None) -> DeadLetter:
        this = Failure(failure.kind, failure.error_class, message)
        headers = [*failure_headers(this, stage=stage, attempt=1, origin=origin), (H_FORMAT, b"json")]
        return DeadLetter(topic, key, _json(doc), headers, alert, lean)

    if bulky is None or size_failure:
        return letter(lean_doc, failure.message)
    name, value = bulky
    full_doc = {**lean_doc, name: value}
    size = len(_json(full_doc))
    if size + HEADROOM > limit:
        return letter(lean_doc, f"{failure.message} ({name} left out of this dead letter: {too_large(size, limit)})")
    lean = letter(lean_doc, f"{failure.message} ({name} left out of this dead letter: the broker refused "
                            f"the {size}-byte document for its size)")
    return letter(full_doc, failure.message, lean)


def dead_letter_alert(*, stage: str, topic: str, failure: Failure, identity: str, object: str | None,
                      details: Mapping[str, str]) -> Alert:
    """The one alert of a dead letter (id derived from ``stage`` + ``identity``: the same bad change, the same id)."""
    return Alert(
        alert_id=str(uuid.uuid5(_ALERT_NS, f"{stage}|{identity}")),
        kind=AlertKind.OTHER,
        severity=AlertSeverity.WARNING,
        message=f"{stage}: dead-lettered to {topic}: {failure.error_class}: {failure.message}"[:MAX_MESSAGE],
        object=object,
        details={"reason": "dead_letter", "stage": stage, "dlq": topic, "error_class": failure.error_class,
                 **details},
    )
