"""The change-capture trigger of one mapped table, rendered as SQL. Pure functions, no I/O.

Per mapped table sfsync installs one plpgsql function (``sfsync_capture_<table>``
in ``postgres.schema``) and one ``AFTER INSERT OR UPDATE OR DELETE ... FOR EACH
ROW`` trigger named :data:`TRIGGER_NAME` on the table. The function:

- does nothing when the transaction carries the origin marker
  (``current_setting('sfsync.origin', true) = 'sfsync'``), which the PostgreSQL
  sink sets with ``set_config('sfsync.origin', 'sfsync', true)`` — sfsync's own
  writes never come back as outbound changes;
- on UPDATE fires only when a column mapped ``both``/``to_salesforce`` changed
  (``IS DISTINCT FROM``; ``changed_columns`` lists those columns);
- on INSERT lists every outbound column as changed; on DELETE lists none;
- writes one outbox row: table name, local key as text, operation
  (``insert``/``update``/``delete``), changed columns, ``new_values`` (jsonb of
  the local key, the sfid column and every mapped column of the row after the
  change; for a delete the old row's key and sfid), ``txid_current()``,
  ``clock_timestamp()``, the origin (any other non-empty ``sfsync.origin``
  value an application set, else NULL), and ``seen_versions``: the PostgreSQL
  sink's field versions of the record (its row in :data:`VERSIONS_TABLE`), i.e.
  which of sfsync's writes the row held when the user changed it — read under
  the row lock, so a write of sfsync that is not in it lands after this change
  (the processor's conflict decision, :mod:`processors.conflicts`);
- calls ``pg_notify(<outbox table name>, <table name>)`` — PostgreSQL folds
  identical notifications of one transaction into one, so a 10,000-row
  statement wakes the relay once.

Every identifier is quoted with :class:`psycopg.sql.Identifier`; names are
validated by the config model before they get here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import sql

from sfsync.config import Direction, ObjectMapping

#: sfsync's per-field version store (:mod:`consumers.versions`): which version of each field each sink last
#: wrote. The capture trigger reads the PostgreSQL sink's row of a record into the outbox row
#: (``seen_versions``): which of sfsync's writes the row held when it changed.
VERSIONS_TABLE = "sfsync_field_versions"

#: The transaction-local setting the sink sets and the trigger reads.
ORIGIN_SETTING = "sfsync.origin"
#: Its value inside an sfsync sink transaction: the trigger skips those writes.
ORIGIN_MARKER = "sfsync"
#: Name of the capture trigger on every mapped table (trigger names are per table).
TRIGGER_NAME = "sfsync_capture"
#: Prefix of the per-table capture functions in ``postgres.schema``.
FUNCTION_PREFIX = "sfsync_capture_"

_MAX_IDENT = 63
#: Types without an equality operator: compared as text in the UPDATE check.
TEXT_COMPARED_TYPES = frozenset({"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"})
_PAIRS_PER_CALL = 50  # jsonb_build_object takes at most 100 arguments


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """What the capture trigger of one table needs to know.

    ``columns``: every mapped column (carried in ``new_values``);
    ``outbound``: the columns whose change makes an UPDATE fire (``both`` / ``to_salesforce``);
    ``text_compare``: columns compared as text because their type has no ``=``.
    """

    schema: str
    table: str
    local_key: str
    sfid_column: str
    columns: tuple[str, ...]
    outbound: tuple[str, ...]
    text_compare: frozenset[str] = frozenset()
    object: str = ""


def capture_spec(schema: str, obj: ObjectMapping, text_compare: frozenset[str] = frozenset(),
                 object_name: str = "") -> CaptureSpec:
    """The :class:`CaptureSpec` of a mapped object's table (``object_name``: its Salesforce object)."""
    return CaptureSpec(
        object=object_name,
        schema=schema,
        table=obj.table,
        local_key=obj.local_key,
        sfid_column=obj.sfid_column,
        columns=tuple(f.column for f in obj.fields),
        outbound=tuple(f.column for f in obj.fields if f.direction in (Direction.BOTH, Direction.TO_SALESFORCE)),
        text_compare=text_compare,
    )


