"""Mapping-check rules for ``objects.<Name>.sync_state`` and ``objects.<Name>.sync_metadata`` (issues 12, 13).

Why: a sync-state column or sync-time field that is missing or of the wrong type does not fail at start but
on every record (the sink's state follower retries a statement PostgreSQL refuses; Salesforce answers
``INVALID_FIELD`` to every write carrying the field), so ``mapping check`` and the roles' start-up check
report it before a record moves.

Contract: :func:`check_sync_fields` is pure, over the same inputs as
:func:`sfsync.mappingcheck.rules.check_mapping` (``None`` for a side not checked skips its rules), and
returns :class:`~sfsync.mappingcheck.rules.Problem` errors keyed by the entry path
(``objects.Contact.sync_metadata.salesforce_field``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sfsync.config import ObjectMapping
from sfsync.mappingcheck.rules import Problem, SfObject, Table

#: the family each sync-state column must have (``rules.PG_FAMILIES``)
_COLUMN_FAMILY = {"status_column": "text", "error_column": "text", "status_at_column": "datetime",
                  "synced_at_column": "datetime"}


def check_sync_fields(
    objects: Mapping[str, ObjectMapping],
    describes: Mapping[str, SfObject | None] | None,
    tables: Mapping[str, Table | None] | None,
    schema: str = "public",
) -> list[Problem]:
    """Every problem of the objects' sync-state columns (exist, text / timestamp) and sync-time field (exists,
    a datetime, createable and updateable: the sink sets it on creates and updates)."""
    problems: list[Problem] = []
    for name, obj in objects.items():
        table = tables.get(obj.table) if tables is not None else None
        if obj.sync_state is not None and table is not None:
            for key, column in obj.sync_state.columns.items():
                path = f"objects.{name}.sync_state.{key}"
                found = table.columns.get(column)
                if found is None:
                    problems.append(Problem(path, f"table {schema}.{obj.table} has no column {column}"
                                            + table.suggest(column)))
                elif found.family not in (None, _COLUMN_FAMILY[key]):
                    want = "text" if _COLUMN_FAMILY[key] == "text" else "timestamptz"
                    problems.append(Problem(path, f"column {column} is {found.shown_type}; it needs {want}"))
        sf = describes.get(name) if describes is not None else None
        if obj.sync_metadata is not None and sf is not None:
            path = f"objects.{name}.sync_metadata.salesforce_field"
            wanted = obj.sync_metadata.salesforce_field
            where = f"{name}.{wanted}"
            sff = sf.get(wanted)
            if sff is None:
                problems.append(Problem(path, f"{name} has no field {wanted}{sf.suggest(wanted)}", where))
                continue
            if sff.type != "datetime":
                problems.append(Problem(path, f"{sff.type} field; the sync time needs a datetime field", where))
            if not (sff.createable and sff.updateable) or sff.calculated:
                problems.append(Problem(path, "not createable and updateable by this user; sfsync writes the "
                                        "sync time on every create and update", where))
    return problems
