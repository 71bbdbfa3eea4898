"""The PostgreSQL sink against a real PostgreSQL (one private schema per test, no mocks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from consumers.base import SinkUnavailable
from consumers.postgres.plan import OpKind, object_plans, plan_batch
from consumers.postgres.sink import ErrorScope, PostgresSink, error_scope, failure_message
from sfsync.config import SfsyncConfig
from sfsync.database import init_schema
from sfsync.database.testing import DEMO_OBJECTS, make_config
from sfsync.devstack.process import free_port
from sfsync.failures import FailureKind
from sfsync.records import AlertKind, ApplyCommand, ApplyOperation, ApplyTarget, FieldPyValue, Source, new_id

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def cmd(obj: str, sfid: str | None, values: dict[str, FieldPyValue] | None = None, *,
        op: ApplyOperation = ApplyOperation.UPSERT, local_key: str | None = None) -> ApplyCommand:
    values = values or {}
    return ApplyCommand(target=ApplyTarget.LOCAL, object=obj, operation=op, source=Source.SALESFORCE,
                        source_event_id=new_id(), source_commit_ts=NOW, sfid=sfid, local_key=local_key,
                        values=values, fields=sorted(values))


def delete(obj: str, sfid: str) -> ApplyCommand:
    return cmd(obj, sfid, op=ApplyOperation.DELETE)


@pytest.fixture
def cfg(postgres_dsn: str, schema: str) -> SfsyncConfig:
    config = make_config(postgres_dsn, schema)
    init_schema(config, demo=True)
    return config


@pytest.fixture
def sink(cfg: SfsyncConfig) -> Iterator[PostgresSink]:
    s = PostgresSink(cfg)
    yield s
    s.close()


def rows(cfg: SfsyncConfig, table: str, order: str = "id") -> list[dict[str, Any]]:
    with psycopg.connect(cfg.postgres.dsn.get_secret_value()) as conn, \
            conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT * FROM {cfg.postgres.schema_name}.{table} ORDER BY {order}")
        return cur.fetchall()


def outbox_count(cfg: SfsyncConfig) -> int:
    with psycopg.connect(cfg.postgres.dsn.get_secret_value()) as conn:
        row = conn.execute(f"SELECT count(*) FROM {cfg.postgres.schema_name}.sfsync_outbox").fetchone()
        return int(row[0]) if row else -1


def execute(cfg: SfsyncConfig, statement: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(cfg.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


# --------------------------------------------------------------------------- pure parts


def test_plan_collapses_per_record_and_keeps_order() -> None:
    cfg = make_config("postgresql://x@127.0.0.1:1/x", "s")
    plans = object_plans(cfg)
    batch = [
        cmd("Account", "A", {"name": "1"}),
        cmd("Account", "B", {"name": "b"}),
        cmd("Account", "A", {"phone": "2"}),
        delete("Account", "A"),
        delete("Account", "A"),
        cmd("Account", "A", {"name": "3"}),
        delete("Case", "C"),  # unlink policy
        cmd("Nope", "X", {"a": 1}),
        cmd("Account", "D", {"not_a_column": 1}),
        cmd("Account", None, op=ApplyOperation.DELETE, local_key="9"),
    ]
    plan = plan_batch(batch, plans)
    assert sorted(plan.failures) == [7, 8, 9]
    assert {f.kind for f in plan.failures.values()} == {FailureKind.PERMANENT}
    assert [[(op.kind, op.key, op.values, op.indexes) for op in r] for r in plan.rounds] == [
        [(OpKind.UPSERT, "Account:A", {"name": "1", "phone": "2"}, [0, 2]),
         (OpKind.UPSERT, "Account:B", {"name": "b"}, [1]),
         (OpKind.UNLINK, "Case:C", {}, [6])],
        [(OpKind.DELETE, "Account:A", {}, [3, 4])],
        [(OpKind.UPSERT, "Account:A", {"name": "3"}, [5])],
    ]


def test_error_scopes_and_messages() -> None:
    assert error_scope("23502", False) is ErrorScope.RECORD
    assert error_scope("22P02", False) is ErrorScope.RECORD
    assert error_scope("42P01", False) is ErrorScope.STATEMENT
    assert error_scope("40P01", False) is ErrorScope.TRANSACTION
    assert error_scope("57P01", True) is ErrorScope.DATABASE
    assert error_scope(None, True) is ErrorScope.DATABASE
    assert failure_message("s.t", 'null value in column "x"', "x", "Failing row contains (1, null)") == \
        's.t: null value in column "x"'
    assert failure_message("s.t", "invalid input syntax for type integer", "n", None) == \
        "s.t: invalid input syntax for type integer (column n)"


# --------------------------------------------------------------------------- against PostgreSQL


def test_upsert_writes_only_present_columns_and_makes_no_echo(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    assert sink.write([cmd("Account", "001A", {"name": "Acme", "phone": "1", "industry": "Tech"})]) == [None]
    assert sink.write([cmd("Account", "001A", {"phone": "2"}),
                       cmd("Account", "001B", {"name": "Beta"})]) == [None, None]
    got = rows(cfg, "accounts")
    assert [(r["sfid"], r["name"], r["phone"], r["industry"]) for r in got] == [
        ("001A", "Acme", "2", "Tech"), ("001B", "Beta", None, None)]
    assert outbox_count(cfg) == 0  # every sink write carried the origin marker
    # undelete is an upsert; a create without values still makes the row
    assert sink.write([cmd("Account", "001C", op=ApplyOperation.UNDELETE, values={"name": "C"}),
                       cmd("Account", "001D")]) == [None, None]
    assert [r["sfid"] for r in rows(cfg, "accounts", "sfid")] == ["001A", "001B", "001C", "001D"]


def test_local_key_links_the_existing_row(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    schema = cfg.postgres.schema_name
    ((local_id,),) = execute(cfg, f"INSERT INTO {schema}.contacts (last_name) VALUES ('Local') RETURNING id")
    ((linked_id,),) = execute(cfg, f"INSERT INTO {schema}.contacts (last_name, sfid) VALUES ('L', '003X') "
                                   "RETURNING id")
    execute(cfg, f"DELETE FROM {schema}.sfsync_outbox")
    results = sink.write([
        cmd("Contact", "003N", {"last_name": "Linked", "email": "l@x.io"}, local_key=str(local_id)),
        # local key names a row linked to another record: the sfid wins, a new row is made
        cmd("Contact", "003Y", {"last_name": "Other"}, local_key=str(linked_id)),
        # no row with this key and no sfid: nothing to insert by
        cmd("Contact", None, {"last_name": "Ghost"}, local_key="999999"),
    ])
    assert results[:2] == [None, None]
    assert results[2] is not None and results[2].error_class == "NoSalesforceId"
    got = {r["id"]: (r["sfid"], r["last_name"], r["email"]) for r in rows(cfg, "contacts")}
    assert got[local_id] == ("003N", "Linked", "l@x.io")
    assert got[linked_id] == ("003X", "L", None)
    assert sorted(v for v in got.values()) == [("003N", "Linked", "l@x.io"), ("003X", "L", None),
                                               ("003Y", "Other", None)]
    assert outbox_count(cfg) == 0


def test_references_resolve_to_local_keys(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    # the contact comes first in the batch, its account later: parents are written first
    assert sink.write([
        cmd("Case", "500A", {"subject": "S", "contact_id": "003A", "account_id": "001A"}),
        cmd("Contact", "003A", {"last_name": "Ada", "account_id": "001A"}),
        cmd("Account", "001A", {"name": "Acme"}),
    ]) == [None] * 3
    (acct,) = rows(cfg, "accounts")
    contacts = {r["sfid"]: r for r in rows(cfg, "contacts")}
    assert contacts["003A"]["account_id"] == acct["id"]
    (case,) = rows(cfg, "cases")
    assert (case["contact_id"], case["account_id"]) == (contacts["003A"]["id"], acct["id"])
    # clearing a reference
    assert sink.write([cmd("Contact", "003A", {"account_id": None})]) == [None]
    assert {r["sfid"]: r["account_id"] for r in rows(cfg, "contacts")}["003A"] is None


def test_delete_policies(postgres_dsn: str, schema: str) -> None:
    cfg = make_config(postgres_dsn, schema, {**DEMO_OBJECTS, "Contact": {**DEMO_OBJECTS["Contact"],
                                                                         "delete_policy": "ignore"}})
    init_schema(cfg, demo=True)
    sink = PostgresSink(cfg)
    try:
        assert sink.write([cmd("Account", "001A", {"name": "A"}), cmd("Account", "001B", {"name": "B"}),
                           cmd("Contact", "003A", {"last_name": "C", "account_id": "001A"}),
                           cmd("Case", "500A", {"subject": "S"})]) == [None] * 4
        assert sink.write([delete("Account", "001A"), delete("Contact", "003A"), delete("Case", "500A"),
                           delete("Account", "001GONE")]) == [None] * 4
        assert [r["sfid"] for r in rows(cfg, "accounts")] == ["001B"]  # propagate: deleted
        (contact,) = rows(cfg, "contacts")  # ignore: untouched (its account link cleared by the FK)
        assert (contact["sfid"], contact["last_name"], contact["account_id"]) == ("003A", "C", None)
        (case,) = rows(cfg, "cases")  # unlink: the row stays, without its sfid
        assert (case["sfid"], case["subject"]) == (None, "S")
        # a later undelete of the unlinked case links the same row again (no second row), with its values
        assert sink.write([cmd("Case", "500A", {"subject": "S2"}, op=ApplyOperation.UNDELETE)]) == [None]
        assert [(r["id"], r["sfid"], r["subject"]) for r in rows(cfg, "cases")] == [(case["id"], "500A", "S2")]
        # the memory is used once: deleted and undeleted again, it relinks again
        assert sink.write([delete("Case", "500A")]) == [None]
        assert sink.write([cmd("Case", "500A", {"subject": "S3"})]) == [None]
        assert [(r["id"], r["sfid"], r["subject"]) for r in rows(cfg, "cases")] == [(case["id"], "500A", "S3")]
        # a row deleted locally meanwhile is not resurrected: the undelete inserts a new row
        assert sink.write([delete("Case", "500A")]) == [None]
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # (not captured: the test's own write)
            conn.execute("select set_config('sfsync.origin', 'sfsync', false)")
            conn.execute(f'delete from "{schema}".cases')
        assert sink.write([cmd("Case", "500A", {"subject": "S4"})]) == [None]
        assert [(r["sfid"], r["subject"]) for r in rows(cfg, "cases")] == [("500A", "S4")]
        assert outbox_count(cfg) == 0
    finally:
        sink.close()


def test_batch_order_is_respected_per_record(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    sink.write([cmd("Account", "001Z", {"name": "old", "phone": "old", "website": "old"})])
    results = sink.write([
        cmd("Account", "001Z", {"name": "1"}),
        cmd("Account", "001Z", {"phone": "2"}),
        delete("Account", "001Z"),
        cmd("Account", "001Z", {"name": "3"}),
    ])
    assert results == [None] * 4
    (row,) = rows(cfg, "accounts")
    assert (row["sfid"], row["name"], row["phone"], row["website"]) == ("001Z", "3", None, None)


def test_values_of_every_type_round_trip(postgres_dsn: str, schema: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.things (id bigserial PRIMARY KEY, sfid varchar(18) UNIQUE, "
                     "amount numeric(12,2), ratio double precision, due date, seen timestamptz, flag boolean, "
                     "blob bytea, n integer, label text)")
    cols = ["amount", "ratio", "due", "seen", "flag", "blob", "n", "label"]
    cfg = make_config(postgres_dsn, schema, {"Thing__c": {
        "table": "things", "fields": [{"column": c, "field": f"{c.title()}__c"} for c in cols]}})
    init_schema(cfg)
    values: dict[str, FieldPyValue] = {
        "amount": Decimal("12345.67"), "ratio": 0.125, "due": date(2024, 2, 29),
        "seen": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC), "flag": True, "blob": b"\x00\xff",
        "n": 42, "label": "x'; DROP TABLE things; --\u00e9"}
    sink = PostgresSink(cfg)
    try:
        assert sink.write([cmd("Thing__c", "a0X1", values)]) == [None]
    finally:
        sink.close()
    (row,) = rows(cfg, "things")
    assert {c: row[c] for c in cols} == values


def test_constraint_violation_is_isolated_and_the_rest_commits(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    schema = cfg.postgres.schema_name
    execute(cfg, f"ALTER TABLE {schema}.contacts ALTER COLUMN last_name SET NOT NULL")
    batch = [cmd("Contact", f"003{i:015d}", {"last_name": f"L{i}", "email": f"{i}@x.io"}) for i in range(500)]
    batch[250] = cmd("Contact", "003BAD", {"last_name": None, "email": "bad@x.io"})
    results = sink.write(batch)
    failed = {i: r for i, r in enumerate(results) if r is not None}
    assert list(failed) == [250]
    failure = failed[250]
    assert failure.kind is FailureKind.PERMANENT and failure.error_class == "SQLSTATE 23502"
    assert 'column "last_name"' in failure.message and "contacts" in failure.message
    got = rows(cfg, "contacts")
    assert len(got) == 499 and "003BAD" not in {r["sfid"] for r in got}
    assert sink.stats.statements <= 2 * 10 + 2  # one statement, then a bisection of ~log2(500) levels


def test_bad_value_names_its_column_and_later_changes_of_the_record_wait(postgres_dsn: str, schema: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.items (id bigserial PRIMARY KEY, sfid text UNIQUE, name text, "
                     "qty integer CHECK (qty >= 0))")
    cfg = make_config(postgres_dsn, schema, {"Item__c": {"table": "items", "fields": [
        {"column": "name", "field": "Name"}, {"column": "qty", "field": "Qty__c"}]}})
    init_schema(cfg)
    sink = PostgresSink(cfg)
    try:
        results = sink.write([
            cmd("Item__c", "a01", {"name": "ok", "qty": 1}),
            cmd("Item__c", "a02", {"name": "bad type", "qty": "many"}),
            cmd("Item__c", "a03", {"name": "bad check", "qty": -1}),
            delete("Item__c", "a02"),  # a later change of the failed record: not applied out of order
            cmd("Item__c", "a04", {"name": "ok too", "qty": 2}),
        ])
    finally:
        sink.close()
    assert results[0] is None and results[4] is None
    bad_type, bad_check, later = results[1], results[2], results[3]
    assert bad_type is not None and bad_type.error_class == "SQLSTATE 22P02"
    assert "(column qty)" in bad_type.message and "integer" in bad_type.message
    assert bad_check is not None and bad_check.error_class == "SQLSTATE 23514" and "qty" in bad_check.message
    assert later is not None and later.message.startswith("not applied: an earlier change")
    assert [(r["sfid"], r["qty"]) for r in rows(cfg, "items")] == [("a01", 1), ("a04", 2)]


@pytest.mark.parametrize(("change", "repair"), [
    ("DROP TABLE {s}.cases", "CREATE TABLE {s}.cases (id bigserial PRIMARY KEY, sfid text UNIQUE, subject text, "
                             "status text, priority text, description text, contact_id bigint, account_id bigint); "
                             "GRANT ALL ON {s}.cases TO {role}; "
                             "GRANT ALL ON ALL SEQUENCES IN SCHEMA {s} TO {role}"),
    # a mapped column dropped is schema drift (suspended, tests/consumers/postgres/test_drift_sink.py); the
    # sfid column is the row's identity, no column to suspend
    ("ALTER TABLE {s}.cases RENAME COLUMN sfid TO sfid_old", "ALTER TABLE {s}.cases RENAME COLUMN sfid_old TO sfid"),
    ("REVOKE INSERT, UPDATE ON {s}.cases FROM {role}", "GRANT INSERT, UPDATE ON {s}.cases TO {role}"),
], ids=["table dropped", "sfid column renamed", "permission revoked"])
def test_a_schema_or_permission_change_pauses_the_sink_instead_of_failing_records(
        cfg: SfsyncConfig, postgres_dsn: str, change: str, repair: str) -> None:
    """Failed before the fix: SQLSTATE class 42 (missing table or column, 42501 permission) failed every
    record of the group permanently, so one migration sent everything to the DLQ. Now the target is
    unavailable (the runner pauses, keeps the batch and alerts once): nothing of the batch is committed,
    and after the schema is repaired the same batch lands."""
    schema = cfg.postgres.schema_name
    role = "sfsync_limited"
    execute(cfg, f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    execute(cfg, f"GRANT ALL ON SCHEMA {schema} TO {role}")
    execute(cfg, f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}")
    execute(cfg, f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    limited = make_config(make_conninfo(postgres_dsn, user=role), schema)
    sink = PostgresSink(limited)
    batch = [cmd("Case", f"500{i}", {"subject": "s"}) for i in range(50)] + [cmd("Account", "001A", {"name": "ok"})]
    try:
        execute(cfg, change.format(s=schema, role=role))
        with pytest.raises(SinkUnavailable) as raised:
            sink.write(batch)
        assert raised.value.alert and raised.value.alert_kind is AlertKind.SCHEMA_CHANGE
        assert "SQLSTATE 42" in str(raised.value) and f"{schema}.cases" in str(raised.value)
        assert rows(cfg, "accounts") == []  # nothing of the batch committed
        execute(cfg, repair.format(s=schema, role=role))
        assert sink.write(batch) == [None] * 51  # the same batch, once the schema is repaired
        assert len(rows(cfg, "cases")) == 50 and [r["name"] for r in rows(cfg, "accounts")] == ["ok"]
    finally:
        sink.close()


def test_database_unreachable_raises_sink_unavailable(cfg: SfsyncConfig) -> None:
    dead = make_config(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", cfg.postgres.schema_name)
    sink = PostgresSink(dead, retry_after=3.0, connect_timeout=2)
    with pytest.raises(SinkUnavailable) as info:
        sink.write([cmd("Account", "001A", {"name": "A"})])
    assert info.value.retry_after == 3.0 and "unreachable" in str(info.value)
    sink.close()
    assert rows(cfg, "accounts") == []


def test_connection_lost_mid_batch_commits_nothing_then_recovers(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    schema = cfg.postgres.schema_name
    execute(cfg, f"""CREATE FUNCTION {schema}.slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.last_name = 'slow' THEN PERFORM pg_sleep(30); END IF; RETURN NEW; END $$""")
    execute(cfg, f"CREATE TRIGGER slow BEFORE INSERT ON {schema}.contacts FOR EACH ROW EXECUTE FUNCTION "
                 f"{schema}.slow()")
    # accounts are written first (contacts reference them), then the contacts group hangs and its session dies
    batch = [cmd("Contact", "003A", {"last_name": "slow"})] + [
        cmd("Account", f"001{i}", {"name": f"a{i}"}) for i in range(10)]

    def kill_when_sleeping() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = execute(cfg, "SELECT pid FROM pg_stat_activity WHERE application_name = 'sfsync-postgres-sink' "
                                "AND wait_event = 'PgSleep'")
            if pids:
                execute(cfg, "SELECT pg_terminate_backend(%s)", (pids[0][0],))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_sleeping)
    killer.start()
    with pytest.raises(SinkUnavailable):
        sink.write(batch)
    killer.join()
    assert rows(cfg, "accounts") == [] and rows(cfg, "contacts") == []  # nothing partially committed
    execute(cfg, f"DROP TRIGGER slow ON {schema}.contacts")
    assert sink.write(batch) == [None] * len(batch)  # the same batch again, on a new connection
    assert len(rows(cfg, "accounts")) == 10 and len(rows(cfg, "contacts")) == 1


def test_write_back_sfids(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    schema = cfg.postgres.schema_name
    ids = [r[0] for r in execute(cfg, f"INSERT INTO {schema}.contacts (last_name) "
                                      "SELECT 'c' || g FROM generate_series(1, 3) g RETURNING id")]
    execute(cfg, f"INSERT INTO {schema}.accounts (name, sfid) VALUES ('taken', '001TAKEN')")
    ((acct,),) = execute(cfg, f"INSERT INTO {schema}.accounts (name) VALUES ('new') RETURNING id")
    execute(cfg, f"DELETE FROM {schema}.sfsync_outbox")
    results = sink.write_back_sfids([
        ("Contact", str(ids[0]), "003A"), ("Contact", str(ids[1]), "003B"),
        ("Contact", "987654", "003GONE"),  # row deleted meanwhile: nothing to do
        ("Account", str(acct), "001TAKEN"),  # another row holds that sfid
        ("Nope", "1", "x"),
    ])
    assert results[:3] == [None, None, None]
    assert results[3] is not None and results[3].error_class == "SQLSTATE 23505"
    assert results[4] is not None and results[4].error_class == "UnknownObject"
    assert [(r["id"], r["sfid"]) for r in rows(cfg, "contacts")] == [(ids[0], "003A"), (ids[1], "003B"), (ids[2], None)]
    assert outbox_count(cfg) == 0  # the write-back is an sfsync write: no outbound echo


def test_eight_batches_of_500_insert_then_update(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    """Full batches, each in one transaction: every row lands, then every row is updated (the speed of
    this is measured in bench/inbound.py, not here)."""
    batches = [[cmd("Contact", f"003{b:03d}{i:012d}", {"first_name": "F", "last_name": f"L{i}",
                                                        "email": f"{b}.{i}@x.io", "account_id": None})
                for i in range(500)] for b in range(8)]
    for batch in batches:
        assert sink.write(batch) == [None] * 500
    for batch in batches:  # the same records again: updates
        assert sink.write([cmd(c.object, c.sfid, {"title": "T"}) for c in batch]) == [None] * 500
    landed = rows(cfg, "contacts")
    assert len(landed) == 4000 and {r["title"] for r in landed} == {"T"}
    assert {r["sfid"] for r in landed} == {c.sfid for batch in batches for c in batch}


def test_a_write_blocked_by_a_user_lock_gives_up_and_lands_later(postgres_dsn: str, schema: str) -> None:
    """Failed before the fix: sfsync's sessions had no lock_timeout, so a user's transaction holding a row
    lock kept the sink's write blocked for as long as it lasted (past max.poll.interval.ms, when the
    broker hands the partitions to another member and the stuck batch later writes over newer data).
    Now the write gives up (SQLSTATE 55P03: the target is unavailable, the runner retries the batch)."""
    cfg = make_config(postgres_dsn, schema, postgres={"dsn": postgres_dsn, "schema": schema, "lock_timeout_ms": 500})
    init_schema(cfg, demo=True)
    sink = PostgresSink(cfg)
    try:
        assert sink.write([cmd("Account", "001L", {"name": "before"})]) == [None]
        outcome: list[BaseException | list[Any]] = []
        with psycopg.connect(postgres_dsn) as user:
            user.execute(f'SELECT 1 FROM "{schema}".accounts WHERE sfid = %s FOR UPDATE', ("001L",))
            writer = threading.Thread(target=lambda: outcome.append(
                _catch(lambda: sink.write([cmd("Account", "001L", {"name": "after"})]))))
            writer.start()
            writer.join(120)  # hang guard: the write must come back while the user still holds the lock
            assert not writer.is_alive(), "the sink's write is still blocked on the user's row lock"
            assert isinstance(outcome[0], SinkUnavailable) and "55P03" in str(outcome[0])
        assert sink.write([cmd("Account", "001L", {"name": "after"})]) == [None]  # the lock is gone: it lands
        assert [r["name"] for r in rows(cfg, "accounts")] == ["after"]
    finally:
        sink.close()


def _catch(fn: Any) -> Any:
    try:
        return fn()
    except BaseException as e:
        return e


def test_a_child_before_its_parent_waits_for_the_parent(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    """Failed before the fix: a Contact whose Account had no local row yet was written with account_id
    NULL and reported a success; nothing ever filled the reference in. Now it is a transient failure
    (retried by the runner) and the rest of the batch lands."""
    results = sink.write([cmd("Contact", "003B", {"last_name": "Bob", "account_id": "001NOTYET"}),
                          cmd("Contact", "003C", {"last_name": "Cy"})])
    assert results[1] is None
    failure = results[0]
    assert failure is not None and failure.kind is FailureKind.TRANSIENT
    assert failure.error_class == "REFERENCE_NOT_SYNCED" and "001NOTYET" in failure.message
    assert "account_id" in failure.message
    assert [r["sfid"] for r in rows(cfg, "contacts")] == ["003C"]
    assert sink.write([cmd("Account", "001NOTYET", {"name": "Late"})]) == [None]  # the parent arrives
    assert sink.write([cmd("Contact", "003B", {"last_name": "Bob", "account_id": "001NOTYET"})]) == [None]
    (acct,) = rows(cfg, "accounts")
    assert {r["sfid"]: r["account_id"] for r in rows(cfg, "contacts")} == {"003B": acct["id"], "003C": None}


# --------------------------------------------------------------------------- values (issue 10, item 11)

#: Real-looking ids: 15-character case-sensitive form and the 18-character form with its checksum.
ACCOUNT_15, ACCOUNT_18 = "0018d00000003D7", "0018d00000003D7AAI"
CONTACT_18 = "0038d00000004XyAAI"


def test_a_nul_character_is_removed_and_the_record_lands(cfg: SfsyncConfig, sink: PostgresSink,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Failed before the fix: PostgreSQL text cannot hold U+0000, the jsonb parameter was refused
    (SQLSTATE 22P05, "unsupported Unicode escape sequence") and the record failed permanently, to the DLQ."""
    with caplog.at_level("WARNING", logger="sfsync.sink.postgres"):
        results = sink.write([cmd("Account", ACCOUNT_18, {"name": "Ada\x00Lovelace", "phone": "\x00"}),
                              cmd("Account", "001B", {"name": "Plain"})])
    assert results == [None, None]
    assert {r["sfid"]: (r["name"], r["phone"]) for r in rows(cfg, "accounts")} == {
        ACCOUNT_18: ("AdaLovelace", ""), "001B": ("Plain", None)}
    assert any("NUL" in r.getMessage() and ACCOUNT_18 in r.getMessage() and "name" in r.getMessage()
               for r in caplog.records)


