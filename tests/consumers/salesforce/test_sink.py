"""``SalesforceSink`` against the real emulator through the real simple-salesforce (no mocks).

Each test resets the org; assertions read what arrived in the emulator (records, API stats).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from consumers.base import SinkUnavailable
from consumers.salesforce import BudgetExhausted, CredentialsRefused, SalesforceSink
from sfsync.config import SfsyncConfig, build_config
from sfsync.devstack.emulator import EmulatorHandle
from sfsync.failures import FailureKind
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, FieldPyValue, Source


def _config(emulator: EmulatorHandle, share: float = 0.5, password: str | None = None) -> SfsyncConfig:
    return build_config({
        "salesforce": {
            "login_url": emulator.url,
            "ca_bundle": str(emulator.ca_path),
            "api_budget_share": share,
            "auth": {"flow": "password", "client_id": "sfsync", "client_secret": "secret",
                     "username": emulator.username, "password": password or emulator.password},
        },
        "objects": {
            "Account": {"table": "accounts", "fields": [
                {"column": "name", "field": "Name"},
                {"column": "employees", "field": "NumberOfEmployees"},
                {"column": "revenue", "field": "AnnualRevenue"},
            ]},
            "Contact": {"table": "contacts", "fields": [
                {"column": "last_name", "field": "LastName"},
                {"column": "birthdate", "field": "Birthdate"},
                {"column": "account_id", "field": "AccountId", "reference": "Account"},
            ]},
        },
    })


@pytest.fixture
def sink(org: EmulatorHandle) -> Any:
    s = SalesforceSink(_config(org))
    yield s
    s.close()


def _cmd(obj: str, key: str | None, values: dict[str, FieldPyValue] | None = None, *,
         op: ApplyOperation = ApplyOperation.UPSERT, sfid: str | None = None) -> ApplyCommand:
    return ApplyCommand(target=ApplyTarget.SALESFORCE, object=obj, operation=op, source=Source.POSTGRES,
                        source_event_id="e", source_commit_ts=datetime.now(UTC), local_key=key, sfid=sfid,
                        values=values or {}, fields=sorted(values or {}))


def _accounts(org: EmulatorHandle) -> list[dict[str, Any]]:
    return list(org.salesforce().query_all(
        "SELECT Id, Name, Local_Id__c, NumberOfEmployees, AnnualRevenue FROM Account")["records"])


def test_1000_upserts_in_5_calls_and_no_duplicate_on_repeat(org: EmulatorHandle, sink: SalesforceSink) -> None:
    org.control.reset_stats()
    batch = [_cmd("Account", str(i), {"Name": f"Acc {i}", "NumberOfEmployees": i, "AnnualRevenue": Decimal("10.5")})
             for i in range(1000)]
    assert sink.write(batch) == [None] * 1000
    stats = org.control.stats()
    assert stats["api_calls_total"] <= 5 and stats["max_records_per_collection_call"] == 200
    created = sink.take_created_ids()
    assert len(created) == 1000 and sink.take_created_ids() == []
    assert sink.write(batch) == [None] * 1000  # a redelivered batch
    assert org.control.stats()["api_calls_total"] <= 10
    rows = _accounts(org)
    assert len(rows) == 1000
    assert {r["Local_Id__c"]: r["Id"] for r in rows} == {key: sfid for _, key, sfid in created}
    # nothing new (all updated in place), but the repeated commands carried no sfid: their links are
    # queued again, with the same ids (a repeated batch whose link write failed must write it again)
    assert sorted(sink.take_created_ids()) == sorted(created)


def test_one_bad_record_fails_alone(org: EmulatorHandle, sink: SalesforceSink) -> None:
    batch = [_cmd("Account", str(i), {"Name": f"Acc {i}"}) for i in range(200)]
    batch[17] = _cmd("Account", "17", {"Name": "Bad", "No_Such_Field__c": "x"})
    results = sink.write(batch)
    assert [i for i, r in enumerate(results) if r is not None] == [17]
    bad = results[17]
    assert bad is not None and bad.kind is FailureKind.PERMANENT and bad.error_class == "INVALID_FIELD"
    assert "No_Such_Field__c" in bad.message
    names = {r["Local_Id__c"] for r in _accounts(org)}
    assert len(names) == 199 and "17" not in names

    contacts = [_cmd("Contact", f"c{i}", {"LastName": f"L{i}"}) for i in range(200)]
    contacts[42] = _cmd("Contact", "c42", {"Birthdate": date(2000, 1, 1)})  # no LastName
    results = sink.write(contacts)
    assert [i for i, r in enumerate(results) if r is not None] == [42]
    assert results[42] is not None and results[42].error_class == "REQUIRED_FIELD_MISSING"
    assert results[42].kind is FailureKind.PERMANENT and "LastName" in results[42].message
    assert org.salesforce().query("SELECT COUNT() FROM Contact")["totalSize"] == 199


def test_references_and_types_arrive(org: EmulatorHandle, sink: SalesforceSink) -> None:
    results = sink.write([
        _cmd("Contact", "c1", {"LastName": "Kid", "AccountId": "p1", "Birthdate": date(1990, 5, 17)}),
        _cmd("Account", "p1", {"Name": "Parent", "AnnualRevenue": Decimal("99.5")}),
        _cmd("Contact", "c2", {"LastName": "Orphan", "AccountId": "nobody"}),
    ])
    assert results[0] is None and results[1] is None
    assert results[2] is not None and results[2].error_class == "REFERENCE_NOT_SYNCED"
    assert results[2].kind is FailureKind.TRANSIENT
    sf = org.salesforce()
    parent = sf.Account.get_by_custom_id("Local_Id__c", "p1")
    kid = sf.Contact.get_by_custom_id("Local_Id__c", "c1")
    assert kid["AccountId"] == parent["Id"] and kid["Birthdate"] == "1990-05-17"
    assert parent["AnnualRevenue"] == 99.5
    # a fresh sink (empty cache) resolves the reference with a query
    fresh = SalesforceSink(_config(org))
    try:
        assert fresh.write([_cmd("Contact", "c3", {"LastName": "Later", "AccountId": "p1"})]) == [None]
    finally:
        fresh.close()
    assert sf.Contact.get_by_custom_id("Local_Id__c", "c3")["AccountId"] == parent["Id"]


def test_deletes_by_sfid_and_by_external_id(org: EmulatorHandle, sink: SalesforceSink) -> None:
    assert sink.write([_cmd("Account", str(i), {"Name": f"D{i}"}) for i in range(3)]) == [None] * 3
    ids = {key: sfid for _, key, sfid in sink.take_created_ids()}
    batch = [
        _cmd("Account", "0", op=ApplyOperation.DELETE, sfid=ids["0"]),
        _cmd("Account", "1", op=ApplyOperation.DELETE),  # no sfid: looked up by external id
        _cmd("Account", "missing", op=ApplyOperation.DELETE),
    ]
    results = sink.write(batch)
    assert results[:2] == [None, None]
    assert results[2] is not None and results[2].kind is FailureKind.PERMANENT
    assert results[2].error_class == "NOT_FOUND"
    assert [r["Local_Id__c"] for r in _accounts(org)] == ["2"]
    assert sink.write(batch[:2]) == [None, None]  # already deleted: still a success


def test_update_then_delete_then_recreate_in_one_batch(org: EmulatorHandle, sink: SalesforceSink) -> None:
    results = sink.write([
        _cmd("Account", "x", {"Name": "v1"}),
        _cmd("Account", "x", {"NumberOfEmployees": 5}),
        _cmd("Account", "x", op=ApplyOperation.DELETE),
        _cmd("Account", "x", {"Name": "v2"}),
    ])
    assert results == [None] * 4
    rows = _accounts(org)
    assert [(r["Name"], r["NumberOfEmployees"]) for r in rows] == [("v2", None)]


def test_503_and_lock_faults_are_transient(org: EmulatorHandle, sink: SalesforceSink) -> None:
    org.control.add_fault(method="PATCH", path="composite/sobjects", status=503, error_code="SERVER_UNAVAILABLE",
                          count=1)
    results = sink.write([_cmd("Account", "a", {"Name": "A"}), _cmd("Account", "b", {"Name": "B"})])
    assert all(r is not None and r.kind is FailureKind.TRANSIENT and r.error_class == "SERVER_UNAVAILABLE"
               for r in results)
    org.control.add_fault(sobject="Account", error_code="UNABLE_TO_LOCK_ROW", count=1)
    results = sink.write([_cmd("Account", "a", {"Name": "A"})])
    assert results[0] is not None and results[0].kind is FailureKind.TRANSIENT
    assert results[0].error_class == "UNABLE_TO_LOCK_ROW"
    assert _accounts(org) == []
    assert sink.write([_cmd("Account", "a", {"Name": "A"})]) == [None]  # the retry goes through
    assert [r["Name"] for r in _accounts(org)] == ["A"]


def test_expired_session_mid_run_continues(org: EmulatorHandle, sink: SalesforceSink) -> None:
    assert sink.write([_cmd("Account", "1", {"Name": "One"})]) == [None]
    org.control.expire_sessions()
    assert sink.write([_cmd("Account", "2", {"Name": "Two"})]) == [None]
    assert sink.client.auth_count == 2
    assert sorted(r["Name"] for r in _accounts(org)) == ["One", "Two"]


def test_bad_credentials_make_the_sink_unavailable(org: EmulatorHandle) -> None:
    sink = SalesforceSink(_config(org, password="wrong-password"))
    batch = [_cmd("Account", "1", {"Name": "One"})]
    try:
        with pytest.raises(SinkUnavailable) as raised:
            sink.write(batch)
        assert isinstance(raised.value, CredentialsRefused) and raised.value.alert
        assert "wrong-password" not in str(raised.value)
    finally:
        sink.close()
    # credentials revoked mid-run (re-authentication refused) -> unavailable too, nothing written
    good = SalesforceSink(_config(org))
    try:
        assert good.write(batch) == [None]
        org.control.config(password="rotated")
        org.control.expire_sessions()
        with pytest.raises(CredentialsRefused):
            good.write([_cmd("Account", "2", {"Name": "Two"})])
    finally:
        good.close()
        org.control.config(password=org.password)
    assert [r["Local_Id__c"] for r in _accounts(org)] == ["1"]


def test_budget_slows_then_stops_before_the_limit(org: EmulatorHandle) -> None:
    org.control.set_limits(max=1000, used=480)  # share 0.5 -> 500 allowed; slow from 400
    slept: list[float] = []
    sink = SalesforceSink(_config(org, share=0.5), sleep=slept.append, budget_max_delay_s=1.0,
                          budget_retry_after_s=5.0)
    written = 0
    try:
        with pytest.raises(BudgetExhausted) as raised:
            for i in range(100):
                assert sink.write([_cmd("Account", str(i), {"Name": f"N{i}"})]) == [None]
                written += 1
    finally:
        sink.close()
    assert raised.value.retry_after == 5.0
    usage = org.control.stats()["api_usage"]
    assert usage["used"] == 500  # exactly the share, never past it
    assert written == 20
    assert slept and all(0 < s <= 1.0 for s in slept) and slept == sorted(slept)


def test_a_spent_budget_is_read_again_after_the_retry_interval(org: EmulatorHandle) -> None:
    """Failed before the fix: a stopped sink made no call, so it never saw the budget come back (a new day)
    and stayed stopped for good. Now one ``GET limits`` per retry interval reads the budget again."""
    org.control.set_limits(max=1000, used=499)  # share 0.5 -> 500 allowed: one call left
    now = [0.0]
    sink = SalesforceSink(_config(org, share=0.5), sleep=lambda _s: None, clock=lambda: now[0],
                          budget_retry_after_s=5.0)
    try:
        assert sink.write([_cmd("Account", "1", {"Name": "first"})]) == [None]
        with pytest.raises(BudgetExhausted):
            sink.write([_cmd("Account", "2", {"Name": "second"})])
        org.control.set_limits(max=1000, used=0)  # the budget is back
        org.control.reset_stats()
        now[0] += 1.0
        with pytest.raises(BudgetExhausted):  # within the interval: no call spent on asking
            sink.write([_cmd("Account", "2", {"Name": "second"})])
        assert org.control.stats()["api_calls"] == {}
        now[0] += 5.0
        assert sink.write([_cmd("Account", "2", {"Name": "second"})]) == [None]
        calls = org.control.stats()["api_calls"]
        assert calls.get("GET limits") == 1 and sum(calls.values()) == 2, calls
    finally:
        sink.close()
    assert sorted(r["Local_Id__c"] for r in _accounts(org)) == ["1", "2"]


# --------------------------------------------------------------------------- values end to end (issue 10, item 11)
# PostgreSQL row -> capture trigger -> outbox -> relay -> broker -> processor mapping -> this sink -> emulator,
# every component real (the processor's pure mapping stands in for its faust agent).


def _outbound_config(emulator: EmulatorHandle, dsn: str, schema: str, kafka: dict[str, Any],
                     objects: dict[str, Any]) -> SfsyncConfig:
    return build_config({
        "kafka": kafka,
        "postgres": {"dsn": dsn, "schema": schema},
        "salesforce": {"login_url": emulator.url, "ca_bundle": str(emulator.ca_path),
                       "auth": {"flow": "password", "client_id": "sfsync", "client_secret": "secret",
                                "username": emulator.username, "password": emulator.password}},
        "objects": objects,
    })


def _relay_outbound(cfg: SfsyncConfig, expect: int, timeout: float = 60.0) -> list[tuple[str, Any]]:
    """Run the real outbox relay until the outbox is empty; the (key, ChangeEvent) messages it produced."""
    import threading
    import time

    import psycopg
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from producers.postgres.relay import OutboxRelay, RelaySettings
    from sfsync.kafka.clients import make_consumer
    from sfsync.kafka.topics import TopicNames
    from sfsync.records import ChangeEvent
    from sfsync.serde import Serde

    stop = threading.Event()
    relay = OutboxRelay(cfg, RelaySettings(batch_size=100, poll_interval_s=0.2, standby_check_s=0.1,
                                           backoff_s=0.1, max_backoff_s=0.5, flush_timeout_s=10))
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    topic = TopicNames(cfg.kafka.topic_prefix).changes_outbound
    consumer = make_consumer(cfg.kafka, "values-reader", "values-reader")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(cfg.kafka.partitions)])
    serde = Serde()
    out: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.2):
                key, value = m.key(), m.value()
                if m.error() is None and isinstance(key, bytes) and isinstance(value, bytes):
                    out.append((key.decode(), serde.decode(value, ChangeEvent, topic)))
        outbox = f'"{cfg.postgres.schema_name}"."{cfg.postgres.outbox_table}"'
        with psycopg.connect(cfg.postgres.dsn.get_secret_value()) as conn:
            assert conn.execute(f"SELECT count(*) FROM {outbox}").fetchone() == (0,)
    finally:
        consumer.close()
        stop.set()
        thread.join(15)
    assert len(out) == expect, out
    return out


def _command_for(event: Any, cfg: SfsyncConfig) -> ApplyCommand:
    from processors.mapping import Mapped, map_outbound

    mapped = map_outbound(event, cfg)
    assert isinstance(mapped, Mapped), mapped
    return mapped.command


def test_exact_decimals_of_a_postgres_row_arrive_in_salesforce(org: EmulatorHandle, postgres_dsn: str,
                                                               kafka_config: dict[str, Any]) -> None:
    """Failed before the fix: the sink's body turned a Decimal into a float (Salesforce got Geo__Latitude__s
    123.45678901234568 for 123.456789012345678, and AnnualRevenue 576460752303423488 for the decimal
    2**59 + 1), and the emulator kept numbers as floats too."""
    import json

    import psycopg

    from sfsync.database import init_schema
    from sfsync.database.testing import drop_schema_cascade, new_schema_name
    from sfsync.kafka.topics import apply_topics

    schema = new_schema_name()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.accounts (id bigserial PRIMARY KEY, sfid text UNIQUE, name text, "
                     "revenue numeric, latitude numeric)")
    cfg = _outbound_config(org, postgres_dsn, schema, kafka_config, {"Account": {"table": "accounts", "fields": [
        {"column": "name", "field": "Name"}, {"column": "revenue", "field": "AnnualRevenue", "type": "decimal"},
        {"column": "latitude", "field": "Geo__Latitude__s"}]}})
    sink = SalesforceSink(cfg)
    try:
        init_schema(cfg)
        apply_topics(cfg)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {schema}.accounts (name, revenue, latitude) VALUES ('Exact', %s, %s)",
                         (2**59 + 1, Decimal("123.456789012345678")))
        ((_key, event),) = _relay_outbound(cfg, 1)
        assert sink.write([_command_for(event, cfg)]) == [None]
    finally:
        sink.close()
        drop_schema_cascade(postgres_dsn, schema)
    session = org.http_session()
    answer = session.get(f"{org.url}/services/data/v59.0/query/", timeout=30,
                         params={"q": "SELECT AnnualRevenue, Geo__Latitude__s FROM Account"},
                         headers={"Authorization": f"Bearer {org.access_token()}"})
    (record,) = json.loads(answer.text, parse_float=Decimal)["records"]
    assert (record["AnnualRevenue"], record["Geo__Latitude__s"]) == (2**59 + 1, Decimal("123.456789012345678"))


def test_a_local_15_character_sfid_updates_the_existing_record(org: EmulatorHandle, postgres_dsn: str,
                                                               kafka_config: dict[str, Any]) -> None:
    """Failed before the fix: the relay keyed the change ``Account:<15-character id>``, not the
    ``Account:<18-character id>`` under which the inbound direction (CDC) knows the same record, and the sink
    queued a needless link write-back for an id the row already had."""
    import psycopg

    from sfsync.database import init_schema
    from sfsync.database.testing import DEMO_OBJECTS, drop_schema_cascade, new_schema_name
    from sfsync.kafka.topics import apply_topics

    sf: Any = org.salesforce()
    existing = sf.Account.create({"Name": "Before", "Local_Id__c": "elsewhere"})["id"]
    assert len(existing) == 18
    schema = new_schema_name()
    cfg = _outbound_config(org, postgres_dsn, schema, kafka_config, {"Account": DEMO_OBJECTS["Account"]})
    sink = SalesforceSink(cfg)
    try:
        init_schema(cfg, demo=True)
        apply_topics(cfg)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {schema}.accounts (name, sfid) VALUES ('Local Co', %s)", (existing[:15],))
        ((key, event),) = _relay_outbound(cfg, 1)
        assert key == f"Account:{existing}" and event.sfid == existing
        assert sink.write([_command_for(event, cfg)]) == [None]
        assert sink.take_created_ids() == []  # the row is linked already: nothing to write back
    finally:
        sink.close()
        drop_schema_cascade(postgres_dsn, schema)
    accounts = _accounts(org)
    assert [(r["Id"], r["Name"]) for r in accounts] == [(existing, "Local Co")]  # updated, no duplicate
