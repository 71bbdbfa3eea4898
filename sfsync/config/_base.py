"""Building blocks shared by the config sections; internal to :mod:`sfsync.config`.

Contract:
- Every section model derives from :class:`_Strict`: unknown keys are errors
  and defaults are validated too.
- A validator that judges a *sub-key* of its model raises :class:`_KeyError`;
  :func:`sfsync.config.loading.problems_from_validation` appends ``key`` to the
  error's path, so the report names the exact key and never echoes its value.
- :func:`_sql_identifier` and :func:`_sf_name` are the only checks for SQL
  identifiers and Salesforce API names; what passes them may be quoted with
  ``psycopg.sql.Identifier`` or put into a Salesforce URL without further checks.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

_SQL_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SF_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class _KeyError(ValueError):
    """A validation failure that belongs to a sub-key of the model being validated."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _sql_identifier(v: str) -> str:
    if not _SQL_IDENT.match(v):
        raise ValueError("must be a plain SQL identifier (letters, digits, '_', not starting with a digit, max 63)")
    return v


def _sf_name(v: str) -> str:
    if not _SF_NAME.match(v):
        raise ValueError("must be a Salesforce API name (letters, digits, '_', starting with a letter)")
    return v


#: a plain SQL identifier (tables, columns, schemas): checked by :func:`_sql_identifier`
SqlIdentifier = Annotated[str, AfterValidator(_sql_identifier)]
#: a Salesforce API name (objects, fields): checked by :func:`_sf_name`
SfName = Annotated[str, AfterValidator(_sf_name)]
