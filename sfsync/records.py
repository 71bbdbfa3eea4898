"""The records that travel on sfsync's topics, as Python dataclasses.

Each dataclass mirrors one Avro schema in ``schemas/`` (namespace ``io.sfsync``):

=================  ====================  ==========================================
dataclass          schema file           topics
=================  ====================  ==========================================
``ChangeEvent``    change_event.avsc     ``sfsync.changes.inbound|outbound``
``ApplyCommand``   apply_command.avsc    ``sfsync.apply.<sink>``, retry tiers, DLQ
``RecordStatus``   record_status.avsc    ``sfsync.status`` (compacted)
``MetricSample``   metric_sample.avsc    ``sfsync.metrics``
``Alert``          alert.avsc            ``sfsync.alerts``
``ControlRecord``  control_record.avsc   ``sfsync.control`` (compacted)
``SinkAck``        sink_ack.avsc         ``sfsync.control`` (compacted, ``ack:`` keys)
``Link``           link.avsc             ``sfsync.links`` (compacted)
=================  ====================  ==========================================

Contracts (shared by every role):

* Records are frozen, slotted, keyword-only dataclasses. Enum fields accept the
  ``StrEnum`` member or its string value (coerced on construction; unknown values
  raise ``ValueError``). List fields are stored as lists.
* Every timestamp is a timezone-aware ``datetime``; it is normalised to UTC on
  construction. A naive datetime raises ``ValueError`` naming the field.
* Field values (``ChangeEvent.values``, ``ApplyCommand.values``) hold plain Python
  values of the types in ``FieldPyValue``; they are checked on construction
  (unsupported types raise ``TypeError``, naive datetimes ``ValueError``, both
  naming the field) and converted to/from the Avro ``FieldValue`` union by the pure
  functions ``encode_value`` / ``decode_value``:

  ======================  =================================  ============================
  Python                  FieldValue.value                   FieldValue.logical
  ======================  =================================  ============================
  None                    null                               null
  bool                    boolean                            null
  int in [-2**63, 2**63)  long                               null
  other int               string, base 10                    bigint
  float                   double (NaN, +-inf, -0.0 kept)     null
  str                     string                             null
  bytes                   bytes (bytearray/memoryview too)   null
  Decimal                 string, ``str(d)`` (exact)         decimal
  datetime (aware only)   string, ``isoformat()`` w/ offset  datetime
  date                    string, ``isoformat()``            date
  time                    string, ``isoformat()``            time
  ======================  =================================  ============================

  ``decode_value(encode_value(v))`` gives back an equal value of the same type.
  UTC offsets with fractions of a second (never seen in real data, and not parsed back
  by Python 3.11) are rejected with ``ValueError``.
  A datetime/time comes back with a fixed-offset ``timezone`` of the same offset
  (the original tzinfo object, e.g. a ``ZoneInfo``, is not carried).
* ``to_avro()`` returns the dict fastavro writes for the record's schema;
  ``from_avro(d)`` builds the record from the dict fastavro reads (raising
  ``ValueError``/``TypeError``/``KeyError`` on inconsistent data; ``sfsync.serde``
  turns those into ``DecodeError``). Both are derived from the dataclass fields, which
  each class declares in its schema's field order: an enum travels as its symbol, a
  field-value map as ``encode_values`` / ``decode_values`` give it, anything else as is
  (fastavro itself maps an aware ``datetime`` to ``timestamp-micros``). A key may be
  missing from ``d`` only where the schema gives the field a default.
* Record keys (Kafka message keys, status keys) come from ``record_key``:
  ``{object}:{sfid}`` once the record is linked, ``{object}:local:{pk}`` before.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, Self, TypeAlias, get_type_hints

__all__ = [
    "FORCE_ORIGIN",
    "INT32_MAX",
    "INT64_MAX",
    "INT64_MIN",
    "QUEUED_PREFIX",
    "RECORD_TYPES",
    "Alert",
    "AlertKind",
    "AlertSeverity",
    "ApplyCommand",
    "ApplyOperation",
    "ApplyTarget",
    "AvroRecord",
    "ChangeEvent",
    "ControlAction",
    "ControlRecord",
    "Direction",
    "FieldPyValue",
    "Link",
    "LinkKind",
    "Logical",
    "MetricSample",
    "Operation",
    "Record",
    "RecordStatus",
    "SinkAck",
    "Source",
    "SyncState",
    "decode_value",
    "decode_values",
    "encode_value",
    "encode_values",
    "new_id",
    "parse_record_key",
    "queued_status_key",
    "record_key",
    "utcnow",
    "version_time",
    "write_version",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

FieldPyValue: TypeAlias = bool | int | float | str | bytes | Decimal | date | datetime | time | None
"""A field value as the rest of sfsync sees it (``datetime`` must be timezone-aware)."""


# --------------------------------------------------------------------------- enums


class Source(enum.StrEnum):
    """Where a change was captured."""

    SALESFORCE = "salesforce"
    POSTGRES = "postgres"


class Direction(enum.StrEnum):
    """inbound = Salesforce -> PostgreSQL; outbound = PostgreSQL -> Salesforce."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Operation(enum.StrEnum):
    """What happened at the source. ``gap``: events were lost, re-read the record."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNDELETE = "undelete"
    SNAPSHOT = "snapshot"
    GAP = "gap"


class ApplyTarget(enum.StrEnum):
    """Which sink must execute an ``ApplyCommand``."""

    LOCAL = "local"
    SALESFORCE = "salesforce"


class ApplyOperation(enum.StrEnum):
    """What a sink must do with the record."""

    UPSERT = "upsert"
    DELETE = "delete"
    UNDELETE = "undelete"


class SyncState(enum.StrEnum):
    """Per-record sync state shown to operators (In Queue / Success / Failed / Superseded / Conflict /
    Filtered / Ambiguous). The sinks write Success, Failed and Superseded (the command was not written: the
    target already holds a newer version of every field it carries, :mod:`consumers.versions`; the record is
    current); the processor writes Conflict (the record's last change lost fields to the other side's: both
    values, the policy and the time in ``last_error``) and Filtered (the rule); ``sfsync backfill``
    writes Ambiguous (several first-sync candidates, listed in ``last_error``)."""

    IN_QUEUE = "in_queue"
    SUCCESS = "success"
    FAILED = "failed"
    CONFLICT = "conflict"
    FILTERED = "filtered"
    AMBIGUOUS = "ambiguous"
    SUPERSEDED = "superseded"


class AlertKind(enum.StrEnum):
    """Alert categories; readers map unknown future kinds to ``other`` (Avro enum default)."""

    CREDENTIAL_FAILURE = "credential_failure"
    CONSECUTIVE_FAILURES = "consecutive_failures"
    SCHEMA_CHANGE = "schema_change"
    API_BUDGET = "api_budget"
    REPLAY_GAP = "replay_gap"
    OTHER = "other"
    CONNECTION_DOWN = "connection_down"
    DLQ_AGE = "dlq_age"


class AlertSeverity(enum.StrEnum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class ControlAction(enum.StrEnum):
    """Operator control of one direction's sink."""

    PAUSE = "pause"
    RESUME = "resume"


