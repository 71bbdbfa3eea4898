"""schema init/drop and the capture triggers, against a real PostgreSQL (one private schema per test)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from sfsync.config import SfsyncConfig
from sfsync.database import ORIGIN_MARKER, SchemaError, drop_schema, init_schema
from sfsync.database.capture import capture_spec, function_name, render_capture_function
from sfsync.database.schema import AUDIT_TABLE, UNLINKED_TABLE, VERSIONS_TABLE, archive_table_name
from sfsync.database.testing import DEMO_OBJECTS, make_config


@pytest.fixture
def cfg(postgres_dsn: str, schema: str) -> SfsyncConfig:
    return make_config(postgres_dsn, schema)


def outbox(conn: psycopg.Connection, cfg: SfsyncConfig) -> list[dict[str, Any]]:
    t = sql.Identifier(cfg.postgres.schema_name, cfg.postgres.outbox_table)
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(t))
        return cur.fetchall()


def snapshot(conn: psycopg.Connection, schema: str) -> dict[str, Any]:
    """Everything init can change in a schema: tables/columns, indexes, triggers, functions."""
    cols = conn.execute(
        "SELECT table_name, column_name, data_type, column_default FROM information_schema.columns "
        "WHERE table_schema = %s ORDER BY 1, 2", (schema,)).fetchall()
    idx = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
                       (schema,)).fetchall()
    trg = conn.execute(
        "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal ORDER BY 1, 2",
        (schema,)).fetchall()
    fns = conn.execute(
        "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s ORDER BY 1", (schema,)).fetchall()
    return {"columns": cols, "indexes": idx, "triggers": trg, "functions": fns}


def test_init_twice_gives_the_same_state(cfg: SfsyncConfig, postgres_dsn: str, schema: str) -> None:
    first = init_schema(cfg, demo=True)
    assert f"created schema {schema}" in first
    assert any(line.startswith(f"created table {schema}.sfsync_outbox") for line in first)
    assert any(f"capture trigger on {schema}.contacts" in line for line in first)
    with psycopg.connect(postgres_dsn) as conn:
        before = snapshot(conn, schema)
    second = init_schema(cfg, demo=True)
    assert not any(line.startswith("created") for line in second)
    with psycopg.connect(postgres_dsn) as conn:
        assert snapshot(conn, schema) == before
    assert {t for t, _, _ in before["triggers"]} == {"accounts", "contacts", "cases"}
    assert {name for name, _ in before["functions"]} == {function_name(t) for t in ("accounts", "contacts", "cases")}
    tables = {t for t, *_ in before["columns"]}
    assert tables == {"accounts", "contacts", "cases", "sfsync_outbox", archive_table_name("sfsync_outbox"),
                      VERSIONS_TABLE, UNLINKED_TABLE, AUDIT_TABLE}


def test_trigger_fires_only_when_an_outbound_column_changes(postgres_dsn: str, schema: str) -> None:
    objects = {**DEMO_OBJECTS, "Account": {**DEMO_OBJECTS["Account"], "fields": [
        {"column": "name", "field": "Name"},
        {"column": "phone", "field": "Phone", "direction": "to_salesforce"},
        {"column": "website", "field": "Website", "direction": "to_local"},
    ]}}
    cfg = make_config(postgres_dsn, schema, objects)
    init_schema(cfg, demo=True)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.accounts ADD COLUMN notes text")
        (aid,) = conn.execute(
            f"INSERT INTO {schema}.accounts (name, phone, website, industry) VALUES ('Acme', '1', 'a.io', 'x') "
            "RETURNING id").fetchone() or (None,)
        rows = outbox(conn, cfg)
        assert len(rows) == 1
        ins = rows[0]
        assert ins["table_name"] == "accounts" and ins["operation"] == "insert" and ins["local_key"] == str(aid)
        assert ins["changed_columns"] == ["name", "phone"]
        assert ins["new_values"] == {"id": aid, "sfid": None, "name": "Acme", "phone": "1", "website": "a.io"}
        assert ins["txid"] > 0 and ins["committed_at"] is not None and ins["origin"] is None

        conn.execute(f"UPDATE {schema}.accounts SET notes = 'n', industry = 'y' WHERE id = %s", (aid,))  # unmapped
        conn.execute(f"UPDATE {schema}.accounts SET website = 'b.io' WHERE id = %s", (aid,))  # to_local only
        conn.execute(f"UPDATE {schema}.accounts SET name = 'Acme' WHERE id = %s", (aid,))  # same value
        assert len(outbox(conn, cfg)) == 1

        conn.execute(f"UPDATE {schema}.accounts SET phone = '2', sfid = '001A' WHERE id = %s", (aid,))
        conn.execute(f"DELETE FROM {schema}.accounts WHERE id = %s", (aid,))
        rows = outbox(conn, cfg)
        assert [r["operation"] for r in rows] == ["insert", "update", "delete"]
        upd, dele = rows[1], rows[2]
        assert upd["changed_columns"] == ["phone"]
        assert upd["new_values"] == {"id": aid, "sfid": "001A", "name": "Acme", "phone": "2", "website": "b.io"}
        assert dele["changed_columns"] == [] and dele["new_values"] == {"id": aid, "sfid": "001A"}
        assert dele["local_key"] == str(aid)
        assert rows[0]["id"] < upd["id"] < dele["id"]


def test_writes_under_the_origin_marker_are_not_captured(cfg: SfsyncConfig, postgres_dsn: str, schema: str) -> None:
    init_schema(cfg, demo=True)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.cursor() as cur:
        channel = cfg.postgres.outbox_table
        cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        with conn.transaction():
            cur.execute("SELECT set_config('sfsync.origin', %s, true)", (ORIGIN_MARKER,))
            cur.execute(f"INSERT INTO {schema}.accounts (name, sfid) VALUES ('Echo', '001E')")
            cur.execute(f"UPDATE {schema}.accounts SET name = 'Echo2'")
            cur.execute(f"DELETE FROM {schema}.accounts")
        assert outbox(conn, cfg) == []
        assert list(conn.notifies(timeout=0.2, stop_after=1)) == []
        # the marker was transaction-local: the next write of the same session is captured
        cur.execute(f"INSERT INTO {schema}.accounts (name) VALUES ('Mine')")
        # another origin value is recorded, not skipped
        with conn.transaction():
            cur.execute("SELECT set_config('sfsync.origin', 'backfill-job', true)")
            cur.execute(f"INSERT INTO {schema}.accounts (name) VALUES ('Batch')")
        rows = outbox(conn, cfg)
        assert [(r["new_values"]["name"], r["origin"]) for r in rows] == [("Mine", None), ("Batch", "backfill-job")]
        notes = list(conn.notifies(timeout=60, stop_after=1))
        assert notes and notes[0].channel == channel and notes[0].payload == "accounts"


def test_mapping_change_converges_and_drop_removes_only_sfsync_objects(
    cfg: SfsyncConfig, postgres_dsn: str, schema: str
) -> None:
    init_schema(cfg, demo=True)
    only_accounts = make_config(postgres_dsn, schema, {"Account": {
        "table": "accounts", "fields": [{"column": "industry", "field": "Industry"}]}})
    done = init_schema(only_accounts)
    assert f"removed capture trigger from {schema}.contacts (no longer mapped)" in done
    assert f"removed function {schema}.{function_name('cases')} (no longer mapped)" in done
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.contacts (last_name) VALUES ('x')")  # no longer captured
        (aid,) = conn.execute(f"INSERT INTO {schema}.accounts (name) VALUES ('A') RETURNING id").fetchone() or (0,)
        conn.execute(f"UPDATE {schema}.accounts SET name = 'B' WHERE id = %s", (aid,))  # no longer mapped
        conn.execute(f"UPDATE {schema}.accounts SET industry = 'I' WHERE id = %s", (aid,))
        rows = outbox(conn, only_accounts)
        assert [(r["table_name"], r["operation"], r["changed_columns"]) for r in rows] == [
            ("accounts", "insert", ["industry"]), ("accounts", "update", ["industry"])]
        assert rows[1]["new_values"] == {"id": aid, "sfid": None, "industry": "I"}
        before = snapshot(conn, schema)

    assert init_schema(only_accounts)
    with psycopg.connect(postgres_dsn) as conn:
        assert snapshot(conn, schema) == before

    done = drop_schema(cfg, drop_outbox=False)
    assert f"removed capture trigger from {schema}.accounts" in done
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        after = snapshot(conn, schema)
        assert after["triggers"] == [] and after["functions"] == []
        assert {t for t, *_ in after["columns"]} == {"accounts", "contacts", "cases", "sfsync_outbox",
                                                      archive_table_name("sfsync_outbox"), VERSIONS_TABLE,
                                                      UNLINKED_TABLE, AUDIT_TABLE}
        conn.execute(f"INSERT INTO {schema}.accounts (name) VALUES ('after drop')")
        assert len(outbox(conn, cfg)) == 2
    drop_schema(cfg, drop_outbox=True)
    with psycopg.connect(postgres_dsn) as conn:
        assert {t for t, *_ in snapshot(conn, schema)["columns"]} == {"accounts", "contacts", "cases"}


def test_init_lists_every_problem_and_changes_nothing(postgres_dsn: str, schema: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.people (id bigserial PRIMARY KEY, sfid text, name text)")
    cfg = make_config(postgres_dsn, schema, {
        "Contact": {"table": "people", "fields": [{"column": "name", "field": "LastName"},
                                                  {"column": "email", "field": "Email"}]},
        "Lead": {"table": "leads", "fields": [{"column": "name", "field": "LastName"}]},
    })
    with pytest.raises(SchemaError) as info:
        init_schema(cfg)
    assert info.value.problems == [
        f"{schema}.people.sfid: needs a unique constraint or index of its own (the sink upserts ON CONFLICT on it)",
        f"{schema}.people.email: column does not exist (objects.Contact.fields[1].column)",
        f"{schema}.leads: table does not exist (objects.Lead.table)",
    ]
    with psycopg.connect(postgres_dsn) as conn:
        assert snapshot(conn, schema)["triggers"] == []
        assert {t for t, *_ in snapshot(conn, schema)["columns"]} == {"people"}  # no outbox either


def test_identifiers_are_quoted_end_to_end(postgres_dsn: str, schema: str) -> None:
    """A table and columns named like SQL keywords, in mixed case, work because every identifier is quoted."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f'CREATE TABLE {schema}."Select" ("Key" bigserial PRIMARY KEY, "From" text UNIQUE, '
                     '"order" text, "Where" jsonb)')
    cfg = make_config(postgres_dsn, schema, {"Order": {
        "table": "Select", "local_key": "Key", "sfid_column": "From",
        "fields": [{"column": "order", "field": "Name"}, {"column": "Where", "field": "Data__c"}]}})
    init_schema(cfg)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'INSERT INTO {schema}."Select" ("order", "Where") VALUES (\'o\', \'{{"a": 1}}\')')
        conn.execute(f'UPDATE {schema}."Select" SET "Where" = \'{{"a": 2}}\'')
        rows = outbox(conn, cfg)
        assert [(r["operation"], r["changed_columns"]) for r in rows] == [
            ("insert", ["order", "Where"]), ("update", ["Where"])]
        assert rows[1]["new_values"] == {"Key": 1, "From": None, "order": "o", "Where": {"a": 2}}


