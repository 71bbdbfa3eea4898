"""Avro serde for sfsync's records (``sfsync.records``) on fastavro.

Schemas
-------
``schemas/`` holds one ``.avsc`` per record (``change_event``, ``apply_command``,
``record_status``, ``metric_sample``, ``alert``, ``control_record``) plus
``common.avsc``: a JSON array of the named types several records share
(``io.sfsync.Source``, ``Direction``, ``FieldLogical``, ``FieldValue``). Record files
refer to shared types by full name. On load, ``common.avsc`` is read first and each
record schema is made *self-contained* by inlining every shared type at its first
use (later uses stay name references, as Avro requires). That self-contained schema
is what is fingerprinted, registered with a Schema Registry and used to write.

The folder is looked up once per process: ``$SFSYNC_SCHEMA_DIR`` if set (then it must
hold the files, no fallback), else ``<repo>/schemas`` next to this package, else
``<sys.prefix>/share/sfsync/schemas`` (where a non-editable install puts them).
``SchemaNotFoundError`` names every place tried.

Wire formats
------------
* Default: Avro *single-object encoding*: ``C3 01`` + the 8-byte little-endian
  CRC-64-AVRO (Rabin) fingerprint of the schema's Parsing Canonical Form + the Avro
  binary body. The topic name plays no part.
* With a Schema Registry URL: Confluent framing: ``00`` + 4-byte big-endian schema id +
  the body. Schemas are registered (or, with ``auto_register=False``, looked up) under
  subject ``<topic>-value`` (TopicNameStrategy) on first use per topic and record type.

Roles build their serde with :meth:`Serde.from_config` (``kafka.schema_registry``: URL,
basic auth, and every other registry setting of the model), never from the URL alone.
Registry secrets never appear in ``repr(serde)`` or in the text of the errors below.

``Serde.decode`` reads both framings whatever it writes (a registry-framed payload
needs a configured registry), so a topic can migrate from one to the other.
Registry-framed payloads written with another (compatible) version of a schema are
read with that writer schema and fitted to the current record type (missing fields take
their defaults, unknown fields are dropped, unknown enum symbols fall back to the enum's
default - see ``_conform``).

Errors
------
* ``DecodeError`` (``.reason``): the payload is unusable - empty, garbage, truncated,
  trailing bytes, wrong magic, unknown fingerprint, unknown schema id, a schema of
  another record type or lacking a required field, invalid field content. Never retry it:
  dead-letter it. No fastavro/struct/EOF/Unicode error escapes ``decode``.
* ``RegistryError``: the Schema Registry could not answer (network, auth, 5xx, a
  rejected registration). The payload may be fine: retry later, do not dead-letter.
* ``EncodeError`` (a ``ValueError``): a record that cannot be written.
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import sys
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from sfsync.records import RECORD_TYPES, AvroRecord, Record

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from pydantic import BaseModel

    from sfsync.config import KafkaConfig

__all__ = [
    "CONFLUENT_MAGIC",
    "RECORD_SCHEMAS",
    "SINGLE_OBJECT_MAGIC",
    "DecodeError",
    "EncodeError",
    "RegistryError",
    "SchemaInfo",
    "SchemaNotFoundError",
    "Serde",
    "crc64_avro",
    "load_schema",
    "registry_settings",
    "schema_dir",
    "schema_info",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
SHARED_SCHEMA = "common"
RECORD_SCHEMAS: tuple[str, ...] = tuple(cls.AVRO_SCHEMA for cls in RECORD_TYPES)
"""File stems of the record schemas, one per record class."""

_SINGLE_OBJECT_HEADER_LEN = 10
_CONFLUENT_HEADER_LEN = 5
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})

T = TypeVar("T", bound=AvroRecord)


class DecodeError(Exception):
    """A payload that cannot be decoded; ``reason`` says why (and is the message)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodeError(ValueError):
    """A record that cannot be encoded (bad content, or a schema rejected by the registry)."""


class RegistryError(Exception):
    """The Schema Registry failed to answer; transient from the caller's view - retry later."""


class SchemaNotFoundError(FileNotFoundError):
    """The ``.avsc`` files are in none of the searched folders."""


