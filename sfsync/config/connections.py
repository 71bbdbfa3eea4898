"""How to reach the three systems: Kafka (incl. schema registry), Salesforce, PostgreSQL.

Contract:
- Only connection and authentication settings live here; what is synced is
  :mod:`sfsync.config.mapping`.
- Every secret (passwords, tokens, client secrets, the PostgreSQL DSN) is a
  :class:`pydantic.SecretStr`; print a DSN only through :func:`redact_dsn`.
- Each model checks its own combinations (e.g. SASL needs a mechanism and
  credentials). Whether Salesforce credentials are needed at all depends on the
  mapping, so :meth:`SalesforceAuth.missing_for_flow` only reports and the
  root model (:class:`sfsync.config.SfsyncConfig`) decides.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from sfsync.config._base import _KeyError, _sql_identifier, _Strict

_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


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
    #: ``min.insync.replicas`` of every catalogue topic; ``None``: ``replication_factor - 1``, at least 1
    #: (read :attr:`effective_min_insync_replicas`). With ``acks=all`` this many replicas must have a record
    #: before it is acknowledged; the broker default of 1 lets the leader alone acknowledge.
    min_insync_replicas: int | None = None
    #: ``retention.ms`` of the DLQ topics: -1 keeps dead letters until an operator replays or purges them
    dlq_retention_ms: int = -1
    session_timeout_ms: int = Field(45_000, ge=1_000, le=3_600_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    #: how long a processor worker may stay without a partition assignment (from its start or a
    #: revocation) before it exits with 75 for its supervisor to restart it: a stuck group join
    #: (docs/kafka.md). Keep it well above ``session_timeout_ms``: a healthy join may wait about that long.
    join_timeout_ms: int = Field(300_000, ge=1_000)
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

    @field_validator("dlq_retention_ms")
    @classmethod
    def _dlq_retention(cls, v: int) -> int:
        if v != -1 and v < 60_000:
            raise ValueError("must be -1 (keep forever) or at least 60000")
        return v

    @field_validator("librdkafka")
    @classmethod
    def _librdkafka(cls, v: dict[str, str]) -> dict[str, str]:
        if "partitioner" in v:
            raise ValueError("'partitioner' cannot be overridden: every producer must put a key on the same "
                             "partition number (murmur2, as the processor's aiokafka producer does), or a record's "
                             "changes from the two sides would not meet in the processor")
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

    @model_validator(mode="after")
    def _insync(self) -> Self:
        v = self.min_insync_replicas
        if v is not None and not 1 <= v <= self.replication_factor:
            raise _KeyError(
                "min_insync_replicas", f"must be between 1 and replication_factor ({self.replication_factor})"
            )
        return self

    @property
    def effective_min_insync_replicas(self) -> int:
        """The ``min.insync.replicas`` topics get: the configured value, else ``replication_factor - 1`` (>= 1)."""
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return max(1, self.replication_factor - 1)


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
    api_budget_retry_s: int = Field(60, ge=1, le=3600)
    call_options_client: str = "sfsync"
    request_timeout_s: float = Field(30.0, gt=0)
    cdc_start: CdcStart = CdcStart.LATEST
    #: the CDC producer writes what it received in one Kafka transaction at most this long after the batch's
    #: first event (sooner once ``cdc_batch_events`` are pending). A transaction has a fixed cost on the broker
    #: (on the embedded one 1 to 7 ms of CPU, docs/performance.md), so a longer window costs less CPU per
    #: event under load and adds up to the window to each change's latency
    cdc_batch_ms: int = Field(100, ge=1, le=5_000)
    cdc_batch_events: int = Field(500, ge=1, le=10_000)

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
    lock_timeout_ms: int = Field(10_000, ge=0, le=3_600_000)
    statement_timeout_ms: int = Field(60_000, ge=0, le=3_600_000)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("schema_name", "outbox_table")
    @classmethod
    def _ident(cls, v: str) -> str:
        return _sql_identifier(v)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (URL and key=value forms)."""
    dsn = re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn, flags=re.IGNORECASE)
