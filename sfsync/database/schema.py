"""sfsync's own tables, the demo tables, and installing/removing the capture triggers.

Pure rendering (``render_*``, :func:`expected_capture`) is separate from the
two thin adapters that apply it:

- :func:`install` / :func:`init_schema` — in ONE transaction (all or nothing):
  create ``postgres.schema`` if missing, the outbox table and its archive, the
  field version store, the unlinked-rows memory, the audit table (:data:`AUDIT_TABLE`),
  demo tables (``demo=True``), check every mapped table (exists, has the local
  key, the sfid column with a unique index, every mapped column), then
  ``CREATE OR REPLACE`` each mapped table's capture function and recreate its
  trigger, and remove the capture trigger/function of tables no longer mapped.
  Running it again with the same config leaves the same state; after a
  mapping change it converges to the new mapping. A problem with a mapped
  table raises :class:`SchemaError` listing every problem, and nothing changes.
- :func:`uninstall` / :func:`drop_schema` — remove every capture trigger and
  function sfsync installed in the schema (never a user table); sfsync's own
  tables (outbox, archive, versions, unlinked, audit) only with ``drop_outbox=True``.

Concurrent runs are serialised by a transaction-scoped advisory lock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from psycopg import sql

from sfsync.config import SfsyncConfig
from sfsync.database.capture import (
    FUNCTION_PREFIX,
    TEXT_COMPARED_TYPES,
    TRIGGER_NAME,
    VERSIONS_TABLE,
    CaptureSpec,
    capture_spec,
    function_name,
    render_capture_function,
    render_capture_trigger,
    render_drop_capture,
)
from sfsync.database.connect import connect

#: Tables ``schema init --demo`` creates (what ``sfsync.example.yaml`` maps), in creation order.
DEMO_TABLES = ("accounts", "contacts", "cases")
_MAX_IDENT = 63


class SchemaError(Exception):
    """The database does not fit the mapping; ``problems`` lists each one (``table.column: what``)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"the database does not fit the mapping ({len(problems)} problem(s)):\n{lines}")


# --------------------------------------------------------------------------- pure rendering


def archive_table_name(outbox_table: str) -> str:
    """``<outbox>_archive``, shortened with a hash suffix past 63 characters."""
    name = f"{outbox_table}_archive"
    if len(name) <= _MAX_IDENT:
        return name
    digest = hashlib.sha1(outbox_table.encode()).hexdigest()[:8]
    return f"{outbox_table[: _MAX_IDENT - len('_archive') - 9]}_{digest}_archive"


def notify_channel(cfg: SfsyncConfig) -> str:
    """The LISTEN/NOTIFY channel of the outbox: the outbox table's name."""
    return cfg.postgres.outbox_table


def relay_lock_name(cfg: SfsyncConfig) -> str:
    """Text whose ``hashtextextended(.., 0)`` is the relay's advisory lock key (one relay per outbox)."""
    return f"sfsync.relay:{cfg.postgres.schema_name}.{cfg.postgres.outbox_table}"


def render_outbox(schema: str, outbox_table: str) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` of the outbox."""
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {t} (
  id bigserial PRIMARY KEY,
  table_name text NOT NULL,
  local_key text,
  operation text NOT NULL CHECK (operation IN ('insert', 'update', 'delete')),
  changed_columns text[] NOT NULL DEFAULT '{{}}',
  new_values jsonb NOT NULL DEFAULT '{{}}',
  txid bigint NOT NULL DEFAULT txid_current(),
  committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  origin text,
  seen_versions jsonb
)"""
    ).format(t=sql.Identifier(schema, outbox_table))


def render_seen_versions_column(schema: str, table: str) -> sql.Composed:
    """Adds ``seen_versions`` to an outbox or archive created before it existed."""
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS seen_versions jsonb").format(
        sql.Identifier(schema, table))




def render_versions(schema: str) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` of the field version store."""
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {t} (
  direction text NOT NULL,
  object text NOT NULL,
  record text NOT NULL,
  versions jsonb NOT NULL DEFAULT '{{}}',
  PRIMARY KEY (direction, object, record)
)"""
    ).format(t=sql.Identifier(schema, VERSIONS_TABLE))


#: Rows the PostgreSQL sink unlinked (``delete_policy: unlink``, a Salesforce delete): which local row held
#: which sfid, so an undelete of that record relinks the same row instead of inserting a second one.
UNLINKED_TABLE = "sfsync_unlinked"


