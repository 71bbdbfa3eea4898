"""``sfsync mapping check``: the mapping against the org's describe and the local tables, before a record moves.

- :mod:`sfsync.mappingcheck.rules`: the pure check (:func:`check_mapping`) and its data.
- :mod:`sfsync.mappingcheck.sources`: the adapters that fetch describes and columns, and :func:`run_check`.
- :mod:`sfsync.mappingcheck.report`: the report as lines and as a summary table; ``mapping check`` and every
  role's start-up print the same lines.
"""

from sfsync.mappingcheck.report import problem_lines, summary_table
from sfsync.mappingcheck.rules import (
    Column,
    ObjectSummary,
    Problem,
    Report,
    Severity,
    SfField,
    SfObject,
    Table,
    check_mapping,
)

__all__ = [
    "Column",
    "ObjectSummary",
    "Problem",
    "Report",
    "Severity",
    "SfField",
    "SfObject",
    "Table",
    "check_mapping",
    "problem_lines",
    "summary_table",
]