class LinkKind(enum.StrEnum):
    """What a :class:`Link` on the links topic is (see there)."""

    PULL = "pull"
    HANDOVER = "handover"


class Logical(enum.StrEnum):
    """The ``FieldValue.logical`` tag: how to read a value carried as a string."""

    DECIMAL = "decimal"
    DATE = "date"
    DATETIME = "datetime"
    TIME = "time"
    BIGINT = "bigint"


# --------------------------------------------------------------------------- helpers


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (microsecond precision)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new random UUID (version 4) as canonical text."""
    return str(uuid.uuid4())


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def write_version(commit_ts: datetime, position: str | None) -> tuple[int, int]:
    """The version a sink compares (:mod:`consumers.versions`): commit time in whole microseconds (exact, no
    float) and the position as a number (``-1`` when it is not one, e.g. ``catchup:…``)."""
    position = position or ""
    number = int(position) if position.isdigit() or (position.startswith("-") and position[1:].isdigit()) else -1
    return (commit_ts - _EPOCH) // timedelta(microseconds=1), number


def version_time(micros: int) -> datetime:
    """The commit time of a version's first half (inverse of :func:`write_version`)."""
    return _EPOCH + timedelta(microseconds=micros)


def record_key(object: str, sfid: str | None = None, local_key: str | None = None) -> str:
    """The identity key of a record: ``{object}:{sfid}`` when linked, else ``{object}:local:{pk}``.

    The Salesforce id wins when both are known. Raises ``ValueError`` when ``object``
    is empty or contains ``:``, or when neither ``sfid`` nor ``local_key`` is given
    (empty strings count as missing).
    """
    if not object or ":" in object:
        raise ValueError(f"record_key: object must be a non-empty name without ':', got {object!r}")
    if sfid:
        return f"{object}:{sfid}"
    if local_key is not None and local_key != "":
        return f"{object}:local:{local_key}"
    raise ValueError(f"record_key: {object} record has neither sfid nor local_key")