def test_function_names_and_rendering_are_pure() -> None:
    long_table = "t" * 63
    name = function_name(long_table)
    assert len(name) <= 63 and name.startswith("sfsync_capture_") and name != function_name("t" * 62)
    cfg = make_config("postgresql://x@127.0.0.1:1/x", "s", None)
    spec = capture_spec("s", cfg.objects["Contact"])
    assert spec.outbound == ("first_name", "last_name", "email", "phone", "title", "account_id")
    text = render_capture_function(spec, "sfsync_outbox", "sfsync_outbox").as_string(None)
    assert 'CREATE OR REPLACE FUNCTION "s"."sfsync_capture_contacts"()' in text
    assert 'INSERT INTO "s"."sfsync_outbox"' in text
    assert "IF OLD.\"email\" IS DISTINCT FROM NEW.\"email\"" in text
    # more mapped columns than one jsonb_build_object call takes
    wide = make_config("postgresql://x@127.0.0.1:1/x", "s", {"Wide": {
        "table": "wide", "fields": [{"column": f"c{i}", "field": f"F{i}"} for i in range(120)]}})
    wide_text = render_capture_function(capture_spec("s", wide.objects["Wide"]), "o", "o").as_string(None)
    assert wide_text.count("jsonb_build_object(") == 1 + 3  # delete keys + 122 pairs in 3 calls