def test_a_stored_15_character_sfid_is_the_same_record(cfg: SfsyncConfig, sink: PostgresSink) -> None:
    """Failed before the fix: a row holding the 15-character form of an id (typed in by a user) did not
    match the 18-character id Salesforce sends: a child referencing it waited forever
    (REFERENCE_NOT_SYNCED), the record's next change inserted a duplicate row, and its delete deleted
    nothing."""
    schema = cfg.postgres.schema_name
    ((local_id,),) = execute(cfg, f"INSERT INTO {schema}.accounts (name, sfid) VALUES ('Local', %s) RETURNING id",
                             (ACCOUNT_15,))
    execute(cfg, f"DELETE FROM {schema}.sfsync_outbox")
    # a reference to it, in the 18-character form (and once in the 15-character form)
    assert sink.write([cmd("Contact", CONTACT_18, {"last_name": "Kid", "account_id": ACCOUNT_18}),
                       cmd("Contact", CONTACT_18[:15], {"first_name": "K"})]) == [None, None]
    (contact,) = rows(cfg, "contacts")
    assert (contact["sfid"], contact["first_name"], contact["account_id"]) == (CONTACT_18, "K", local_id)
    # the record itself, by sfid alone and by local key
    assert sink.write([cmd("Account", ACCOUNT_18, {"phone": "1"})]) == [None]
    assert sink.write([cmd("Account", ACCOUNT_18, {"website": "w"}, local_key=str(local_id))]) == [None]
    (account,) = rows(cfg, "accounts")
    assert (account["id"], account["sfid"], account["name"], account["phone"], account["website"]) == (
        local_id, ACCOUNT_18, "Local", "1", "w")
    assert sink.write([delete("Account", ACCOUNT_15)]) == [None]
    assert rows(cfg, "accounts") == []
    assert outbox_count(cfg) == 0


