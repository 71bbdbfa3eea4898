"""SQL of the PostgreSQL sink, rendered with psycopg ``sql`` objects. Pure functions, no I/O.

Every statement reads its rows from ONE jsonb parameter (a JSON array of
:func:`~consumers.postgres.plan.op_json` documents) through :func:`source`:
``jsonb_populate_record(NULL::<table>, doc->'row')`` converts each value with
the column's own input function, so one statement serves any column types,
and a whole group of records costs one round trip. ``_sfsync_n`` is the
1-based position of the document in the array (``RETURNING`` reports which
ones an UPDATE matched).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from psycopg import sql

from consumers.postgres.plan import ObjectPlan
from sfsync.database.schema import UNLINKED_TABLE

ORDINAL = "_sfsync_n"


def _t(plan: ObjectPlan) -> sql.Identifier:
    return sql.Identifier(plan.schema, plan.table)


def source(plan: ObjectPlan, columns: Sequence[str], plans: Mapping[str, ObjectPlan]) -> sql.Composed:
    """``SELECT _sfsync_n, key, sfid, <columns>`` over the jsonb parameter; reference columns resolved.

    A reference column's value is the referenced record's Salesforce id; it
    becomes that record's local key (``NULL`` when no local row has that sfid yet).
    """
    items: list[sql.Composable] = [
        sql.SQL("e.n AS {}").format(sql.Identifier(ORDINAL)),
        sql.SQL("p.{k} AS {k}").format(k=sql.Identifier(plan.local_key)),
        sql.SQL("p.{s} AS {s}").format(s=sql.Identifier(plan.sfid_column)),
    ]
    for column in columns:
        ref = plan.references.get(column)
        if ref is None:
            items.append(sql.SQL("p.{c} AS {c}").format(c=sql.Identifier(column)))
            continue
        target = plans[ref]
        items.append(
            sql.SQL("(SELECT r.{rk} FROM {rt} AS r WHERE r.{rs} = (e.j -> 'ref' ->> {lit})) AS {c}").format(
                rk=sql.Identifier(target.local_key),
                rt=_t(target),
                rs=sql.Identifier(target.sfid_column),
                lit=sql.Literal(column),
                c=sql.Identifier(column),
            )
        )
    return sql.SQL(
        "SELECT {items} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(j, n) "
        "CROSS JOIN LATERAL jsonb_populate_record(NULL::{t}, e.j -> 'row') AS p"
    ).format(items=sql.SQL(", ").join(items), t=_t(plan))


def update_by_key(plan: ObjectPlan, columns: Sequence[str], plans: Mapping[str, ObjectPlan]) -> sql.Composed:
    """Update rows found by local key (linking them to the command's sfid); ``RETURNING`` the matched ordinals.

    A row matches when the command has no sfid, or the row already has that
    sfid, or the row is unlinked and no other row holds that sfid (then the
    sfid wins: the command falls through to :func:`insert_on_sfid`).
    """
    s = sql.Identifier(plan.sfid_column)
    k = sql.Identifier(plan.local_key)
    sets: list[sql.Composable] = [sql.SQL("{s} = COALESCE(s.{s}, t.{s})").format(s=s)]
    sets += [sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in columns]
    return sql.SQL(
        "UPDATE {t} AS t SET {sets} FROM ({src}) AS s "
        "WHERE t.{k} = s.{k} AND (s.{s} IS NULL OR t.{s} = s.{s} OR (t.{s} IS NULL AND NOT EXISTS "
        "(SELECT 1 FROM {t} AS x WHERE x.{s} = s.{s}))) RETURNING s.{n}"
    ).format(
        t=_t(plan), sets=sql.SQL(", ").join(sets), src=source(plan, columns, plans), k=k, s=s,
        n=sql.Identifier(ORDINAL),
    )


def insert_on_sfid(plan: ObjectPlan, columns: Sequence[str], plans: Mapping[str, ObjectPlan]) -> sql.Composed:
    """``INSERT ... ON CONFLICT (sfid) DO UPDATE SET`` the given columns only (``DO NOTHING`` without columns)."""
    s = sql.Identifier(plan.sfid_column)
    cols = [sql.Identifier(c) for c in columns]
    action: sql.Composable
    if cols:
        action = sql.SQL("DO UPDATE SET {}").format(
            sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=c) for c in cols)
        )
    else:
        action = sql.SQL("DO NOTHING")
    return sql.SQL(
        "INSERT INTO {t} AS t ({targets}) SELECT {values} FROM ({src}) AS s ORDER BY s.{n} "
        "ON CONFLICT ({s}) {action}"
    ).format(
        t=_t(plan),
        targets=sql.SQL(", ").join([s, *cols]),
        values=sql.SQL(", ").join(sql.SQL("s.{}").format(c) for c in [s, *cols]),
        src=source(plan, columns, plans),
        n=sql.Identifier(ORDINAL),
        s=s,
        action=action,
    )


def delete_by_sfid(plan: ObjectPlan, plans: Mapping[str, ObjectPlan]) -> sql.Composed:
    """Delete the rows holding the commands' sfids."""
    return sql.SQL("DELETE FROM {t} AS t USING ({src}) AS s WHERE t.{s} = s.{s}").format(
        t=_t(plan), src=source(plan, (), plans), s=sql.Identifier(plan.sfid_column)
    )


def unlink_by_sfid(plan: ObjectPlan, plans: Mapping[str, ObjectPlan]) -> sql.Composed:
    """Clear the sfid of the rows holding the commands' sfids (the rows stay), and remember which row held
    which sfid (:data:`~sfsync.database.schema.UNLINKED_TABLE`) for :func:`relink_unlinked`."""
    return sql.SQL(
        "WITH u AS (UPDATE {t} AS t SET {s} = NULL FROM ({src}) AS s WHERE t.{s} = s.{s} "
        "RETURNING s.{s} AS sfid, t.{k}::text AS local_key) "
        "INSERT INTO {unlinked} (object, sfid, local_key) SELECT {obj}, sfid, local_key FROM u "
        "ON CONFLICT (object, sfid) DO UPDATE SET local_key = EXCLUDED.local_key, unlinked_at = now()"
    ).format(
        t=_t(plan), src=source(plan, (), plans), s=sql.Identifier(plan.sfid_column),
        k=sql.Identifier(plan.local_key), unlinked=sql.Identifier(plan.schema, UNLINKED_TABLE),
        obj=sql.Literal(plan.name),
    )


def relink_unlinked(plan: ObjectPlan, columns: Sequence[str], plans: Mapping[str, ObjectPlan]) -> sql.Composed:
    """Write the commands whose sfid a row held before it was unlinked onto that row, linking it again (an
    undelete); ``RETURNING`` the matched ordinals. The row must still exist, hold no sfid, and no other row
    may hold the sfid. Matched memories are removed."""
    s = sql.Identifier(plan.sfid_column)
    k = sql.Identifier(plan.local_key)
    unlinked = sql.Identifier(plan.schema, UNLINKED_TABLE)
    sets: list[sql.Composable] = [sql.SQL("{s} = m.{s}").format(s=s)]
    sets += [sql.SQL("{c} = m.{c}").format(c=sql.Identifier(c)) for c in columns]
    return sql.SQL(
        "WITH m AS (SELECT s.*, u.local_key AS _sfsync_key FROM ({src}) AS s "
        "JOIN {unlinked} AS u ON u.object = {obj} AND u.sfid = s.{s}), "
        "done AS (UPDATE {t} AS t SET {sets} FROM m WHERE t.{k}::text = m._sfsync_key AND t.{s} IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM {t} AS x WHERE x.{s} = m.{s}) RETURNING m.{n}, m.{s}), "
        "gone AS (DELETE FROM {unlinked} AS u USING done WHERE u.object = {obj} AND u.sfid = done.{s}) "
        "SELECT {n} FROM done"
    ).format(
        t=_t(plan), sets=sql.SQL(", ").join(sets), src=source(plan, columns, plans), k=k, s=s,
        n=sql.Identifier(ORDINAL), unlinked=unlinked, obj=sql.Literal(plan.name),
    )


def link_by_key(plan: ObjectPlan, plans: Mapping[str, ObjectPlan]) -> sql.Composed:
    """Set the sfid of the rows with the given local keys (rows already holding it are left alone)."""
    return sql.SQL(
        "UPDATE {t} AS t SET {s} = s.{s} FROM ({src}) AS s WHERE t.{k} = s.{k} AND t.{s} IS DISTINCT FROM s.{s}"
    ).format(
        t=_t(plan), src=source(plan, (), plans), s=sql.Identifier(plan.sfid_column),
        k=sql.Identifier(plan.local_key),
    )


def missing_sfids(plan: ObjectPlan) -> sql.Composed:
    """Which of the Salesforce ids in the text-array parameter no row of ``plan``'s table holds."""
    return sql.SQL("SELECT x.s FROM unnest(%s::text[]) AS x(s) WHERE NOT EXISTS "
                   "(SELECT 1 FROM {t} AS r WHERE r.{sf} = x.s)").format(
        t=_t(plan), sf=sql.Identifier(plan.sfid_column))


def probe_column(plan: ObjectPlan, column: str) -> sql.Composed:
    """Convert one column of one document: fails exactly when that column's value is bad for its type."""
    return sql.SQL("SELECT (jsonb_populate_record(NULL::{t}, %s::jsonb)).{c}").format(
        t=_t(plan), c=sql.Identifier(column)
    )


def canonical_sfids(plan: ObjectPlan) -> sql.Composed:
    """Rewrite a stored 15-character form of the 18-character ids in the text-array parameter to the
    18-character form (a user may have typed the short one), unless another row already holds the long one.
    Ids compare case-sensitively in their 15-character form, as Salesforce's do."""
    return sql.SQL(
        "UPDATE {t} AS t SET {sf} = x.s FROM (SELECT DISTINCT s FROM unnest(%s::text[]) AS u(s)) AS x "
        "WHERE length(x.s) = 18 AND t.{sf} = left(x.s, 15) "
        "AND NOT EXISTS (SELECT 1 FROM {t} AS y WHERE y.{sf} = x.s)"
    ).format(t=_t(plan), sf=sql.Identifier(plan.sfid_column))


def table_columns() -> sql.Composed:
    """The columns of the given tables as the catalog lists them now: ``(table, column)`` rows; parameters:
    the schema, a text array of table names. One query for any number of tables (schema drift: which mapped
    columns are gone, which are back). A table that does not exist has no rows (not column drift)."""
    return sql.SQL(
        "SELECT c.relname::text, a.attname::text FROM pg_catalog.pg_attribute AS a "
        "JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s::text[]) AND a.attnum > 0 AND NOT a.attisdropped"
    ).format()