# --------------------------------------------------------------------------- fingerprint


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_EMPTY = 0xC15D213AA4D7A795
_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO (64-bit Rabin) fingerprint of ``data`` as an unsigned int.

    Avro spec, "Schema Fingerprints"; the single-object header stores it little-endian.
    """
    fp = _CRC64_EMPTY
    table = _CRC64_TABLE
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


# --------------------------------------------------------------------------- schema loading


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """One record schema, loaded and prepared.

    ``schema`` is the self-contained JSON form (docs, defaults, logical types kept);
    ``parsed`` the fastavro-parsed form; ``canonical`` the Parsing Canonical Form;
    ``fingerprint`` its CRC-64-AVRO; ``header`` the single-object header
    (``C3 01`` + fingerprint, little-endian).
    """

    name: str
    fullname: str
    schema: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: int
    header: bytes

    @property
    def schema_str(self) -> str:
        """The self-contained schema as JSON text (what is registered with a registry)."""
        return json.dumps(self.schema, separators=(",", ":"))


def _has_schemas(folder: Path) -> bool:
    return all((folder / f"{n}.avsc").is_file() for n in (SHARED_SCHEMA, *RECORD_SCHEMAS))


@cache
def schema_dir() -> Path:
    """The folder the ``.avsc`` files are read from (see module docstring for the order)."""
    env = os.environ.get("SFSYNC_SCHEMA_DIR")
    if env:
        folder = Path(env)
        if _has_schemas(folder):
            return folder
        raise SchemaNotFoundError(
            f"SFSYNC_SCHEMA_DIR={env} does not hold {SHARED_SCHEMA}.avsc and "
            + ", ".join(f"{n}.avsc" for n in RECORD_SCHEMAS)
        )
    candidates = [
        Path(__file__).resolve().parent.parent / "schemas",
        Path(sys.prefix) / "share" / "sfsync" / "schemas",
    ]
    for folder in candidates:
        if _has_schemas(folder):
            return folder
    raise SchemaNotFoundError(
        "sfsync Avro schemas not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + " (set SFSYNC_SCHEMA_DIR to the folder holding the .avsc files)"
    )


def _fullname(name: str, namespace: str) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _inline(schema: Any, shared: Mapping[str, Any], defined: set[str], namespace: str) -> Any:
    """Copy ``schema`` replacing the first reference to each shared named type by its definition."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        full = _fullname(schema, namespace)
        if full in shared and full not in defined:
            return _inline(shared[full], shared, defined, namespace)
        return full
    if isinstance(schema, list):
        return [_inline(s, shared, defined, namespace) for s in schema]
    if not isinstance(schema, dict):
        raise ValueError(f"not an Avro schema: {schema!r}")
    out = dict(schema)
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        ns = schema.get("namespace", namespace)
        full = _fullname(schema["name"], ns)
        out["name"] = full
        out.pop("namespace", None)
        defined.add(full)
        ns = full.rpartition(".")[0]
        if kind in ("record", "error"):
            out["fields"] = [{**f, "type": _inline(f["type"], shared, defined, ns)} for f in schema["fields"]]
        return out
    if kind == "array":
        out["items"] = _inline(schema["items"], shared, defined, namespace)
    elif kind == "map":
        out["values"] = _inline(schema["values"], shared, defined, namespace)
    elif isinstance(kind, list | dict) or (isinstance(kind, str) and kind not in _PRIMITIVES):
        out["type"] = _inline(kind, shared, defined, namespace)
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read Avro schema {path}: {exc}") from exc


@cache
def _catalogue() -> dict[str, SchemaInfo]:
    folder = schema_dir()
    shared_list = _read_json(folder / f"{SHARED_SCHEMA}.avsc")
    if not isinstance(shared_list, list):
        raise ValueError(f"{folder / SHARED_SCHEMA}.avsc must be a JSON array of named types")
    shared: dict[str, Any] = {}
    for item in shared_list:
        shared[_fullname(item["name"], item.get("namespace", ""))] = item
    infos: dict[str, SchemaInfo] = {}
    for name in RECORD_SCHEMAS:
        raw = _read_json(folder / f"{name}.avsc")
        schema = _inline(raw, shared, set(), raw.get("namespace", ""))
        try:
            parsed = parse_schema(schema, {})
        except Exception as exc:
            raise ValueError(f"invalid Avro schema {folder / name}.avsc: {exc}") from exc
        canonical = to_parsing_canonical_form(schema)
        fp = crc64_avro(canonical.encode("utf-8"))
        infos[name] = SchemaInfo(
            name=name,
            fullname=schema["name"],
            schema=schema,
            parsed=parsed,
            canonical=canonical,
            fingerprint=fp,
            header=SINGLE_OBJECT_MAGIC + struct.pack("<Q", fp),
        )
    return infos


