"""The one configuration model of sfsync, loaded once per process.

Sources, lowest to highest precedence: built-in defaults, the YAML file
(``--config``, env ``SFSYNC_CONFIG``, default ``./sfsync.yaml``), then
``SFSYNC_*`` environment variables with ``__`` between nesting levels
(``SFSYNC_KAFKA__BOOTSTRAP_SERVERS=broker:9092``).

Contract:
- Every problem is reported at once, each with the dotted key path of the bad
  key (``objects.Contact.fields[3].direction: must be one of both,
  to_salesforce, to_local``) through :class:`ConfigError`.
- Secrets are :class:`pydantic.SecretStr`: they never appear in ``repr``,
  logs, summaries or error messages (error messages never echo input values).
- SQL identifiers and Salesforce API names are validated here, so the
  adapters may quote them with ``psycopg.sql.Identifier`` without further checks.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_PATH = Path("sfsync.yaml")
CONFIG_ENV_VAR = "SFSYNC_CONFIG"

_SQL_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SF_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class Direction(StrEnum):
    """Which way a mapped field flows."""

    BOTH = "both"
    TO_SALESFORCE = "to_salesforce"
    TO_LOCAL = "to_local"


class DeletePolicy(StrEnum):
    """What a delete on one side does to the other (DESIGN.md, Identity and linking)."""

    PROPAGATE = "propagate"
    UNLINK = "unlink"
    IGNORE = "ignore"


class ConflictPolicy(StrEnum):
    """Who wins when both sides changed a bidirectional field."""

    SALESFORCE_WINS = "salesforce_wins"
    LOCAL_WINS = "local_wins"
    LAST_WRITER_WINS = "last_writer_wins"
    FILL_EMPTY = "fill_empty"


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    OAUTHBEARER = "OAUTHBEARER"


class AuthFlow(StrEnum):
    PASSWORD = "password"
    JWT_BEARER = "jwt_bearer"
    REFRESH_TOKEN = "refresh_token"
    CLIENT_CREDENTIALS = "client_credentials"


class CdcStart(StrEnum):
    """Where the CDC producer starts when no replay position is stored yet."""

    LATEST = "latest"  # replay -1: only new events
    ALL = "all"  # replay -2: every retained event (up to 72 h)


class Transform(StrEnum):
    """Value transforms a field may apply, in both directions where meaningful."""

    STRIP = "strip"
    LOWER = "lower"
    UPPER = "upper"
    EMPTY_AS_NULL = "empty_as_null"


class FieldType(StrEnum):
    """Type a mapped value is coerced to on the local side (``None``: passed through as typed by the source)."""

    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SchemaRegistryConfig(_Strict):
    url: str
    basic_auth_user_info: SecretStr | None = None


class KafkaConfig(_Strict):
    """Where the Kafka cluster is and how to reach it."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    oauthbearer_token_endpoint_url: str | None = None
    oauthbearer_client_id: str | None = None
    oauthbearer_client_secret: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    topic_prefix: str = "sfsync"
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(3, ge=1, le=100)
    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000)
    session_timeout_ms: int = Field(45_000, ge=1_000, le=3_600_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    fetch_wait_max_ms: int = Field(100, ge=0, le=10_000)
    client_id: str = "sfsync"
    schema_registry: SchemaRegistryConfig | None = None
    librdkafka: dict[str, str] = Field(default_factory=dict)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _TOPIC_PREFIX.match(v):
            raise ValueError("must be 1-100 characters of letters, digits, '.', '_' or '-'")
        return v

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        hosts = [h.strip() for h in v.split(",") if h.strip()]
        if not hosts or any(":" not in h for h in hosts):
            raise ValueError("must be a comma-separated list of host:port")
        return ",".join(hosts)

    @model_validator(mode="after")
    def _security(self) -> Self:
        sasl = self.security_protocol in (SecurityProtocol.SASL_SSL, SecurityProtocol.SASL_PLAINTEXT)
        if sasl and self.sasl_mechanism is None:
            raise _KeyError("sasl_mechanism", f"is required when security_protocol is {self.security_protocol}")
        if sasl and self.sasl_mechanism is not SaslMechanism.OAUTHBEARER:
            if not self.sasl_username:
                raise _KeyError("sasl_username", f"is required for SASL mechanism {self.sasl_mechanism}")
            if self.sasl_password is None:
                raise _KeyError("sasl_password", f"is required for SASL mechanism {self.sasl_mechanism}")
        if sasl and self.sasl_mechanism is SaslMechanism.OAUTHBEARER and not self.oauthbearer_token_endpoint_url:
            raise _KeyError("oauthbearer_token_endpoint_url", "is required for SASL mechanism OAUTHBEARER")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise _KeyError("heartbeat_interval_ms", "must be lower than session_timeout_ms")
        return self


class SalesforceAuth(_Strict):
    """OAuth 2.0 flow and credentials; only the fields of the chosen flow are required."""

    flow: AuthFlow = AuthFlow.PASSWORD
    client_id: str = "sfsync"
    client_secret: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    private_key_file: Path | None = None
    refresh_token: SecretStr | None = None

    def missing_for_flow(self) -> list[str]:
        """Names of the fields the chosen flow needs but that are not set."""
        required: dict[AuthFlow, tuple[str, ...]] = {
            AuthFlow.PASSWORD: ("username", "password"),
            AuthFlow.JWT_BEARER: ("username", "private_key_file"),
            AuthFlow.REFRESH_TOKEN: ("refresh_token",),
            AuthFlow.CLIENT_CREDENTIALS: ("client_secret",),
        }
        return [name for name in required[self.flow] if getattr(self, name) in (None, "")]


class SalesforceConfig(_Strict):
    login_url: str = "https://login.salesforce.com"
    instance_url: str | None = None
    api_version: str = "59.0"
    auth: SalesforceAuth = Field(default_factory=lambda: SalesforceAuth())
    ca_bundle: Path | None = None
    api_budget_share: float = Field(0.5, gt=0.0, le=1.0)
    call_options_client: str = "sfsync"
    request_timeout_s: float = Field(30.0, gt=0)
    cdc_start: CdcStart = CdcStart.LATEST

    @field_validator("api_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.fullmatch(r"\d{2}\.0", v) or float(v) < 42.0:
            raise ValueError("must look like 59.0 and be at least 42.0")
        return v

    @field_validator("login_url", "instance_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/") if v else v


class PostgresConfig(_Strict):
    dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    schema_name: str = Field("public", alias="schema")
    outbox_table: str = "sfsync_outbox"
    relay_batch_size: int = Field(1000, ge=1, le=100_000)
    relay_poll_interval_s: float = Field(1.0, gt=0, le=60)
    outbox_archive: bool = False
    outbox_archive_retention_s: float = Field(7 * 24 * 3600, ge=0)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("schema_name", "outbox_table")
    @classmethod
    def _ident(cls, v: str) -> str:
        return _sql_identifier(v)


class FieldMapping(_Strict):
    """One mapped field: a local column and a Salesforce field."""

    column: str
    field: str
    direction: Direction = Direction.BOTH
    value_map: dict[str, str] = Field(default_factory=dict)
    transforms: list[Transform] = Field(default_factory=list)
    reference: str | None = None
    type: FieldType | None = None

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        return _sql_identifier(v)

    @field_validator("field")
    @classmethod
    def _field(cls, v: str) -> str:
        return _sf_name(v)

    @field_validator("value_map")
    @classmethod
    def _value_map(cls, v: dict[str, str]) -> dict[str, str]:
        inverse: dict[str, str] = {}
        for local, remote in v.items():
            if remote in inverse:
                raise ValueError(f"maps two local values to the Salesforce value {remote!r}; it cannot be reversed")
            inverse[remote] = local
        return v


class MatchKey(_Strict):
    column: str
    field: str

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        return _sql_identifier(v)

    @field_validator("field")
    @classmethod
    def _field(cls, v: str) -> str:
        return _sf_name(v)


class ObjectMapping(_Strict):
    """How one Salesforce object maps onto one local table."""

    table: str
    local_key: str = "id"
    sfid_column: str = "sfid"
    external_id_field: str = "Local_Id__c"
    match_key: MatchKey | None = None
    delete_policy: DeletePolicy = DeletePolicy.PROPAGATE
    conflict_policy: ConflictPolicy = ConflictPolicy.LAST_WRITER_WINS
    fields: list[FieldMapping] = Field(min_length=1)

    @field_validator("table", "local_key", "sfid_column")
    @classmethod
    def _ident(cls, v: str) -> str:
        return _sql_identifier(v)

    @field_validator("external_id_field")
    @classmethod
    def _ext(cls, v: str) -> str:
        return _sf_name(v)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen_cols: set[str] = set()
        seen_fields: set[str] = set()
        for i, f in enumerate(self.fields):
            if f.column in (self.local_key, self.sfid_column):
                raise _KeyError(
                    f"fields[{i}].column", f"{f.column!r} is the local key or sfid column; it is synced implicitly"
                )
            if f.column in seen_cols:
                raise _KeyError(f"fields[{i}].column", f"column {f.column!r} is mapped twice")
            if f.field in seen_fields:
                raise _KeyError(f"fields[{i}].field", f"field {f.field!r} is mapped twice")
            seen_cols.add(f.column)
            seen_fields.add(f.field)
        return self


class RetryTier(_Strict):
    name: str
    delay_ms: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]+", v):
            raise ValueError("must be lower-case letters, digits or '_' (it becomes part of a topic name)")
        return v


class RetryConfig(_Strict):
    tiers: list[RetryTier] = Field(
        default_factory=lambda: [
            RetryTier(name="5s", delay_ms=5_000),
            RetryTier(name="1m", delay_ms=60_000),
            RetryTier(name="10m", delay_ms=600_000),
        ]
    )
    max_attempts: int = Field(5, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise _KeyError("tiers", "tier names must be unique")
        delays = [t.delay_ms for t in self.tiers]
        if delays != sorted(delays):
            raise _KeyError("tiers", "delays must not decrease from one tier to the next")
        return self


class EmailAlerts(_Strict):
    smtp_host: str
    smtp_port: int = Field(587, ge=1, le=65535)
    sender: str
    recipients: list[str] = Field(min_length=1)
    username: str | None = None
    password: SecretStr | None = None


class AlertsConfig(_Strict):
    webhook_url: SecretStr | None = None
    email: EmailAlerts | None = None
    consecutive_failures: int = Field(10, ge=1)
    api_budget_warn_share: float = Field(0.9, gt=0.0, le=1.0)


class SinkConfig(_Strict):
    batch_size: int = Field(ge=1)
    linger_ms: int = Field(ge=0, le=60_000)


class SinksConfig(_Strict):
    postgres: SinkConfig = Field(default_factory=lambda: SinkConfig(batch_size=500, linger_ms=50))
    salesforce: SinkConfig = Field(default_factory=lambda: SinkConfig(batch_size=200, linger_ms=200))

    @field_validator("salesforce")
    @classmethod
    def _sf_batch(cls, v: SinkConfig) -> SinkConfig:
        if v.batch_size > 200:
            raise ValueError("batch_size is at most 200 (the sObject Collections limit)")
        return v


class SfsyncConfig(BaseSettings):
    """The whole configuration. Build it with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix="SFSYNC_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    kafka: KafkaConfig = Field(default_factory=lambda: KafkaConfig())
    salesforce: SalesforceConfig = Field(default_factory=lambda: SalesforceConfig())
    postgres: PostgresConfig = Field(default_factory=lambda: PostgresConfig())
    objects: dict[str, ObjectMapping] = Field(default_factory=dict)
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig())
    alerts: AlertsConfig = Field(default_factory=lambda: AlertsConfig())
    sinks: SinksConfig = Field(default_factory=lambda: SinksConfig())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the file (which arrives as init kwargs).
        return (env_settings, init_settings)

    @field_validator("objects")
    @classmethod
    def _object_names(cls, v: dict[str, ObjectMapping]) -> dict[str, ObjectMapping]:
        tables: dict[str, str] = {}
        for name, obj in v.items():
            if not _SF_NAME.match(name):
                raise ValueError(f"{name!r} is not a Salesforce object API name")
            if obj.table in tables:
                raise ValueError(f"{name} and {tables[obj.table]} both map table {obj.table!r}")
            tables[obj.table] = name
        return v

    @model_validator(mode="after")
    def _references(self) -> Self:
        # Credentials are only needed once there is something to sync.
        missing = self.salesforce.auth.missing_for_flow() if self.objects else []
        if missing:
            raise _KeyError(
                f"salesforce.auth.{missing[0]}", f"is required for auth flow {self.salesforce.auth.flow}"
            )
        for name, obj in self.objects.items():
            for i, f in enumerate(obj.fields):
                if f.reference is not None and f.reference not in self.objects:
                    raise _KeyError(
                        f"objects.{name}.fields[{i}].reference",
                        f"names {f.reference!r}, which is not a mapped object",
                    )
        return self

    def summary(self) -> dict[str, str]:
        """A short, secret-free description for ``config check`` and start-up logs."""
        return {
            "kafka": f"{self.kafka.bootstrap_servers} ({self.kafka.security_protocol}), "
            f"prefix {self.kafka.topic_prefix!r}",
            "salesforce": f"{self.salesforce.instance_url or self.salesforce.login_url} "
            f"v{self.salesforce.api_version}, auth {self.salesforce.auth.flow}",
            "postgres": redact_dsn(self.postgres.dsn.get_secret_value()),
            "objects": ", ".join(f"{n} -> {o.table} ({len(o.fields)} fields)" for n, o in self.objects.items())
            or "(none)",
        }


class _KeyError(ValueError):
    """A validation failure that belongs to a sub-key of the model being validated."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class ConfigProblem(BaseModel):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists each bad key with its path."""

    def __init__(self, problems: list[ConfigProblem], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source} is invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}")


def _sql_identifier(v: str) -> str:
    if not _SQL_IDENT.match(v):
        raise ValueError("must be a plain SQL identifier (letters, digits, '_', not starting with a digit, max 63)")
    return v


def _sf_name(v: str) -> str:
    if not _SF_NAME.match(v):
        raise ValueError("must be a Salesforce API name (letters, digits, '_', starting with a letter)")
    return v


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (URL and key=value forms)."""
    dsn = re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn, flags=re.IGNORECASE)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "enum" or kind == "literal_error":
        expected = ctx.get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        return f"must be one of {', '.join(choices)}" if choices else f"must be one of {expected}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "value_error":
        exc = ctx.get("error")
        return str(exc) if exc is not None else str(err["msg"]).removeprefix("Value error, ")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be an integer"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind in ("string_type",):
        return "must be a string"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping"
    if kind in ("list_type",):
        return "must be a list"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "")
        return f"must be {op} {bound}"
    # Fall back to pydantic's text, which never includes the input value.
    return str(err["msg"])


def problems_from_validation(exc: ValidationError) -> list[ConfigProblem]:
    """Turn pydantic errors into path + message pairs, never echoing input values."""
    problems: list[ConfigProblem] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        exc_obj = (err.get("ctx") or {}).get("error")
        if isinstance(exc_obj, _KeyError):
            loc = (*loc, *_split_key(exc_obj.key))
            problems.append(ConfigProblem(path=_format_loc(loc), message=exc_obj.message))
            continue
        problems.append(ConfigProblem(path=_format_loc(loc), message=_message(err)))
    return problems


def _split_key(key: str) -> tuple[int | str, ...]:
    parts: list[int | str] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return tuple(parts)


def resolve_config_path(path: Path | str | None) -> Path:
    """The file to read: the argument, else ``$SFSYNC_CONFIG``, else ``./sfsync.yaml``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(CONFIG_ENV_VAR)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse the YAML file; syntax errors become a :class:`ConfigError` with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([ConfigProblem(path="", message=f"cannot read {path}: {e.strerror}")], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError([ConfigProblem(path="", message=f"YAML {problem}{where}")], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(path="", message="the top level must be a mapping")], str(path))
    return data


def build_config(data: dict[str, Any], source: str = "configuration") -> SfsyncConfig:
    """Validate a raw mapping (+ env overrides) into the model or raise :class:`ConfigError`."""
    try:
        return SfsyncConfig(**data)
    except ValidationError as e:
        raise ConfigError(problems_from_validation(e), source) from None


def load_config(path: Path | str | None = None, *, require_file: bool = False) -> SfsyncConfig:
    """Load the configuration once: YAML file (if present) + ``SFSYNC_*`` env overrides.

    A missing default file is fine (defaults + env) unless ``require_file``;
    a missing file that was asked for by name is an error.
    """
    resolved = resolve_config_path(path)
    explicit = path is not None or CONFIG_ENV_VAR in os.environ
    if resolved.exists():
        return build_config(read_yaml(resolved), str(resolved))
    if explicit or require_file:
        raise ConfigError([ConfigProblem(path="", message=f"file {resolved} does not exist")], str(resolved))
    return build_config({}, "defaults")
