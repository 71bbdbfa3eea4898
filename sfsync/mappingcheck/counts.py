"""``sfsync mapping diff --count``: how many records a re-sync would touch, counted where they live.

Thin adapters over :meth:`~sfsync.mappingcheck.diff.MappingDiff.targets`, with the NEW config's connections:

- Salesforce: ``SELECT COUNT() FROM <Object>`` per object needing an inbound re-sync (one API call each, through
  :class:`~sfsync.salesforce.rest.SalesforceClient`, logged in as ``mapping check`` does).
- PostgreSQL: ``SELECT count(*) FROM <schema>.<table>`` per table needing an outbound re-sync (one connection).

A side that cannot be reached is not counted: each of its targets gets a :class:`Count` without ``records`` and
with the reason, and the other side is counted anyway. A target that alone fails (an object Salesforce does
not know, a table that does not exist) gets its own reason. Nothing is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql
from simple_salesforce.exceptions import SalesforceError

from sfsync.config import SfsyncConfig, redact_dsn
from sfsync.mappingcheck.diff import Count, ResyncTarget, Side
from sfsync.mappingcheck.sources import CONNECT_TIMEOUT_S


def count_targets(cfg: SfsyncConfig, targets: Iterable[ResyncTarget],
                  application_name: str = "sfsync-mapping-diff") -> list[Count]:
    """One :class:`Count` per target, in the targets' order."""
    wanted = list(targets)
    counted = {(c.object, c.side): c for c in (
        *count_salesforce(cfg, [t for t in wanted if t.side is Side.INBOUND]),
        *count_postgres(cfg, [t for t in wanted if t.side is Side.OUTBOUND], application_name))}
    return [counted[(t.object, t.side)] for t in wanted]


def count_salesforce(cfg: SfsyncConfig, targets: list[ResyncTarget]) -> list[Count]:
    """The records of each target's object; after a login or network failure the rest is not counted."""
    from sfsync.salesforce.auth import AuthenticationFailed
    from sfsync.salesforce.rest import SalesforceClient

    if not targets:
        return []
    client = SalesforceClient(cfg.salesforce.model_copy(update={
        "request_timeout_s": min(cfg.salesforce.request_timeout_s, CONNECT_TIMEOUT_S)}), pool_size=1)
    out: list[Count] = []
    down: str | None = None
    try:
        for t in targets:
            if down is not None:
                out.append(Count(t.object, t.side, None, down))
                continue
            try:
                # the object name is a checked Salesforce API name (sfsync.config), safe in the query
                answer = client.restful("query", params={"q": f"SELECT COUNT() FROM {t.object}"})
                out.append(Count(t.object, t.side, int(answer["totalSize"])))
            except AuthenticationFailed as e:
                down = f"salesforce: {e}"
                out.append(Count(t.object, t.side, None, down))
            except SalesforceError as e:  # this object only: unknown to the org, not visible to the user
                out.append(Count(t.object, t.side, None, f"salesforce: cannot count {t.object}: "
                                 f"{type(e).__name__}: {e}"))
            except OSError as e:  # requests' errors are OSErrors: the org is not answering
                down = f"salesforce: cannot count: {type(e).__name__}: {e}"
                out.append(Count(t.object, t.side, None, down))
    finally:
        client.close()
    return out


def count_postgres(cfg: SfsyncConfig, targets: list[ResyncTarget],
                   application_name: str = "sfsync-mapping-diff") -> list[Count]:
    """The rows of each target's table; when the server cannot be reached none is counted."""
    from sfsync.database.connect import connect

    if not targets:
        return []
    try:
        conn = connect(cfg, application_name, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as e:
        reason = (f"postgres: cannot connect to {redact_dsn(cfg.postgres.dsn.get_secret_value())}: "
                  f"{type(e).__name__}")
        return [Count(t.object, t.side, None, reason) for t in targets]
    out: list[Count] = []
    with conn:
        for t in targets:
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(t.schema), sql.Identifier(t.table))
            try:
                row = conn.execute(query).fetchone()
            except psycopg.errors.UndefinedTable:
                out.append(Count(t.object, t.side, None, f"postgres: table {t.schema}.{t.table} does not exist"))
                continue
            except psycopg.Error as e:  # a timeout, a lost connection, no privilege
                out.append(Count(t.object, t.side, None, f"postgres: cannot count {t.schema}.{t.table}: "
                                 f"{type(e).__name__}"))
                continue
            out.append(Count(t.object, t.side, int(row[0]) if row is not None else 0))
    return out