def parse_record_key(key: str) -> tuple[str, str | None, str | None]:
    """Split a key made by ``record_key`` into ``(object, sfid, local_key)``.

    Exactly one of ``sfid`` / ``local_key`` is set. A local key may itself contain
    ``:``. Raises ``ValueError`` for anything ``record_key`` cannot produce.
    """
    obj, sep, rest = key.partition(":")
    if not obj or not sep or not rest:
        raise ValueError(f"not a record key: {key!r}")
    if rest.startswith("local:"):
        local = rest[len("local:") :]
        if not local:
            raise ValueError(f"not a record key (empty local key): {key!r}")
        return obj, None, local
    return obj, rest, None


def _aware_utc(name: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name}: expected a timezone-aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: naive datetime {value.isoformat()} - timestamps must be timezone-aware (UTC)")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _aware_utc_opt(name: str, value: Any) -> datetime | None:
    return None if value is None else _aware_utc(name, value)


def _enum(name: str, cls: type[enum.StrEnum], value: Any) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{name}: {value!r} is not one of {allowed}") from None


_PLAIN_TYPES = (bool, int, float, str, bytes, bytearray, memoryview, Decimal, date, time)


def _check_values(name: str, values: Any) -> dict[str, FieldPyValue]:
    if not isinstance(values, Mapping):
        raise TypeError(f"{name}: expected a mapping of field name -> value, got {type(values).__name__}")
    for key, value in values.items():
        if not isinstance(key, str):
            raise TypeError(f"{name}: field names must be str, got {key!r}")
        if value is None:
            continue
        if not isinstance(value, _PLAIN_TYPES):
            raise TypeError(f"{name}[{key!r}]: unsupported value type {type(value).__name__}")
        if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(f"{name}[{key!r}]: naive datetime {value.isoformat()} - datetimes must be timezone-aware")
    return values if isinstance(values, dict) else dict(values)