def schema_info(name: str | type[AvroRecord]) -> SchemaInfo:
    """The prepared schema for a file stem (``"change_event"``), full name or record class."""
    cat = _catalogue()
    key = name.AVRO_SCHEMA if isinstance(name, type) else name
    if key in cat:
        return cat[key]
    for info in cat.values():
        if info.fullname == key:
            return info
    raise KeyError(f"unknown sfsync schema {key!r}; known: {', '.join(cat)}")


def load_schema(name: str | type[AvroRecord]) -> Any:
    """The fastavro-parsed, self-contained schema (parsed once per process)."""
    return schema_info(name).parsed


# --------------------------------------------------------------------------- registry settings

#: ``kafka.schema_registry`` field -> ``SchemaRegistryClient`` setting. Every field of the config
#: model must be listed (tests/test_serde_registry_auth.py checks it); a set field missing here is
#: an error in :func:`registry_settings`, never silently dropped. Basic auth needs no
#: ``basic.auth.credentials.source``: confluent-kafka's client takes ``basic.auth.user.info`` as
#: USER_INFO and refuses the source key as an unrecognized property.
_REGISTRY_SETTINGS: dict[str, str] = {
    "url": "url",
    "basic_auth_user_info": "basic.auth.user.info",
    "ssl_ca_location": "ssl.ca.location",
    "ssl_certificate_location": "ssl.certificate.location",
    "ssl_key_location": "ssl.key.location",
    "ssl_key_password": "ssl.key.password",
}


def registry_settings(registry_cfg: BaseModel) -> dict[str, Any]:
    """``SchemaRegistryClient`` settings from ``kafka.schema_registry``, secrets revealed.

    Hand the result straight to the client; never log it.
    """
    from pydantic import SecretStr

    out: dict[str, Any] = {}
    for name in type(registry_cfg).model_fields:
        value = getattr(registry_cfg, name)
        if value is None:
            continue
        key = _REGISTRY_SETTINGS.get(name)
        if key is None:
            raise ValueError(
                f"kafka.schema_registry.{name} is set but sfsync.serde does not pass it to the schema registry client"
            )
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = str(value)
        out[key] = value
    return out


