"""Thin adapters that fetch what :func:`~sfsync.mappingcheck.rules.check_mapping` judges, and run it.

- :func:`fetch_describes`: ``sf.<Object>.describe()`` through simple-salesforce (one API call per mapped
  object, and per object a parent path such as ``Owner.Name`` points to); an object Salesforce does not know
  is ``None``.
- :func:`fetch_tables`: the mapped tables' columns from ``information_schema.columns`` (one query).
- :func:`run_check`: both, then the pure check. A side that cannot be reached is skipped and named in
  :attr:`Report.skipped` (``mapping check`` then exits 1; a role logs it and starts, since every role already
  waits out an unreachable target).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from simple_salesforce.exceptions import SalesforceError, SalesforceResourceNotFound

from sfsync.config import SfsyncConfig
from sfsync.mappingcheck.rules import Column, Report, SfObject, Table, check_mapping, parent_objects
from sfsync.mappingcheck.syncstate import check_sync_fields

#: bound on how long a role's start-up check waits for each side
CONNECT_TIMEOUT_S = 10


def fetch_describes(client: Any, names: Iterable[str]) -> dict[str, SfObject | None]:
    """Describe each object with ``client`` (a :class:`~sfsync.salesforce.rest.SalesforceClient`)."""
    out: dict[str, SfObject | None] = {}
    for name in names:
        try:
            doc = client.call(lambda sf, n=name: getattr(sf, n).describe())
        except SalesforceResourceNotFound:
            out[name] = None
            continue
        out[name] = SfObject.from_describe(doc)
    return out


def fetch_tables(conn: psycopg.Connection, schema: str, tables: Iterable[str]) -> dict[str, Table | None]:
    """The columns of each table in ``schema`` (``None`` for a table that does not exist)."""
    wanted = list(tables)
    rows = conn.execute(
        "SELECT table_name, column_name, data_type, character_maximum_length, udt_name "
        "FROM information_schema.columns WHERE table_schema = %s AND table_name = ANY(%s) "
        "ORDER BY table_name, ordinal_position",
        (schema, wanted),
    ).fetchall()
    columns: dict[str, dict[str, Column]] = {}
    for table, column, data_type, max_length, udt in rows:
        columns.setdefault(table, {})[column] = Column(column, data_type, max_length, udt or "")
    return {t: Table(t, columns[t]) if t in columns else None for t in wanted}


def run_check(cfg: SfsyncConfig, application_name: str = "sfsync-mapping-check") -> Report:
    """Fetch the describes and table definitions of ``cfg.objects`` and check them."""
    from sfsync.database.connect import connect
    from sfsync.salesforce.auth import AuthenticationFailed
    from sfsync.salesforce.rest import SalesforceClient

    skipped: list[str] = []
    describes: dict[str, SfObject | None] | None = None
    tables: dict[str, Table | None] | None = None
    if cfg.objects:
        client = SalesforceClient(cfg.salesforce.model_copy(update={
            "request_timeout_s": min(cfg.salesforce.request_timeout_s, CONNECT_TIMEOUT_S)}), pool_size=1)
        try:
            describes = fetch_describes(client, cfg.objects)
            describes.update(fetch_describes(client, sorted(parent_objects(cfg.objects, describes))))
        except AuthenticationFailed as e:
            skipped.append(f"salesforce: {e}")
        except (SalesforceError, OSError) as e:  # requests' errors are OSErrors
            skipped.append(f"salesforce: cannot describe: {type(e).__name__}: {e}")
        finally:
            client.close()
        try:
            with connect(cfg, application_name, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                tables = fetch_tables(conn, cfg.postgres.schema_name, [o.table for o in cfg.objects.values()])
        except psycopg.Error as e:
            skipped.append(f"postgres: cannot read the table definitions: {type(e).__name__}")
    report = check_mapping(cfg.objects, describes, tables, cfg.postgres.schema_name)
    report.problems.extend(check_sync_fields(cfg.objects, describes, tables, cfg.postgres.schema_name))
    report.skipped.extend(skipped)
    return report