def render_unlinked(schema: str) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` of the unlinked-rows memory (see :data:`UNLINKED_TABLE`)."""
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {t} (
  object text NOT NULL,
  sfid text NOT NULL,
  local_key text NOT NULL,
  unlinked_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (object, sfid)
)"""
    ).format(t=sql.Identifier(schema, UNLINKED_TABLE))


#: Every losing change and ambiguous first-sync match, appended from the status topic by the PostgreSQL sink's
#: status follower (``consumers/postgres/audit.py``): the compacted status topic keeps only a record's latest
#: state, this table keeps each one (for ``operations.audit_retention_days``). Read by ``sfsync audit``.
AUDIT_TABLE = "sfsync_audit"


def render_audit(schema: str) -> list[sql.Composed]:
    """``CREATE TABLE/INDEX IF NOT EXISTS`` of the audit table (see :data:`AUDIT_TABLE`).

    ``(status_key, updated_ts)`` is unique: a status read twice (a redelivery, a follower restarted before
    its commit) is inserted once (``ON CONFLICT DO NOTHING``). ``updated_ts`` is the status's own time, the
    one retention and ``sfsync audit --since`` use; ``recorded_at`` when the follower wrote the row."""
    t = sql.Identifier(schema, AUDIT_TABLE)
    return [
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {t} (
  id bigserial PRIMARY KEY,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  object text NOT NULL,
  direction text NOT NULL,
  record_key text NOT NULL,
  sfid text,
  local_key text,
  state text NOT NULL,
  detail text,
  updated_ts timestamptz NOT NULL,
  status_key text NOT NULL,
  UNIQUE (status_key, updated_ts)
)"""
        ).format(t=t),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (updated_ts)").format(
            i=sql.Identifier(f"{AUDIT_TABLE}_updated_ts"), t=t),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (object, record_key)").format(
            i=sql.Identifier(f"{AUDIT_TABLE}_record"), t=t),
    ]


def render_archive(schema: str, outbox_table: str) -> list[sql.Composed]:
    """``CREATE TABLE/INDEX IF NOT EXISTS`` of the outbox archive (relayed rows, pruned by age)."""
    archive = archive_table_name(outbox_table)
    return [
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {t} (
  id bigint PRIMARY KEY,
  table_name text NOT NULL,
  local_key text,
  operation text NOT NULL,
  changed_columns text[] NOT NULL,
  new_values jsonb NOT NULL,
  txid bigint NOT NULL,
  committed_at timestamptz NOT NULL,
  origin text,
  relayed_at timestamptz NOT NULL DEFAULT now(),
  seen_versions jsonb
)"""
        ).format(t=sql.Identifier(schema, archive)),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (relayed_at)").format(
            i=sql.Identifier(f"{archive[:_MAX_IDENT - 11]}_relayed_at"), t=sql.Identifier(schema, archive)
        ),
    ]


def render_demo_tables(schema: str) -> list[tuple[str, sql.Composed]]:
    """``(table, CREATE TABLE IF NOT EXISTS ...)`` of the demo tables of ``sfsync.example.yaml``.

    ``contacts.account_id`` references ``accounts`` with ``ON DELETE SET NULL``,
    so deleting an account (e.g. propagated from Salesforce) never fails on its contacts.
    """

    def t(name: str) -> sql.Identifier:
        return sql.Identifier(schema, name)

    return [
        ("accounts", sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, sfid text UNIQUE, name text, "
            "phone text, website text, industry text)"
        ).format(t("accounts"))),
        ("contacts", sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, sfid text UNIQUE, first_name text, "
            "last_name text, email text, phone text, title text, "
            "account_id bigint REFERENCES {} (id) ON DELETE SET NULL)"
        ).format(t("contacts"), t("accounts"))),
        ("cases", sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, sfid text UNIQUE, subject text, "
            "status text, priority text, description text, contact_id bigint, account_id bigint)"
        ).format(t("cases"))),
    ]


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What the catalog says about one table: column -> type name, and its single-column unique indexes."""

    columns: dict[str, str]
    unique_columns: frozenset[str]


def check_mapping(cfg: SfsyncConfig, tables: dict[str, TableInfo]) -> list[str]:
    """Every way the mapped tables (as found in the catalog) do not fit the mapping; empty when they fit."""
    problems: list[str] = []
    schema = cfg.postgres.schema_name
    for name, obj in cfg.objects.items():
        info = tables.get(obj.table)
        where = f"{schema}.{obj.table}"
        if info is None:
            problems.append(f"{where}: table does not exist (objects.{name}.table)")
            continue
        if obj.local_key not in info.columns:
            problems.append(f"{where}.{obj.local_key}: local key column does not exist (objects.{name}.local_key)")
        if obj.sfid_column not in info.columns:
            problems.append(f"{where}.{obj.sfid_column}: sfid column does not exist (objects.{name}.sfid_column)")
        elif obj.sfid_column not in info.unique_columns:
            problems.append(
                f"{where}.{obj.sfid_column}: needs a unique constraint or index of its own "
                f"(the sink upserts ON CONFLICT on it)"
            )
        for i, f in enumerate(obj.fields):
            if f.column not in info.columns:
                problems.append(f"{where}.{f.column}: column does not exist (objects.{name}.fields[{i}].column)")
        if obj.sync_state is not None:
            for key, column in obj.sync_state.columns.items():
                if column not in info.columns:
                    problems.append(f"{where}.{column}: column does not exist (objects.{name}.sync_state.{key})")
                elif key.endswith("_at_column") and not info.columns[column].startswith("timestamp"):
                    problems.append(f"{where}.{column}: is {info.columns[column]}, a sync time needs timestamptz "
                                    f"or timestamp (objects.{name}.sync_state.{key})")
    return problems


def expected_capture(cfg: SfsyncConfig, tables: dict[str, TableInfo]) -> list[CaptureSpec]:
    """The capture spec of every mapped table, with columns of types lacking ``=`` compared as text."""
    specs: list[CaptureSpec] = []
    for name, obj in cfg.objects.items():
        info = tables.get(obj.table)
        types = info.columns if info else {}
        text_compare = frozenset(f.column for f in obj.fields if types.get(f.column) in TEXT_COMPARED_TYPES)
        specs.append(capture_spec(cfg.postgres.schema_name, obj, text_compare, name))
    return specs


# --------------------------------------------------------------------------- catalog reads


def read_tables(conn: psycopg.Connection, schema: str, tables: list[str]) -> dict[str, TableInfo]:
    """Catalog facts of the named tables of ``schema`` (missing tables are absent from the result)."""
    columns: dict[str, dict[str, str]] = {}
    rows = conn.execute(
        """SELECT c.relname, a.attname, t.typname
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_type t ON t.oid = a.atttypid
            WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped""",
        (schema, tables),
    ).fetchall()
    for table, column, typ in rows:
        columns.setdefault(table, {})[column] = typ
    unique: dict[str, set[str]] = {}
    rows = conn.execute(
        """SELECT c.relname, a.attname
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
            WHERE n.nspname = %s AND c.relname = ANY(%s) AND i.indisunique AND i.indnkeyatts = 1
              AND i.indpred IS NULL AND i.indexprs IS NULL""",
        (schema, tables),
    ).fetchall()
    for table, column in rows:
        unique.setdefault(table, set()).add(column)
    return {t: TableInfo(cols, frozenset(unique.get(t, set()))) for t, cols in columns.items()}


def installed_triggers(conn: psycopg.Connection, schema: str) -> list[str]:
    """Tables of ``schema`` that carry sfsync's capture trigger."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_trigger t
             JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND t.tgname = %s AND NOT t.tgisinternal
            ORDER BY 1""",
        (schema, TRIGGER_NAME),
    ).fetchall()
    return [r[0] for r in rows]


def installed_functions(conn: psycopg.Connection, schema: str) -> list[str]:
    """sfsync capture functions (by name prefix) in ``schema``."""
    rows = conn.execute(
        """SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = %s AND starts_with(p.proname, %s) ORDER BY 1""",
        (schema, FUNCTION_PREFIX),
    ).fetchall()
    return [r[0] for r in rows]


def _exists(conn: psycopg.Connection, schema: str, table: str | None = None) -> bool:
    if table is None:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    else:
        row = conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, table),
        ).fetchone()
    return row is not None


def _lock(conn: psycopg.Connection, schema: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"sfsync.schema:{schema}",))


# --------------------------------------------------------------------------- adapters


def install(conn: psycopg.Connection, cfg: SfsyncConfig, demo: bool = False) -> list[str]:
    """Apply sfsync's schema on ``conn`` in one transaction; return what was done, one line per step.

    Raises :class:`SchemaError` (and changes nothing) when a mapped table does not fit.
    """
    schema = cfg.postgres.schema_name
    outbox = cfg.postgres.outbox_table
    archive = archive_table_name(outbox)
    done: list[str] = []
    with conn.transaction():
        _lock(conn, schema)
        if not _exists(conn, schema):
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            done.append(f"created schema {schema}")
        own = ((outbox, [render_outbox(schema, outbox), render_seen_versions_column(schema, outbox)]),
               (archive, [*render_archive(schema, outbox), render_seen_versions_column(schema, archive)]),
               (VERSIONS_TABLE, [render_versions(schema)]),
               (UNLINKED_TABLE, [render_unlinked(schema)]),
               (AUDIT_TABLE, render_audit(schema)))
        for table, statements in own:
            existed = _exists(conn, schema, table)
            for stmt in statements:
                conn.execute(stmt)
            done.append(f"{'kept' if existed else 'created'} table {schema}.{table}")
        if demo:
            for table, stmt in render_demo_tables(schema):
                existed = _exists(conn, schema, table)
                conn.execute(stmt)
                done.append(f"{'kept' if existed else 'created'} demo table {schema}.{table}")
        mapped = [obj.table for obj in cfg.objects.values()]
        tables = read_tables(conn, schema, mapped)
        problems = check_mapping(cfg, tables)
        if problems:
            raise SchemaError(problems)
        channel = notify_channel(cfg)
        for spec in expected_capture(cfg, tables):
            conn.execute(render_capture_function(spec, outbox, channel))
            for stmt in render_capture_trigger(spec):
                conn.execute(stmt)
            done.append(
                f"capture trigger on {schema}.{spec.table}: {len(spec.outbound)} outbound column(s) "
                f"({', '.join(spec.outbound) or 'none'}), {len(spec.columns)} mapped"
            )
        for table in installed_triggers(conn, schema):
            if table not in mapped:
                conn.execute(render_drop_capture(schema, table)[0])
                done.append(f"removed capture trigger from {schema}.{table} (no longer mapped)")
        wanted = {function_name(t) for t in mapped}
        for fn in installed_functions(conn, schema):
            if fn not in wanted:
                conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(schema, fn)))
                done.append(f"removed function {schema}.{fn} (no longer mapped)")
    return done


def uninstall(conn: psycopg.Connection, cfg: SfsyncConfig, drop_outbox: bool = False) -> list[str]:
    """Remove sfsync's triggers and functions from the schema in one transaction; return what was done.

    User tables are never dropped; sfsync's own tables (the outbox, its archive, the field version store, the
    unlinked-rows memory, the audit table) only with ``drop_outbox``.
    """
    schema = cfg.postgres.schema_name
    done: list[str] = []
    with conn.transaction():
        _lock(conn, schema)
        if not _exists(conn, schema):
            return [f"schema {schema} does not exist: nothing to drop"]
        for table in installed_triggers(conn, schema):
            conn.execute(render_drop_capture(schema, table)[0])
            done.append(f"removed capture trigger from {schema}.{table}")
        for fn in installed_functions(conn, schema):
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(schema, fn)))
            done.append(f"removed function {schema}.{fn}")
        if drop_outbox:
            for table in (cfg.postgres.outbox_table, archive_table_name(cfg.postgres.outbox_table), VERSIONS_TABLE,
                          UNLINKED_TABLE, AUDIT_TABLE):
                if _exists(conn, schema, table):
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, table)))
                    done.append(f"dropped table {schema}.{table}")
    return done or [f"nothing of sfsync's installed in schema {schema}"]


def init_schema(cfg: SfsyncConfig, demo: bool = False) -> list[str]:
    """``sfsync schema init [--demo]``: :func:`install` on a new connection to ``postgres.dsn``."""
    with connect(cfg, "sfsync-schema") as conn:
        return install(conn, cfg, demo)


def drop_schema(cfg: SfsyncConfig, drop_outbox: bool = False) -> list[str]:
    """``sfsync schema drop [--outbox]``: :func:`uninstall` on a new connection to ``postgres.dsn``."""
    with connect(cfg, "sfsync-schema") as conn:
        return uninstall(conn, cfg, drop_outbox)