def _secrets_of(conf: Mapping[str, Any]) -> tuple[str, ...]:
    """Every form in which a registry secret could leak into a message (longest first)."""
    found: set[str] = set()
    user_info = conf.get("basic.auth.user.info")
    for url in str(conf.get("url") or "").split(","):
        parts = urlsplit(url.strip())
        if parts.password:
            user_info = user_info or f"{unquote(parts.username or '')}:{unquote(parts.password)}"
            found.update({parts.password, unquote(parts.password)})
    if user_info:
        found.add(user_info)
        found.add(b64encode(user_info.encode()).decode())
        password = user_info.partition(":")[2]
        if password:
            found.add(password)
    if conf.get("ssl.key.password"):
        found.add(str(conf["ssl.key.password"]))
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def _redact_url(url: str) -> str:
    """``url`` without userinfo (``https://***@host`` when it had some)."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if parts.username or parts.password:
            netloc = "***@" + parts.netloc.rpartition("@")[2]
            one = urlunsplit(parts._replace(netloc=netloc))
        out.append(one.strip())
    return ",".join(out)


# --------------------------------------------------------------------------- serde


@dataclass(frozen=True, slots=True)
class _Writer:
    """A writer schema met on the wire."""

    fullname: str
    parsed: Any
    canonical: str
    label: str  # for messages: "fingerprint 0x..." / "schema id N"


class Serde:
    """Encode/decode sfsync records; one instance per process, reused for every message.

    Roles use :meth:`from_config`. ``registry_url`` (or ``registry_config["url"]``) switches
    encoding to Confluent framing; ``registry_config`` is passed to ``SchemaRegistryClient``
    (auth, TLS...).
    ``registry_client`` injects a ready client (tests share one ``mock://`` client
    between a writer and a reader this way: each ``mock://`` client has its own store).
    """

    def __init__(
        self,
        registry_url: str | None = None,
        registry_config: Mapping[str, Any] | None = None,
        *,
        registry_client: SchemaRegistryClient | None = None,
        auto_register: bool = True,
    ) -> None:
        conf = dict(registry_config or {})
        if registry_url:
            conf["url"] = registry_url
        self._secrets = _secrets_of(conf)
        self._registry_url = _redact_url(str(conf["url"])) if conf.get("url") else None
        if registry_client is None and conf.get("url"):
            from confluent_kafka.schema_registry import SchemaRegistryClient

            try:
                registry_client = SchemaRegistryClient.new_client(conf)
            except Exception as exc:  # ValueError/TypeError naming a bad setting, maybe the URL with userinfo
                raise ValueError(f"invalid schema registry settings: {self._safe(exc)}") from self._cause(exc)
        self._registry = registry_client
        self._auto_register = auto_register
        self._by_fingerprint = {info.fingerprint: info for info in _catalogue().values()}
        # one _Writer per known fingerprint, built once: decode runs per message
        self._writers_by_fp = {fp: _Writer(info.fullname, info.parsed, info.canonical, f"fingerprint 0x{fp:016x}")
                               for fp, info in self._by_fingerprint.items()}
        self._class_by_fullname: dict[str, type[Record]] = {schema_info(cls).fullname: cls for cls in RECORD_TYPES}
        self._ids: dict[tuple[str, str], int] = {}
        self._writers_by_id: dict[int, _Writer] = {}

    @classmethod
    def from_config(cls, kafka_cfg: KafkaConfig, *, auto_register: bool = True) -> Serde:
        """The serde of a role: ``kafka.schema_registry`` (URL, basic auth, TLS) or, without
        one, single-object encoding."""
        registry = kafka_cfg.schema_registry
        if registry is None:
            return cls(auto_register=auto_register)
        return cls(registry_config=registry_settings(registry), auto_register=auto_register)

    def __repr__(self) -> str:
        where = "" if self._registry_url is None else f", registry={self._registry_url!r}"
        if self._registry is not None and self._registry_url is None:
            where = ", registry=<client>"
        return f"Serde(wire_format={self.wire_format!r}{where})"

    def _safe(self, exc: BaseException) -> str:
        """``str(exc)`` with any registry secret replaced by ``***``."""
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain from, or ``None`` when its text holds a registry secret."""
        return None if any(secret in str(exc) for secret in self._secrets) else exc

    @property
    def wire_format(self) -> str:
        """``"single-object"`` or ``"confluent"``: what ``encode`` writes."""
        return "single-object" if self._registry is None else "confluent"

    @property
    def registry(self) -> SchemaRegistryClient | None:
        """The Schema Registry client, if one is configured."""
        return self._registry

    # ----------------------------------------------------------------- encode

    def encode(self, record: AvroRecord, topic: str) -> bytes:
        """Serialize ``record`` for ``topic`` in this serde's wire format.

        Raises ``EncodeError`` for unencodable content, ``RegistryError`` when the
        registry cannot register/look up the schema.
        """
        info = schema_info(type(record))
        buf = io.BytesIO()
        if self._registry is None:
            buf.write(info.header)
        else:
            buf.write(CONFLUENT_MAGIC)
            buf.write(struct.pack(">I", self._schema_id(topic, info)))
        try:
            schemaless_writer(buf, info.parsed, record.to_avro())
        except Exception as exc:
            raise EncodeError(f"cannot encode {info.fullname} for topic {topic}: {exc}") from exc
        return buf.getvalue()

    def _schema_id(self, topic: str, info: SchemaInfo) -> int:
        cache_key = (topic, info.name)
        schema_id = self._ids.get(cache_key)
        if schema_id is not None:
            return schema_id
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        assert self._registry is not None
        subject = f"{topic}-value"
        schema = Schema(info.schema_str, "AVRO")
        try:
            if self._auto_register:
                schema_id = self._registry.register_schema(subject, schema)
            else:
                schema_id = self._registry.lookup_schema(subject, schema).schema_id
        except SchemaRegistryError as exc:
            cause = self._cause(exc)
            if exc.http_status_code in (404, 409, 422):
                raise EncodeError(
                    f"schema registry refused {info.fullname} for subject {subject}: {self._safe(exc)}"
                ) from cause
            if exc.http_status_code in (401, 403):
                raise RegistryError(_auth_message(exc.http_status_code, f"registering subject {subject}")) from cause
            raise RegistryError(f"schema registry failed for subject {subject}: {self._safe(exc)}") from cause
        except Exception as exc:
            cause = self._cause(exc)
            raise RegistryError(f"schema registry unreachable for subject {subject}: {self._safe(exc)}") from cause
        if schema_id is None:
            raise RegistryError(f"schema registry returned no id for subject {subject}")
        self._ids[cache_key] = schema_id
        self._writers_by_id.setdefault(
            schema_id, _Writer(info.fullname, info.parsed, info.canonical, f"schema id {schema_id}")
        )
        return schema_id

    # ----------------------------------------------------------------- decode

    def decode(self, data: bytes, record_type: type[T], topic: str | None = None) -> T:
        """Deserialize a payload that must hold a ``record_type`` record.

        ``topic`` only enriches error messages. Raises ``DecodeError`` for any unusable
        payload (including one holding another record type), ``RegistryError`` when a
        registry lookup fails for a reason other than "unknown id".
        """
        try:
            writer, offset = self._writer(data)
            expected = schema_info(record_type)
            if writer.fullname != expected.fullname:
                raise DecodeError(
                    f"schema mismatch: payload holds {writer.fullname} ({writer.label}), expected {expected.fullname}"
                )
            return self._read(data, offset, writer, expected, record_type)
        except DecodeError as exc:
            if topic is None:
                raise
            raise DecodeError(f"{exc.reason} (topic {topic})") from exc

    def decode_any(self, data: bytes, topic: str | None = None) -> Record:
        """Deserialize a payload holding any sfsync record (type taken from its schema)."""
        try:
            writer, offset = self._writer(data)
            cls = self._class_by_fullname.get(writer.fullname)
            if cls is None:
                raise DecodeError(f"payload holds {writer.fullname} ({writer.label}), not an sfsync record")
            return self._read(data, offset, writer, schema_info(cls), cls)
        except DecodeError as exc:
            if topic is None:
                raise
            raise DecodeError(f"{exc.reason} (topic {topic})") from exc

    def _writer(self, data: bytes) -> tuple[_Writer, int]:
        """Identify the writer schema from the header; return it and the body offset."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"payload is {type(data).__name__}, not bytes")
        n = len(data)
        if n == 0:
            raise DecodeError("empty payload")
        first = data[0]
        if first == SINGLE_OBJECT_MAGIC[0]:
            if n < 2 or data[1] != SINGLE_OBJECT_MAGIC[1]:
                raise DecodeError(
                    f"wrong magic {bytes(data[:2]).hex(' ').upper()}: expected C3 01 (Avro single-object)"
                )
            if n < _SINGLE_OBJECT_HEADER_LEN:
                raise DecodeError(
                    f"truncated header: {n} bytes, single-object encoding needs {_SINGLE_OBJECT_HEADER_LEN}"
                )
            (fp,) = struct.unpack_from("<Q", data, 2)
            writer = self._writers_by_fp.get(fp)
            if writer is None:
                raise DecodeError(
                    f"unknown fingerprint 0x{fp:016x}: not one of the {len(self._by_fingerprint)} "
                    "sfsync schemas this build knows"
                )
            return writer, _SINGLE_OBJECT_HEADER_LEN
        if first == CONFLUENT_MAGIC[0]:
            if n < _CONFLUENT_HEADER_LEN:
                raise DecodeError(f"truncated header: {n} bytes, registry framing needs {_CONFLUENT_HEADER_LEN}")
            (schema_id,) = struct.unpack_from(">I", data, 1)
            return self._writer_for_id(schema_id), _CONFLUENT_HEADER_LEN
        raise DecodeError(
            f"wrong magic byte 0x{first:02X}: expected C3 01 (Avro single-object) or 00 (schema registry framing)"
        )

    def _writer_for_id(self, schema_id: int) -> _Writer:
        writer = self._writers_by_id.get(schema_id)
        if writer is not None:
            return writer
        if self._registry is None:
            raise DecodeError(
                f"registry framing (magic 00, schema id {schema_id}) but no schema registry is configured"
            )
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            cause = self._cause(exc)
            if exc.http_status_code == 404:
                raise DecodeError(f"unknown schema id {schema_id}: not in the schema registry") from None
            if exc.http_status_code in (401, 403):
                raise RegistryError(_auth_message(exc.http_status_code, f"fetching schema id {schema_id}")) from cause
            raise RegistryError(f"schema registry failed to fetch schema id {schema_id}: {self._safe(exc)}") from cause
        except Exception as exc:
            cause = self._cause(exc)
            raise RegistryError(
                f"schema registry unreachable fetching schema id {schema_id}: {self._safe(exc)}"
            ) from cause
        if schema.schema_type not in (None, "AVRO"):
            raise DecodeError(f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
        try:
            raw = json.loads(schema.schema_str or "")
            parsed = parse_schema(raw, {})
            canonical = to_parsing_canonical_form(raw)
        except Exception as exc:
            raise DecodeError(f"schema id {schema_id} is not a usable Avro schema: {exc}") from None
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise DecodeError(f"schema id {schema_id} is not an Avro record schema")
        writer = _Writer(parsed["name"], parsed, canonical, f"schema id {schema_id}")
        self._writers_by_id[schema_id] = writer
        return writer

    @staticmethod
    def _read(data: bytes, offset: int, writer: _Writer, expected: SchemaInfo, record_type: type[T]) -> T:
        # Always read with the writer schema alone, then conform the top-level fields to the
        # current schema (_conform). fastavro's own schema resolution is not used: it takes the
        # first *promotable* union branch, so a FieldValue written as bytes would be read back
        # through the reader's earlier "string" branch (and vice versa).
        fo = io.BytesIO(data)
        fo.seek(offset)
        try:
            d = schemaless_reader(fo, writer.parsed, None)
        except Exception as exc:
            if isinstance(exc, EOFError) or (isinstance(exc, IndexError) and fo.tell() >= len(data)):
                raise DecodeError(
                    f"truncated payload: {expected.fullname} body ends early ({len(data)} bytes)"
                ) from None
            raise DecodeError(
                f"corrupt {expected.fullname} body ({writer.label}): {type(exc).__name__}: {exc}"
            ) from None
        extra = len(data) - fo.tell()
        if extra:
            raise DecodeError(f"{extra} trailing bytes after the {expected.fullname} body")
        if not isinstance(d, dict):
            raise DecodeError(f"schema mismatch: {writer.label} does not describe a record")
        if writer.canonical != expected.canonical:
            d = _conform(d, writer, expected)
        try:
            return record_type.from_avro(d)
        except Exception as exc:
            raise DecodeError(f"invalid {expected.fullname} content: {type(exc).__name__}: {exc}") from None


def _auth_message(status: int, doing: str) -> str:
    what = "rejected the credentials" if status == 401 else "denied access"
    return f"schema registry {what} (HTTP {status}) {doing}: check kafka.schema_registry.basic_auth_user_info"


def _conform(d: dict[str, Any], writer: _Writer, expected: SchemaInfo) -> dict[str, Any]:
    """Fit a record read with another version of its schema to the current one.

    Top-level schema evolution, as Avro resolution defines it for the cases sfsync needs:
    fields the writer lacks take the current schema's default (none -> schema mismatch),
    fields the reader lacks are dropped, an enum symbol the current schema does not know
    becomes the enum's default when it has one. Types are taken as the writer wrote them
    (the record classes validate and coerce them).
    """
    out: dict[str, Any] = {}
    for f in expected.schema["fields"]:
        name = f["name"]
        if name in d:
            value = d[name]
            ftype = f["type"]
            if (
                isinstance(ftype, dict)
                and ftype.get("type") == "enum"
                and "default" in ftype
                and value not in ftype["symbols"]
            ):
                value = ftype["default"]
            out[name] = value
        elif "default" in f:
            out[name] = copy.deepcopy(f["default"])
        else:
            raise DecodeError(
                f"schema mismatch: {writer.label} has no field {name!r} and {expected.fullname} gives no default"
            )
    return out
