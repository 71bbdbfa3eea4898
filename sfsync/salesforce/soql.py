"""SOQL text built from values: the one place a value becomes a SOQL literal.

Contract of :func:`soql_string`: the result is a single-quoted SOQL string
literal that means exactly ``value``: backslashes and single quotes are
escaped as SOQL requires (``\\\\`` and ``\\'``), so no value can end the
literal early and inject SOQL.
"""

from __future__ import annotations


def soql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
