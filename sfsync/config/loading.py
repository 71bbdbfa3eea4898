"""The root model and how it is assembled: defaults < YAML file < ``SFSYNC_*`` environment.

Contract:
- :func:`load_config` reads the file named by the argument, else
  ``$SFSYNC_CONFIG``, else ``./sfsync.yaml``; a missing default file means
  defaults + env, a missing file asked for by name is an error.
- Environment variables override the file key by key: ``SFSYNC_`` + the key
  path with ``__`` between nesting levels (``SFSYNC_KAFKA__BOOTSTRAP_SERVERS``).
  This is :class:`SfsyncConfig`'s pydantic-settings configuration, kept here
  with the loader so the precedence rules live in one place.
- Every problem is raised at once as a :class:`ConfigError` whose ``problems``
  carry the dotted key path (``objects.Contact.fields[3].direction``) and a
  message that never echoes the input value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sfsync.config._base import _KeyError
from sfsync.config.connections import KafkaConfig, PostgresConfig, SalesforceConfig, redact_dsn
from sfsync.config.mapping import ObjectMapping, check_object_names, check_references
from sfsync.config.runtime import (
    AlertsConfig,
    HealthConfig,
    OperationsConfig,
    ProcessorConfig,
    RetryConfig,
    SinksConfig,
)

DEFAULT_CONFIG_PATH = Path("sfsync.yaml")
CONFIG_ENV_VAR = "SFSYNC_CONFIG"


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
    health: HealthConfig = Field(default_factory=lambda: HealthConfig())
    operations: OperationsConfig = Field(default_factory=lambda: OperationsConfig())
    processor: ProcessorConfig = Field(default_factory=lambda: ProcessorConfig())

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
        return check_object_names(v)

    @model_validator(mode="after")
    def _references(self) -> Self:
        # Credentials are only needed once there is something to sync.
        missing = self.salesforce.auth.missing_for_flow() if self.objects else []
        if missing:
            raise _KeyError(
                f"salesforce.auth.{missing[0]}", f"is required for auth flow {self.salesforce.auth.flow}"
            )
        check_references(self.objects)
        warn = self.alerts.api_budget_warn_share
        if warn is not None and warn >= self.salesforce.api_budget_share:
            raise _KeyError("alerts.api_budget_warn_share",
                            f"must be below salesforce.api_budget_share ({self.salesforce.api_budget_share}): the "
                            "Salesforce sink stops there, so the warning would never come first")
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