def test_exact_decimals_and_a_nul_from_salesforce_cdc_land_in_postgres(
        org: Any, postgres_dsn: str, schema: str, kafka_config: dict[str, Any]) -> None:
    """Failed before the fix: the emulator and the CometD client parsed JSON numbers as floats (the row got
    latitude 123.45678901234568 for 123.456789012345678), and the NUL in Name failed the write. The gap
    repair reads the record over REST, which must keep the digits too."""
    import json

    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from processors.mapping import Mapped, map_inbound
    from producers.salesforce import cdc
    from sfsync.config import build_config
    from sfsync.kafka.clients import make_consumer
    from sfsync.kafka.topics import TopicNames, apply_topics
    from sfsync.records import ChangeEvent
    from sfsync.serde import Serde

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.accounts (id bigserial PRIMARY KEY, sfid text UNIQUE, name text, "
                     "revenue numeric, latitude numeric(18, 15))")
    cfg = build_config({
        "kafka": kafka_config,
        "postgres": {"dsn": postgres_dsn, "schema": schema},
        "salesforce": {"login_url": org.url, "ca_bundle": str(org.ca_path),
                       "auth": {"flow": "password", "client_id": "sfsync", "client_secret": "secret",
                                "username": org.username, "password": org.password}},
        "objects": {"Account": {"table": "accounts", "fields": [
            {"column": "name", "field": "Name"}, {"column": "revenue", "field": "AnnualRevenue"},
            {"column": "latitude", "field": "Geo__Latitude__s"}]}},
    })
    init_schema(cfg)
    apply_topics(cfg)
    org.control.config(connect_timeout_ms=2000)
    created = org.http_session().post(
        f"{org.url}/services/data/v59.0/sobjects/Account/", timeout=30,
        data=f'{{"Name": "Ada\\u0000Lovelace", "AnnualRevenue": {2**59 + 1}, '
             '"Geo__Latitude__s": 123.456789012345678}'.encode(),
        headers={"Authorization": f"Bearer {org.access_token()}", "Content-Type": "application/json"})
    assert created.status_code == 201, created.text
    sfid = created.json()["id"]
    org.control.emit_gap("Account", "GAP_UPDATE", [sfid])

    stop = threading.Event()
    producer = threading.Thread(target=cdc.run, args=(cfg, stop), kwargs={"start": "all"}, daemon=True)
    producer.start()
    topic = TopicNames(cfg.kafka.topic_prefix).changes_inbound
    consumer = make_consumer(cfg.kafka, "values-reader", "values-reader")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(cfg.kafka.partitions)])
    serde = Serde.from_config(cfg.kafka)
    events: list[ChangeEvent] = []
    deadline = time.monotonic() + 60
    try:
        while len(events) < 2 and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.2):
                value = m.value()
                if m.error() is None and isinstance(value, bytes):
                    events.append(serde.decode(value, ChangeEvent, topic))
    finally:
        consumer.close()
        stop.set()
        producer.join(30)
    assert not producer.is_alive()
    assert [e.sfid for e in events] == [sfid, sfid], json.dumps([str(e) for e in events])
    sink = PostgresSink(cfg)
    try:
        for event in events:  # the CDC create, then the snapshot the gap repair read over REST
            mapped = map_inbound(event, cfg)
            assert isinstance(mapped, Mapped), mapped
            assert sink.write([mapped.command]) == [None]
            (row,) = rows(cfg, "accounts")
            assert (row["sfid"], row["name"], row["revenue"], row["latitude"]) == (
                sfid, "AdaLovelace", 2**59 + 1, Decimal("123.456789012345678")), event.operation
            execute(cfg, f"DELETE FROM {schema}.accounts")
    finally:
        sink.close()
