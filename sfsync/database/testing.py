"""Helpers for tests and drills against a real PostgreSQL: a private schema per test, the demo mapping.

Not used by any role. Each test gets its own schema (``postgres.schema``), so
tests share one server without seeing each other's tables, triggers or outbox.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

from sfsync.config import SfsyncConfig, build_config

#: The mapping of ``sfsync.example.yaml`` on the demo tables (Account, Contact, Case).
DEMO_OBJECTS: dict[str, Any] = {
    "Account": {
        "table": "accounts",
        "fields": [
            {"column": "name", "field": "Name"},
            {"column": "phone", "field": "Phone"},
            {"column": "website", "field": "Website"},
            {"column": "industry", "field": "Industry", "transforms": ["strip"], "type": "string"},
        ],
    },
    "Contact": {
        "table": "contacts",
        "fields": [
            {"column": "first_name", "field": "FirstName"},
            {"column": "last_name", "field": "LastName"},
            {"column": "email", "field": "Email", "transforms": ["strip", "lower"]},
            {"column": "phone", "field": "Phone"},
            {"column": "title", "field": "Title"},
            {"column": "account_id", "field": "AccountId", "reference": "Account"},
        ],
    },
    "Case": {
        "table": "cases",
        "delete_policy": "unlink",
        "fields": [
            {"column": "subject", "field": "Subject"},
            {"column": "status", "field": "Status"},
            {
                "column": "priority",
                "field": "Priority",
                "value_map": {"low": "Low", "medium": "Medium", "high": "High"},
            },
            {"column": "description", "field": "Description"},
            {"column": "contact_id", "field": "ContactId", "reference": "Contact"},
            {"column": "account_id", "field": "AccountId", "reference": "Account"},
        ],
    },
}


def new_schema_name(prefix: str = "t") -> str:
    """A fresh, valid schema name."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def make_config(
    dsn: str,
    schema: str,
    objects: dict[str, Any] | None = None,
    kafka: dict[str, Any] | None = None,
    **extra: Any,
) -> SfsyncConfig:
    """A validated config on ``dsn``/``schema`` with the demo mapping (or ``objects``) and dummy credentials."""
    data: dict[str, Any] = {
        "postgres": {"dsn": dsn, "schema": schema},
        "objects": DEMO_OBJECTS if objects is None else objects,
        "salesforce": {"auth": {"username": "test@example.com", "password": "test"}},
        **extra,
    }
    if kafka is not None:
        data["kafka"] = kafka
    return build_config(data, "test config")


def config_dict(cfg: SfsyncConfig) -> dict[str, Any]:
    """The config as plain data for a subprocess's YAML file; reveals the DSN and Salesforce password (other
    secrets stay masked)."""
    data = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["postgres"]["dsn"] = cfg.postgres.dsn.get_secret_value()
    auth = data["salesforce"]["auth"]
    if cfg.salesforce.auth.password is not None:
        auth["password"] = cfg.salesforce.auth.password.get_secret_value()
    return data


def drop_schema_cascade(dsn: str, schema: str) -> None:
    """Remove a test schema and everything in it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