def test_the_audit_table_keeps_each_status_once(cfg: SfsyncConfig, postgres_dsn: str, schema: str) -> None:
    assert f"created table {schema}.{AUDIT_TABLE}" in init_schema(cfg, demo=True)
    insert = (f"INSERT INTO {schema}.{AUDIT_TABLE} (object, direction, record_key, state, detail, updated_ts, "
              "status_key) VALUES ('Contact', 'outbound', 'Contact:003A', 'conflict', %s, %s, "
              "'outbound:Contact:003A') ON CONFLICT (status_key, updated_ts) DO NOTHING")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for detail, at in (("first", "2026-12-03T07:00Z"), ("again", "2026-12-03T07:00Z"),
                           ("second", "2026-12-03T07:01Z")):
            conn.execute(insert, (detail, at))
        rows = conn.execute(f"SELECT detail, recorded_at IS NOT NULL FROM {schema}.{AUDIT_TABLE} ORDER BY id")
        assert rows.fetchall() == [("first", True), ("second", True)]
        indexes = {name for name, _ in snapshot(conn, schema)["indexes"]}
    assert {f"{AUDIT_TABLE}_updated_ts", f"{AUDIT_TABLE}_record"} <= indexes
    assert f"kept table {schema}.{AUDIT_TABLE}" in init_schema(cfg, demo=True)
    assert f"dropped table {schema}.{AUDIT_TABLE}" in drop_schema(cfg, drop_outbox=True)