def function_name(table: str) -> str:
    """``sfsync_capture_<table>``, shortened with a hash suffix when longer than 63 characters."""
    name = FUNCTION_PREFIX + table
    if len(name) <= _MAX_IDENT:
        return name
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    return f"{FUNCTION_PREFIX}{table[: _MAX_IDENT - len(FUNCTION_PREFIX) - 9]}_{digest}"


def _jsonb_object(row: str, columns: list[str]) -> sql.Composable:
    """``jsonb_build_object('c', ROW.c, ...)``, chained with ``||`` past 50 pairs."""
    calls: list[sql.Composable] = []
    for start in range(0, len(columns), _PAIRS_PER_CALL):
        chunk = columns[start : start + _PAIRS_PER_CALL]
        args = sql.SQL(", ").join(
            sql.SQL("{}, {}.{}").format(sql.Literal(c), sql.SQL(row), sql.Identifier(c)) for c in chunk
        )
        calls.append(sql.SQL("jsonb_build_object({})").format(args))
    return sql.SQL(" || ").join(calls) if calls else sql.SQL("'{}'::jsonb")


def _text_array(items: tuple[str, ...]) -> sql.Composable:
    if not items:
        return sql.SQL("'{}'::text[]")
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.Literal(i) for i in items))


def _changed_checks(spec: CaptureSpec) -> sql.Composable:
    lines: list[sql.Composable] = []
    for c in spec.outbound:
        cast = sql.SQL("::text") if c in spec.text_compare else sql.SQL("")
        lines.append(
            sql.SQL(
                "      IF OLD.{c}{cast} IS DISTINCT FROM NEW.{c}{cast} THEN "
                "_sfsync_changed := _sfsync_changed || {lit}::text; END IF;\n"
            ).format(c=sql.Identifier(c), cast=cast, lit=sql.Literal(c))
        )
    return sql.Composed(lines)


def render_capture_function(spec: CaptureSpec, outbox_table: str, channel: str) -> sql.Composed:
    """``CREATE OR REPLACE FUNCTION`` of the table's capture function (see the module docstring).

    ``outbox_table`` lives in ``spec.schema``; ``channel`` is the NOTIFY channel.
    """
    row_columns = [spec.local_key, spec.sfid_column, *spec.columns]
    key_columns = [spec.local_key, spec.sfid_column]
    outbox = sql.Identifier(spec.schema, outbox_table)
    body = sql.SQL(
        """
DECLARE
  _sfsync_origin text := nullif(current_setting({setting}, true), '');
  _sfsync_changed text[] := '{{}}'::text[];
  _sfsync_seen jsonb;
BEGIN
  IF _sfsync_origin = {marker} THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {outbox} (table_name, local_key, operation, changed_columns, new_values, origin)
    VALUES ({table}, OLD.{key}::text, 'delete', '{{}}'::text[], {old_keys}, _sfsync_origin);
  ELSE
    IF TG_OP = 'UPDATE' THEN
{checks}      IF cardinality(_sfsync_changed) = 0 THEN
        RETURN NULL;
      END IF;
    ELSE
      _sfsync_changed := {all_outbound};
    END IF;
    IF NEW.{sfid} IS NOT NULL THEN
      SELECT v.versions INTO _sfsync_seen FROM {versions} v
       WHERE v.direction = 'inbound' AND v.object = {object} AND v.record = NEW.{sfid}::text;
    END IF;
    INSERT INTO {outbox} (table_name, local_key, operation, changed_columns, new_values, origin, seen_versions)
    VALUES ({table}, NEW.{key}::text, lower(TG_OP), _sfsync_changed, {new_row}, _sfsync_origin, _sfsync_seen);
  END IF;
  PERFORM pg_notify({channel}, {table});
  RETURN NULL;
END;
"""
    ).format(
        setting=sql.Literal(ORIGIN_SETTING),
        marker=sql.Literal(ORIGIN_MARKER),
        outbox=outbox,
        table=sql.Literal(spec.table),
        key=sql.Identifier(spec.local_key),
        sfid=sql.Identifier(spec.sfid_column),
        versions=sql.Identifier(spec.schema, VERSIONS_TABLE),
        object=sql.Literal(spec.object),
        old_keys=_jsonb_object("OLD", key_columns),
        checks=_changed_checks(spec),
        all_outbound=_text_array(spec.outbound),
        new_row=_jsonb_object("NEW", row_columns),
        channel=sql.Literal(channel),
    )
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
        "SET search_path = pg_catalog, pg_temp AS $sfsync$\n{body}$sfsync$"
    ).format(fn=sql.Identifier(spec.schema, function_name(spec.table)), body=body)