def _check_int32(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT32_MAX:
        raise ValueError(f"{name}: must be an int in 0..{INT32_MAX}, got {value!r}")


def _str_list(name: str, items: Any) -> list[str]:
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise TypeError(f"{name}: expected a list of str, got {type(items).__name__}")
    out = items if isinstance(items, list) else list(items)
    for item in out:
        if not isinstance(item, str):
            raise TypeError(f"{name}: expected a list of str, found {item!r}")
    return out


def _str_map(name: str, items: Any) -> dict[str, str]:
    if not isinstance(items, Mapping):
        raise TypeError(f"{name}: expected a mapping of str -> str, got {type(items).__name__}")
    for k, v in items.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{name}: expected str -> str, found {k!r}: {v!r}")
    return items if isinstance(items, dict) else dict(items)


# --------------------------------------------------------------------------- field values


def encode_value(value: FieldPyValue) -> dict[str, Any]:
    """Convert one Python value to a ``FieldValue`` dict ``{"value": ..., "logical": ...}``.

    See the module docstring for the mapping. Raises ``TypeError`` for unsupported
    types and ``ValueError`` for a naive datetime.
    """
    if value is None or isinstance(value, bool | float | str | bytes):
        return {"value": value, "logical": None}
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return {"value": int(value), "logical": None}
        return {"value": str(int(value)), "logical": "bigint"}
    if isinstance(value, Decimal):
        return {"value": str(value), "logical": "decimal"}
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise ValueError(f"naive datetime {value.isoformat()} - datetimes must be timezone-aware")
        if offset.microseconds:
            raise ValueError(f"datetime {value.isoformat()}: UTC offsets with fractions of a second are not supported")
        return {"value": value.isoformat(), "logical": "datetime"}
    if isinstance(value, date):
        return {"value": value.isoformat(), "logical": "date"}
    if isinstance(value, time):
        offset = value.utcoffset()
        if offset is not None and offset.microseconds:
            raise ValueError(f"time {value.isoformat()}: UTC offsets with fractions of a second are not supported")
        return {"value": value.isoformat(), "logical": "time"}
    if isinstance(value, bytearray | memoryview):
        return {"value": bytes(value), "logical": None}
    raise TypeError(f"unsupported field value type {type(value).__name__}")


def decode_value(fv: Mapping[str, Any]) -> FieldPyValue:
    """Convert a ``FieldValue`` dict back to the Python value ``encode_value`` was given.

    Raises ``ValueError`` when the logical tag and the value disagree (e.g. a
    ``decimal`` tag on a non-string, unparsable text, a naive ``datetime``).
    """
    value = fv["value"]
    logical = fv.get("logical")
    if logical is None:
        if value is None or isinstance(value, bool | int | float | str | bytes):
            return value
        raise ValueError(f"FieldValue holds unsupported type {type(value).__name__}")
    if not isinstance(value, str):
        raise ValueError(f"FieldValue logical {logical!r} needs a string value, got {type(value).__name__}")
    if logical == "decimal":
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(f"FieldValue decimal {value[:40]!r} is not a decimal number") from None
    if logical == "datetime":
        dt = datetime.fromisoformat(value)
        if dt.tzinfo is None:
            raise ValueError(f"FieldValue datetime {value[:40]!r} has no UTC offset")
        return dt
    if logical == "date":
        return date.fromisoformat(value)
    if logical == "time":
        return time.fromisoformat(value)
    if logical == "bigint":
        return int(value, 10)
    raise ValueError(f"unknown FieldValue logical {logical!r}")


def encode_values(values: Mapping[str, FieldPyValue]) -> dict[str, dict[str, Any]]:
    """``encode_value`` over a mapping; errors name the offending field."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        try:
            out[name] = encode_value(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"field {name!r}: {exc}") from exc
    return out


def decode_values(values: Mapping[str, Mapping[str, Any]]) -> dict[str, FieldPyValue]:
    """``decode_value`` over a mapping; errors name the offending field."""
    out: dict[str, FieldPyValue] = {}
    for name, fv in values.items():
        try:
            out[name] = decode_value(fv)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"field {name!r}: {exc}") from exc
    return out


# --------------------------------------------------------------------------- avro codec

_SCHEMA_DEFAULT_KEY = "avro_default"
_SCHEMA_DEFAULT: Mapping[str, bool] = MappingProxyType({_SCHEMA_DEFAULT_KEY: True})
"""``field(metadata=...)`` of a factory-default field whose schema field has a default (see ``_has_schema_default``)."""

_AS_IS: frozenset[Any] = frozenset(
    {str, int, float, datetime, str | None, int | None, bytes | None, datetime | None, list[str], dict[str, str],
     dict[str, int]}
)
"""Field types fastavro writes and reads unchanged: string/int/long/double, an aware ``datetime`` as
``timestamp-micros`` (read back as UTC), ``["null", T]`` unions (``bytes``: Avro bytes), arrays and maps of
strings (and maps of longs)."""

_Convert: TypeAlias = Callable[[Any], Any]


def _as_is(value: Any) -> Any:
    """No conversion: fastavro maps the value itself."""
    return value


def _enum_symbol(member: enum.StrEnum) -> str:
    """An enum field as its Avro enum symbol (a plain ``str``)."""
    return member.value


def _conversions(name: str, hint: Any) -> tuple[_Convert, _Convert]:
    """``(encode, decode)`` between a field of type ``hint`` and its Avro dict value.

    An enum goes out as its symbol and comes back as the symbol (the record's constructor
    coerces and checks it); a field-value map goes through ``encode_values`` /
    ``decode_values``; the types in ``_AS_IS`` pass through. Any other type raises
    ``TypeError``: a new field type must be given its Avro form here, not guessed.
    """
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return _enum_symbol, _as_is
    if hint == dict[str, FieldPyValue]:
        return encode_values, decode_values
    if hint in _AS_IS:
        return _as_is, _as_is
    raise TypeError(f"{name}: no Avro conversion for field type {hint!r}")


def _has_schema_default(f: dataclasses.Field[Any]) -> bool:
    """Whether the field's schema field has a default, i.e. ``from_avro`` may find it absent.

    A plain dataclass default (``None``, ``0``) always mirrors the schema default. A factory
    default does only when marked ``_SCHEMA_DEFAULT`` (``{}`` for a map): ids and timestamps
    generated per record, and lists/maps the schema requires, must be present on the wire.
    """
    return f.default is not dataclasses.MISSING or bool(f.metadata.get(_SCHEMA_DEFAULT_KEY, False))


@dataclass(frozen=True, slots=True)
class _FieldCodec:
    """How one record field travels in the Avro dict: key, conversions, whether it may be absent."""

    name: str
    encode: _Convert
    decode: _Convert
    optional: bool


def _build_codecs(cls: type[Any]) -> tuple[_FieldCodec, ...]:
    """The codecs of a record dataclass's fields, in declaration (= schema) order."""
    hints = get_type_hints(cls)
    return tuple(
        _FieldCodec(f.name, *_conversions(f.name, hints[f.name]), optional=_has_schema_default(f))
        for f in dataclasses.fields(cls)
    )


_CODECS: dict[type[Any], tuple[_FieldCodec, ...]] = {}


def _field_codecs(cls: type[Any]) -> tuple[_FieldCodec, ...]:
    """``_build_codecs(cls)``, built on a class's first use (its annotations resolve by then) and kept."""
    codecs = _CODECS.get(cls)
    if codecs is None:
        codecs = _CODECS[cls] = _build_codecs(cls)
    return codecs


class _AvroCodec:
    """``to_avro`` / ``from_avro`` derived from the fields of the record dataclass that inherits this.

    The dataclass declares its fields in the order of its schema's fields, so the dict comes
    out in schema order and ``from_avro`` reads (and fails on) the keys in that order. Empty
    ``__slots__`` keep the subclasses' ``slots=True`` effective (no instance ``__dict__``).
    """

    __slots__ = ()

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes with this record's schema (``schemas/<AVRO_SCHEMA>.avsc``).

        Raises ``TypeError``/``ValueError`` for a field value ``encode_value`` cannot write.
        """
        return {c.name: c.encode(getattr(self, c.name)) for c in _field_codecs(type(self))}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        """Build the record from the dict fastavro reads with its schema.

        A key may be absent only where the schema gives a default (the dataclass default, equal
        to it, applies); another absent key raises ``KeyError``, inconsistent content
        ``ValueError``/``TypeError``. Keys the schema does not know are ignored.
        """
        return cls(**{c.name: c.decode(d[c.name]) for c in _field_codecs(cls) if c.name in d or not c.optional})


# --------------------------------------------------------------------------- records


class AvroRecord(Protocol):
    """What ``sfsync.serde`` needs from a record class."""

    AVRO_SCHEMA: ClassVar[str]
    AVRO_NAME: ClassVar[str]

    def to_avro(self) -> dict[str, Any]: ...

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeEvent(_AvroCodec):
    """One captured change of one record: the envelope on ``sfsync.changes.*``.

    ``values`` maps *source* field names to values; ``changed_fields`` lists the
    source field names the change touched. One event per record: a CDC event that
    names several record ids is split by the producer. ``gap`` events carry no values.
    """

    AVRO_SCHEMA: ClassVar[str] = "change_event"
    AVRO_NAME: ClassVar[str] = "io.sfsync.ChangeEvent"

    event_id: str = field(default_factory=new_id)
    source: Source
    object: str
    entity: str | None = None
    operation: Operation
    sfid: str | None = None
    local_key: str | None = None
    changed_fields: list[str] = field(default_factory=list)
    values: dict[str, FieldPyValue] = field(default_factory=dict)
    commit_ts: datetime
    source_position: str
    origin: str | None = None
    transaction_key: str | None = None
    sequence: int | None = None
    trace_id: str = field(default_factory=new_id)
    seen_versions: dict[str, str] = field(default_factory=dict, metadata=_SCHEMA_DEFAULT)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "source", _enum("source", Source, self.source))
        s(self, "operation", _enum("operation", Operation, self.operation))
        s(self, "commit_ts", _aware_utc("commit_ts", self.commit_ts))
        s(self, "changed_fields", _str_list("changed_fields", self.changed_fields))
        s(self, "values", _check_values("values", self.values))

    @property
    def key(self) -> str:
        """The record key (Kafka message key): see ``record_key``."""
        return record_key(self.object, self.sfid, self.local_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyCommand(_AvroCodec):
    """What a sink must write: values already mapped to the *target's* field names.

    ``fields`` lists the target fields the sink writes (normally ``values``' keys).
    ``source_commit_ts`` and ``source_position`` (the source change's replay id / outbox id) are the
    command's version: a sink never overwrites a field with an older version
    (:mod:`consumers.versions`); ``attempt`` counts earlier delivery attempts (retry tiers increment it).
    """

    AVRO_SCHEMA: ClassVar[str] = "apply_command"
    AVRO_NAME: ClassVar[str] = "io.sfsync.ApplyCommand"

    command_id: str = field(default_factory=new_id)
    target: ApplyTarget
    object: str
    operation: ApplyOperation
    sfid: str | None = None
    local_key: str | None = None
    values: dict[str, FieldPyValue] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    source: Source
    source_event_id: str
    source_commit_ts: datetime
    origin: str | None = None
    trace_id: str = field(default_factory=new_id)
    attempt: int = 0
    source_position: str | None = None

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "target", _enum("target", ApplyTarget, self.target))
        s(self, "operation", _enum("operation", ApplyOperation, self.operation))
        s(self, "source", _enum("source", Source, self.source))
        s(self, "source_commit_ts", _aware_utc("source_commit_ts", self.source_commit_ts))
        s(self, "fields", _str_list("fields", self.fields))
        s(self, "values", _check_values("values", self.values))
        _check_int32("attempt", self.attempt)

    @property
    def key(self) -> str:
        """The record key (Kafka message key): see ``record_key``."""
        return record_key(self.object, self.sfid, self.local_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordStatus(_AvroCodec):
    """Latest sync state of one record in one direction (compacted ``sfsync.status``).

    ``key`` is the record key; the Kafka message key is ``kafka_key``
    (``{direction}:{key}``) so each direction keeps its own latest state.
    """

    AVRO_SCHEMA: ClassVar[str] = "record_status"
    AVRO_NAME: ClassVar[str] = "io.sfsync.RecordStatus"

    key: str
    object: str
    direction: Direction
    state: SyncState
    sfid: str | None = None
    local_key: str | None = None
    failure_count: int = 0
    last_error: str | None = None
    last_attempt_ts: datetime | None = None
    updated_ts: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "direction", _enum("direction", Direction, self.direction))
        s(self, "state", _enum("state", SyncState, self.state))
        s(self, "last_attempt_ts", _aware_utc_opt("last_attempt_ts", self.last_attempt_ts))
        s(self, "updated_ts", _aware_utc("updated_ts", self.updated_ts))
        _check_int32("failure_count", self.failure_count)

    @property
    def kafka_key(self) -> str:
        """Message key on the compacted status topic (:func:`status_key`)."""
        return status_key(self.direction, self.key)


def status_key(direction: Direction, key: str) -> str:
    """Message key of a record's status on the compacted status topic: ``{direction}:{record key}``; a
    tombstone with this key removes the status."""
    return f"{direction.value}:{key}"


#: ``origin`` of the change events a force sync (``sfsync sync``) pushes: the processor writes a field they
#: carry to the other side even when it equals the value last synced
FORCE_ORIGIN = "sfsync-force-sync"

#: prefix of the status keys that hold a record's In Queue state (:func:`queued_status_key`)
QUEUED_PREFIX = "queued:"


def queued_status_key(direction: Direction, key: str) -> str:
    """Message key of a record's **In Queue** state on the status topic: ``queued:{direction}:{record key}``.

    Why a key of its own: the producers write In Queue when they capture a change, the sinks (and the
    processor) write the outcome under :func:`status_key`. On one key, compaction keeps only the last by
    offset, and a late In Queue would then hide the outcome for good. Readers merge the two
    (:func:`sfsync.operations.status.current`): In Queue shows while it is newer (``updated_ts``) than the
    record's outcome. A tombstone with this key (the processor's, for a change that needs no write)
    removes it."""
    return f"{QUEUED_PREFIX}{status_key(direction, key)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSample(_AvroCodec):
    """One metric observation on ``sfsync.metrics``."""

    AVRO_SCHEMA: ClassVar[str] = "metric_sample"
    AVRO_NAME: ClassVar[str] = "io.sfsync.MetricSample"

    role: str
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict, metadata=_SCHEMA_DEFAULT)
    ts: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        s = object.__setattr__
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise TypeError(f"value: expected a number, got {type(self.value).__name__}")
        s(self, "value", float(self.value))
        s(self, "labels", _str_map("labels", self.labels))
        s(self, "ts", _aware_utc("ts", self.ts))


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert(_AvroCodec):
    """An operator-facing alert on ``sfsync.alerts``."""

    AVRO_SCHEMA: ClassVar[str] = "alert"
    AVRO_NAME: ClassVar[str] = "io.sfsync.Alert"

    alert_id: str = field(default_factory=new_id)
    kind: AlertKind
    severity: AlertSeverity
    message: str
    object: str | None = None
    details: dict[str, str] = field(default_factory=dict, metadata=_SCHEMA_DEFAULT)
    ts: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "kind", _enum("kind", AlertKind, self.kind))
        s(self, "severity", _enum("severity", AlertSeverity, self.severity))
        s(self, "details", _str_map("details", self.details))
        s(self, "ts", _aware_utc("ts", self.ts))


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlRecord(_AvroCodec):
    """Pause/resume of one direction (compacted ``sfsync.control``, Kafka key = direction)."""

    AVRO_SCHEMA: ClassVar[str] = "control_record"
    AVRO_NAME: ClassVar[str] = "io.sfsync.ControlRecord"

    direction: Direction
    action: ControlAction
    requested_by: str
    reason: str | None = None
    ts: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "direction", _enum("direction", Direction, self.direction))
        s(self, "action", _enum("action", ControlAction, self.action))
        s(self, "ts", _aware_utc("ts", self.ts))

    @property
    def kafka_key(self) -> str:
        """Message key on the compacted control topic: the direction."""
        return self.direction.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Link(_AvroCodec):
    """The identity of a record created locally, on the compacted ``sfsync.links`` topic.

    A record created in PostgreSQL lives in the processor under ``{object}:local:{pk}`` until the Salesforce
    sink writes its new sfid back onto the row; from then on its changes are keyed ``{object}:{sfid}`` and
    land on another partition. The processor moves the record's state across with two links
    (:mod:`processors.identity`): a **pull** keyed by the local key, sent by the worker that met the record
    under its sfid with no state, and the **handover** keyed by the sfid, sent back with the state kept under
    the local key (``entry``: the Table value, ``None`` when there was none). Only records moved between two
    workers go round (a worker holding both keys moves the state in place). ``partition`` (a pull): the
    partition of the parked changes, where the handover is sent, so it meets them whatever partitioner placed
    them.
    """

    AVRO_SCHEMA: ClassVar[str] = "link"
    AVRO_NAME: ClassVar[str] = "io.sfsync.Link"

    kind: LinkKind
    object: str
    sfid: str
    local_key: str
    entry: bytes | None = None
    partition: int | None = None
    ts: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "kind", _enum("kind", LinkKind, self.kind))
        if self.partition is not None:
            _check_int32("partition", self.partition)
        s(self, "ts", _aware_utc("ts", self.ts))
        if not self.sfid or not self.local_key:
            raise ValueError("Link: sfid and local_key must be non-empty")

    @property
    def kafka_key(self) -> str:
        """A pull travels under the local key, a handover under the sfid (:func:`record_key`)."""
        if self.kind is LinkKind.PULL:
            return record_key(self.object, local_key=self.local_key)
        return record_key(self.object, sfid=self.sfid)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkAck(_AvroCodec):
    """What one running sink instance has applied of the control topic, and that it is alive.

    On the compacted control topic under ``ack:<direction>:<instance>`` (:mod:`sfsync.operations.acks`), so
    ``sfsync pause`` / ``resume`` can wait until every running sink took the change. ``applied`` maps a
    control-topic partition (decimal text: Avro map keys are strings) to the next offset: every control
    record below it is in force in the instance's write loop. ``ts`` is the instance's last beat (one every
    ``beat_ms``); readers take an instance silent for a few beats for dead. Always written in single-object
    encoding, never registered with a schema registry (the control topic's subject holds ``ControlRecord`` s;
    :mod:`sfsync.operations.acks` says why).
    """

    AVRO_SCHEMA: ClassVar[str] = "sink_ack"
    AVRO_NAME: ClassVar[str] = "io.sfsync.SinkAck"

    direction: Direction
    sink: str
    instance: str
    applied: dict[str, int]
    beat_ms: int
    ts: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "direction", _enum("direction", Direction, self.direction))
        s(self, "applied", dict(self.applied))
        if not self.instance:
            raise ValueError("SinkAck: instance must be non-empty")
        if self.beat_ms <= 0:
            raise ValueError("SinkAck: beat_ms must be positive")
        s(self, "ts", _aware_utc("ts", self.ts))

    def applied_offset(self, partition: int) -> int:
        """The next control-topic offset of ``partition`` not applied yet (0: none of it)."""
        return self.applied.get(str(partition), 0)


Record: TypeAlias = ChangeEvent | ApplyCommand | RecordStatus | MetricSample | Alert | ControlRecord | Link | SinkAck
"""Any record sfsync puts on a topic."""

RECORD_TYPES: tuple[type[Record], ...] = (
    ChangeEvent,
    ApplyCommand,
    RecordStatus,
    MetricSample,
    Alert,
    ControlRecord,
    Link,
    SinkAck,
)
"""Every record class, in schema-file order."""
