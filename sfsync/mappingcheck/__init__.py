"""``sfsync mapping check``: the mapping against the org's describe and the local tables, before a record moves.

- :mod:`sfsync.mappingcheck.rules`: the pure check (:func:`check_mapping`) and its data.
- :mod:`sfsync.mappingcheck.sources`: the adapters that fetch describes and columns, and :func:`run_check`.
- :mod:`sfsync.mappingcheck.report`: the report as lines and as a summary table; ``mapping check`` and every
  role's start-up print the same lines.
- :mod:`sfsync.mappingcheck.diff`: ``mapping diff``: the pure comparison of two mappings
  (:func:`diff_mappings`) and what a re-sync would touch, as lines and as JSON.
- :mod:`sfsync.mappingcheck.counts`: ``mapping diff --count``: the adapters that count those records.
"""

from sfsync.mappingcheck.diff import (
    Change,
    ChangeKind,
    Count,
    MappingDiff,
    ObjectDiff,
    ObjectStatus,
    ResyncTarget,
    Scope,
    Side,
    diff_json,
    diff_lines,
    diff_mappings,
)
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
    "Change",
    "ChangeKind",
    "Column",
    "Count",
    "MappingDiff",
    "ObjectDiff",
    "ObjectStatus",
    "ObjectSummary",
    "Problem",
    "Report",
    "ResyncTarget",
    "Scope",
    "Severity",
    "SfField",
    "SfObject",
    "Side",
    "Table",
    "check_mapping",
    "diff_json",
    "diff_lines",
    "diff_mappings",
    "problem_lines",
    "summary_table",
]