def render_capture_trigger(spec: CaptureSpec) -> list[sql.Composed]:
    """Statements that (re)create the table's capture trigger: drop if present, then create."""
    table = sql.Identifier(spec.schema, spec.table)
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_NAME), table),
        sql.SQL(
            "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(TRIGGER_NAME), table, sql.Identifier(spec.schema, function_name(spec.table))),
    ]


def render_drop_capture(schema: str, table: str) -> list[sql.Composed]:
    """Statements that remove a table's capture trigger and function (the table itself stays)."""
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_NAME), sql.Identifier(schema, table)),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(schema, function_name(table))),
    ]


def render_backfill_capture(spec: CaptureSpec, outbox_table: str, *, linked: bool) -> sql.Composed:
    """Outbox rows for existing rows of the table, shaped as the capture trigger writes them, for a first
    sync (:mod:`producers.firstsync`): rows that predate the trigger were never captured.

    Parameter ``%(keys)s``: the local keys as text. ``linked=False``: an ``insert`` row listing every
    outbound column (the relay makes it a create). ``linked=True`` (the row was just linked to an existing
    Salesforce record): an ``update`` row listing only the outbound columns that hold a value (non-NULL,
    not ``''``), so an empty local field never blanks a filled Salesforce one; a row with none is left
    out. The caller notifies the relay (:func:`render_notify`) in the same transaction.
    """
    row_columns = [spec.local_key, spec.sfid_column, *spec.columns]
    t = sql.Identifier(spec.schema, spec.table)
    if linked:
        parts = sql.SQL(", ").join(
            sql.SQL("CASE WHEN r.{c} IS NULL OR r.{c}::text = '' THEN NULL ELSE {lit} END").format(
                c=sql.Identifier(c), lit=sql.Literal(c))
            for c in spec.outbound
        ) if spec.outbound else sql.SQL("NULL")
        changed: sql.Composable = sql.SQL("array_remove(ARRAY[{}]::text[], NULL)").format(parts)
    else:
        changed = _text_array(spec.outbound)
    query = sql.SQL(
        """WITH rows AS (
  SELECT r.{key}::text AS local_key, {changed} AS changed, {new_row} AS new_values
    FROM {t} r WHERE r.{key}::text = ANY(%(keys)s::text[])
)
INSERT INTO {outbox} (table_name, local_key, operation, changed_columns, new_values)
SELECT {table}, local_key, {op}, changed, new_values FROM rows
 WHERE cardinality(changed) > 0 OR NOT {linked}
 ORDER BY local_key"""
    ).format(
        key=sql.Identifier(spec.local_key),
        changed=changed,
        new_row=_jsonb_object("r", row_columns),
        t=t,
        outbox=sql.Identifier(spec.schema, outbox_table),
        table=sql.Literal(spec.table),
        op=sql.Literal("update" if linked else "insert"),
        linked=sql.Literal(linked),
    )
    return query


def render_notify(channel: str, table: str) -> sql.Composed:
    """The relay's wake-up, as the capture trigger sends it (one per transaction is enough)."""
    return sql.SQL("SELECT pg_notify({}, {})").format(sql.Literal(channel), sql.Literal(table))
