"""Operational settings: retry tiers, alerting, sink batching, health probes, the processor's state store.

Contract:
- Retry tier names become part of topic names, so they are lower-case
  ``[a-z0-9_]``, unique, and their delays never decrease.
- Alert destinations that carry credentials (webhook URL, SMTP password) are
  :class:`pydantic.SecretStr`.
- The Salesforce sink batch is at most 200 records (the sObject Collections limit).
"""

from __future__ import annotations

import re
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from sfsync.config._base import _KeyError, _Strict


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
    """SMTP delivery of alerts by the ``notifier`` role (:mod:`sfsync.operations.notify`)."""

    smtp_host: str
    smtp_port: int = Field(587, ge=1, le=65535)
    sender: str
    recipients: list[str] = Field(min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    #: STARTTLS before anything else is sent (never off in production: the password and alerts travel)
    starttls: bool = True
    #: CA bundle that signs the SMTP server's certificate (default: the system's)
    ca_bundle: str | None = None
    timeout_s: float = Field(30.0, gt=0)


class AlertsConfig(_Strict):
    """Where alerts go besides ``<prefix>.alerts``; delivered by the ``notifier`` role.

    ``api_budget_warn_share``: the Salesforce sink raises one ``api_budget`` warning (cause
    ``api_budget_warn:salesforce``) when the org's daily API usage (``Sforce-Limit-Info``) reaches this share
    of the org's limit, and resolves it when usage is read below it again (a new day); ``None``: no early
    warning. Set it below ``salesforce.api_budget_share``, where the sink stops (``config check`` refuses
    a value at or above it: the warning could never come first).
    """

    webhook_url: SecretStr | None = None
    #: HMAC-SHA256 key: each webhook POST carries ``X-Sfsync-Signature: sha256=<hex of HMAC(body)>``
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = Field(10.0, gt=0)
    #: attempts per delivery (webhook POST, email) before it is given up (logged), with doubling waits
    delivery_attempts: int = Field(5, ge=1, le=50)
    email: EmailAlerts | None = None
    consecutive_failures: int = Field(10, ge=1)
    api_budget_warn_share: float | None = Field(None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _secret_needs_webhook(self) -> Self:
        if self.webhook_secret is not None and self.webhook_url is None:
            raise _KeyError("webhook_secret", "is set but alerts.webhook_url is not")
        return self


class OperationsConfig(_Strict):
    """How operators see the sync (:mod:`sfsync.operations`)."""

    #: ``sfsync status``'s daily counts reset at midnight in this IANA time zone
    time_zone: str = "UTC"
    #: rows of ``<schema>.sfsync_audit`` (losing changes, ambiguous matches) older than this many days (by the
    #: status's time) are deleted by the postgres-sink's status follower, at most hourly (docs/conflicts.md)
    audit_retention_days: int = Field(90, ge=1, le=36_500)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name such as UTC or Europe/Berlin") from None
        return v


class SinkConfig(_Strict):
    batch_size: int = Field(ge=1)
    linger_ms: int = Field(ge=0, le=60_000)
    stall_ms: int = Field(5_000, ge=0, le=600_000)


class HealthConfig(_Strict):
    """Where a role serves ``/healthz`` and ``/readyz`` (:mod:`sfsync.health`); ``port: null`` serves nothing."""

    host: str = "127.0.0.1"
    port: int | None = Field(8080, ge=0, le=65535)


class SinksConfig(_Strict):
    postgres: SinkConfig = Field(default_factory=lambda: SinkConfig(batch_size=500, linger_ms=50))
    salesforce: SinkConfig = Field(default_factory=lambda: SinkConfig(batch_size=200, linger_ms=200))

    @field_validator("salesforce")
    @classmethod
    def _sf_batch(cls, v: SinkConfig) -> SinkConfig:
        if v.batch_size > 200:
            raise ValueError("batch_size is at most 200 (the sObject Collections limit)")
        return v


class ProcessorConfig(_Strict):
    """Where the processor keeps its per-record state, the ``records`` Table (:mod:`processors.store`).

    ``store: rocksdb`` (the default): on local disk, one RocksDB database per partition under
    ``data_dir/<processor group>/``. A restarted worker finds its records there and reads only what the
    changelog holds beyond them; memory stays bounded by ``cache_mb`` plus ``write_buffer_mb`` (twice) per
    partition the worker holds, however many records there are. ``store: memory``: every record in the
    worker's memory (RSS grows with the record count) and rebuilt from the changelog topic at every start:
    for tests and short-lived experiments only.

    ``data_dir`` is a directory the worker may create and write; a relative path is taken from the worker's
    working directory. Workers on one machine may share it (each process claims its own ``worker-<n>``
    slot in it). Losing it loses nothing: the changelog topic stays the durable copy, a worker without
    files recovers from it.
    """

    store: Literal["rocksdb", "memory"] = "rocksdb"
    data_dir: str = ".sfsync/processor"
    #: RocksDB block cache of the worker's open partitions together (read cache: bounded, evicted LRU)
    cache_mb: int = Field(64, ge=8, le=65_536)
    #: RocksDB write buffer (memtable) of one partition; up to two per partition are in memory
    write_buffer_mb: int = Field(8, ge=1, le=1024)
    #: how long the changes of a record created locally wait for its state when another worker holds it (a
    #: pull and a handover over the links topic, :mod:`processors.identity`); then they are decided without it
    #: (logged, counted ``identity.timed_out``). A worker that holds both partitions moves it without waiting
    identity_wait_s: float = Field(30.0, gt=0, le=3_600)
    #: a worker holding partitions with records waiting that handles no event for this long exits with 75 to
    #: be restarted (:mod:`processors.stall`); 0: never
    stall_timeout_s: float = Field(120.0, ge=0, le=86_400)

    @field_validator("data_dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if "\0" in v or not v.strip():
            raise ValueError("must be a directory path")
        return v
