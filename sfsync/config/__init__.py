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

Import every name from this package; the modules are its layout:

- :mod:`sfsync.config.connections`: Kafka (incl. schema registry), Salesforce
  and PostgreSQL connection and auth settings.
- :mod:`sfsync.config.mapping`: the mapping language (``objects``).
- :mod:`sfsync.config.runtime`: retry tiers, alerts, sink batching, the processor's state store.
- :mod:`sfsync.config.loading`: the root :class:`SfsyncConfig`, YAML loading,
  env overrides, and key-path error reports.
"""

from sfsync.config.connections import (
    AuthFlow,
    CdcStart,
    KafkaConfig,
    PostgresConfig,
    SalesforceAuth,
    SalesforceConfig,
    SaslMechanism,
    SchemaRegistryConfig,
    SecurityProtocol,
    redact_dsn,
)
from sfsync.config.loading import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    ConfigError,
    ConfigProblem,
    SfsyncConfig,
    build_config,
    load_config,
    problems_from_validation,
    read_yaml,
    resolve_config_path,
)
from sfsync.config.mapping import (
    ConflictPolicy,
    DeletePolicy,
    Direction,
    FieldMapping,
    FieldType,
    MatchKey,
    ObjectMapping,
    RecordFilters,
    Transform,
)
from sfsync.config.runtime import (
    AlertsConfig,
    EmailAlerts,
    HealthConfig,
    OperationsConfig,
    ProcessorConfig,
    RetryConfig,
    RetryTier,
    SinkConfig,
    SinksConfig,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "AlertsConfig",
    "AuthFlow",
    "CdcStart",
    "ConfigError",
    "ConfigProblem",
    "ConflictPolicy",
    "DeletePolicy",
    "Direction",
    "EmailAlerts",
    "FieldMapping",
    "FieldType",
    "HealthConfig",
    "KafkaConfig",
    "MatchKey",
    "ObjectMapping",
    "OperationsConfig",
    "PostgresConfig",
    "ProcessorConfig",
    "RecordFilters",
    "RetryConfig",
    "RetryTier",
    "SalesforceAuth",
    "SalesforceConfig",
    "SaslMechanism",
    "SchemaRegistryConfig",
    "SecurityProtocol",
    "SfsyncConfig",
    "SinkConfig",
    "SinksConfig",
    "Transform",
    "build_config",
    "load_config",
    "problems_from_validation",
    "read_yaml",
    "redact_dsn",
    "resolve_config_path",
]
