"""Force sync (``sfsync.operations.forcesync``): the pure decisions, then the real emulator, PostgreSQL and
broker (no roles: what a force sync hands the pipeline, and how many Salesforce calls it takes)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from sfsync.config import SfsyncConfig
from sfsync.database import init_schema
from sfsync.database.testing import drop_schema_cascade, make_config, new_schema_name
from sfsync.kafka.clients import make_consumer
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.operations import forcesync
from sfsync.operations.forcesync import (
    FORCE_ORIGIN,
    ForceSyncError,
    SyncSource,
    as_sfid,
    check_prefix,
    check_source,
    default_source,
    force_sync_all,
    force_sync_record,
    read_fields,
    select_soql,
    snapshot,
    syncable_sources,
)
from sfsync.records import ChangeEvent, Operation
from sfsync.salesforce.values import ObjectTypes, normalize_sfid
from sfsync.serde import Serde

NO_DB = "postgresql://x@127.0.0.1:1/x"  # the pure tests connect to nothing
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def mapping_with(*directions: str) -> Any:
    fields = [{"column": f"c{i}", "field": f"F{i}__c", "direction": d} for i, d in enumerate(directions)]
    cfg = make_config(NO_DB, "s", {"Thing__c": {"table": "things", "fields": fields}})
    return cfg.objects["Thing__c"]


# ------------------------------------------------------------------ pure


@pytest.mark.parametrize(("directions", "sources", "default"), [
    (("both",), {SyncSource.SALESFORCE, SyncSource.LOCAL}, SyncSource.SALESFORCE),
    (("to_local", "to_local"), {SyncSource.SALESFORCE}, SyncSource.SALESFORCE),
    (("to_salesforce",), {SyncSource.LOCAL}, SyncSource.LOCAL),
    (("to_local", "to_salesforce"), {SyncSource.SALESFORCE, SyncSource.LOCAL}, SyncSource.SALESFORCE),
])
def test_the_sides_an_object_syncs_from_and_the_default_of_all(directions: tuple[str, ...],
                                                                sources: set[SyncSource],
                                                                default: SyncSource) -> None:
    mapping = mapping_with(*directions)
    assert syncable_sources(mapping) == sources and default_source(mapping) is default
    for side in sources:
        check_source("Thing__c", mapping, side)
    for side in set(SyncSource) - sources:
        with pytest.raises(ForceSyncError, match=r"^Thing__c: every mapped field is to_\w+: nothing flows from"):
            check_source("Thing__c", mapping, side)


def test_an_id_is_a_salesforce_id_only_when_it_is_one() -> None:
    assert as_sfid("003000000000001") == normalize_sfid("003000000000001")
    assert as_sfid(normalize_sfid("003000000000001")) == normalize_sfid("003000000000001")
    for local in ("42", "a-uuid-like-0f3c", "003000000000001X", "it's", ""):
        assert as_sfid(local) is None
    check_prefix("Contact", normalize_sfid("003000000000001"), "003")
    check_prefix("Contact", normalize_sfid("001000000000001"), None)  # a describe without keyPrefix: no check
    with pytest.raises(ForceSyncError, match=r"^001000000000001AAA is not a Contact id: its prefix is 001, "
                                             r"Contact ids start with 003$"):
        check_prefix("Contact", normalize_sfid("001000000000001"), "003")


def test_soql_values_are_escaped() -> None:
    assert select_soql("Contact", ["Id", "Title"]) == "SELECT Id, Title FROM Contact"
    assert select_soql("Contact", ["Id"], sfid="003000000000001AAA") == \
        "SELECT Id FROM Contact WHERE Id = '003000000000001AAA'"
    assert select_soql("Contact", ["Id"], external=("Local_Id__c", "x' OR Name != '\\")) == \
        "SELECT Id FROM Contact WHERE Local_Id__c = 'x\\' OR Name != \\'\\\\'"


def test_read_fields_are_the_known_mapped_ones_without_parent_paths() -> None:
    cfg = make_config(NO_DB, "s", {"Contact": {"table": "contacts", "fields": [
        {"column": "title", "field": "Title"}, {"column": "owner", "field": "Owner.Name", "direction": "to_local"},
        {"column": "gone", "field": "Gone__c"}, {"column": "addr", "field": "MailingAddress"}]}})
    types = ObjectTypes("Contact", {"Id": "id", "IsDeleted": "boolean", "SystemModstamp": "datetime",
                                    "Title": "string", "Local_Id__c": "string", "MailingAddress": "address",
                                    "OwnerId": "reference"})
    assert read_fields(types, cfg.objects["Contact"]) == ["Id", "IsDeleted", "SystemModstamp", "Local_Id__c", "Title"]


def test_a_snapshot_carries_every_mapped_field_empty_ones_too() -> None:
    cfg = make_config(NO_DB, "s", {"Contact": {"table": "contacts", "fields": [
        {"column": "title", "field": "Title"}, {"column": "phone", "field": "Phone"}]}})
    mapping = cfg.objects["Contact"]
    types = ObjectTypes("Contact", {"Id": "id", "SystemModstamp": "datetime", "Title": "string", "Phone": "string",
                                    "Local_Id__c": "string", "Email": "email"})
    row = {"attributes": {"type": "Contact"}, "Id": "003000000000001", "SystemModstamp": "2025-05-01T10:00:00.000+0000",
           "Title": "CEO", "Phone": None, "Local_Id__c": "7", "Email": "not@mapped.test"}
    ev = snapshot("Contact", mapping, types, row, local_key=None, position="force-sync:x", now=NOW)
    assert ev is not None
    assert ev.operation is Operation.SNAPSHOT and ev.sfid == normalize_sfid("003000000000001")
    assert ev.values == {"Title": "CEO", "Phone": None} and ev.changed_fields == ["Phone", "Title"]
    assert ev.local_key == "7" and ev.origin == FORCE_ORIGIN and ev.source_position == "force-sync:x"
    assert ev.commit_ts == datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
    # the linked row's key wins over the external id; no stamp: now
    linked = snapshot("Contact", mapping, types, {**row, "SystemModstamp": None}, local_key="8", position="p",
                      now=NOW)
    assert linked is not None and linked.local_key == "8" and linked.commit_ts == NOW
    assert snapshot("Contact", mapping, types, {"Title": "x"}, local_key=None, position="p", now=NOW) is None


# ------------------------------------------------------------------ real emulator, PostgreSQL, broker


@pytest.fixture
def cfg(org: Any, postgres_dsn: str, kafka_config: dict[str, Any]) -> Iterator[SfsyncConfig]:
    from sfsync.devstack.emulator import PASSWORD, USERNAME

    schema = new_schema_name()
    config = make_config(postgres_dsn, schema, kafka=kafka_config, salesforce={
        "login_url": org.url, "ca_bundle": str(org.ca_path),
        "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME, "password": PASSWORD}})
    init_schema(config, demo=True)
    apply_topics(config)
    yield config
    drop_schema_cascade(postgres_dsn, schema)


def db(cfg: SfsyncConfig) -> psycopg.Connection:
    conn = psycopg.connect(cfg.postgres.dsn.get_secret_value(), autocommit=True)
    conn.execute(f'set search_path to "{cfg.postgres.schema_name}"')
    return conn


def existing_rows(cfg: SfsyncConfig, rows: list[tuple[str, str | None]]) -> list[str]:
    """Rows written as sfsync writes (not captured): (last name, sfid); their keys."""
    with db(cfg) as conn, conn.transaction():
        conn.execute("select set_config('sfsync.origin', 'sfsync', true)")
        before = conn.execute("select count(*) from sfsync_outbox").fetchone()[0]
        keys = [str(conn.execute("insert into contacts (last_name, title, sfid) values (%s, 'row', %s) returning id",
                                 (name, sfid)).fetchone()[0]) for name, sfid in rows]
        assert conn.execute("select count(*) from sfsync_outbox").fetchone()[0] == before
    return keys


def inbound(cfg: SfsyncConfig, expect: int, timeout: float = 30.0) -> list[tuple[str, ChangeEvent]]:
    import time

    topic = TopicNames(cfg.kafka.topic_prefix).changes_inbound
    consumer = make_consumer(cfg.kafka, f"{cfg.kafka.topic_prefix}-test-reader")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(cfg.kafka.partitions)])
    serde = Serde.from_config(cfg.kafka)
    out: list[tuple[str, ChangeEvent]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    out.append((m.key().decode(), serde.decode(m.value(), ChangeEvent, topic)))
        for m in consumer.consume(500, 1.0):  # nothing more than expected
            if m.error() is None:
                out.append((m.key().decode(), serde.decode(m.value(), ChangeEvent, topic)))
    finally:
        consumer.close()
    return out


def test_all_from_salesforce_reads_page_by_page_and_sends_a_snapshot_each(org: Any, cfg: SfsyncConfig) -> None:
    ids = org.control.seed("Contact", 450, {"LastName": "seeded-{i}", "Title": "sf-{i}"}, emit_events=False)
    keys = existing_rows(cfg, [(f"linked-{i}", ids[i]) for i in range(3)])
    org.control.reset_stats()
    told: list[tuple[int, int | None]] = []
    report = force_sync_all(cfg, "Contact", page_size=200, progress=lambda n, t: told.append((n, t)))
    assert report.source is SyncSource.SALESFORCE and report.inbound == 450 and report.outbound == 0
    assert report.api_calls == 4  # one describe, three pages
    assert told == [(0, 450), (200, None), (200, None), (50, None)]
    calls = org.control.stats()["api_calls"]
    assert calls == {"GET sobjects/{type}/describe": 1, "GET query": 1, "GET query/{locator}": 2}, calls

    sent = inbound(cfg, 450)
    assert len(sent) == 450
    by_sfid = {ev.sfid: (key, ev) for key, ev in sent}
    assert set(by_sfid) == set(ids)
    for key, ev in by_sfid.values():
        assert key == f"Contact:{ev.sfid}" and ev.operation is Operation.SNAPSHOT and ev.origin == FORCE_ORIGIN
        assert set(ev.values) == {"FirstName", "LastName", "Email", "Phone", "Title", "AccountId"}
    assert [by_sfid[ids[i]][1].local_key for i in range(4)] == [*keys, None]  # the links travel along
    assert by_sfid[ids[7]][1].values["Title"] == "sf-7" and by_sfid[ids[7]][1].values["Phone"] is None


def test_one_record_from_salesforce_by_id_or_by_the_external_id(org: Any, cfg: SfsyncConfig) -> None:
    sf = org.salesforce()
    odd_key = "o'bri\\en"  # a local key SOQL must quote: found, not a syntax error
    one = sf.Contact.create({"LastName": "one", "Local_Id__c": odd_key})["id"]
    org.control.reset_stats()
    report = force_sync_record(cfg, "Contact", one)
    assert (report.source, report.inbound, report.api_calls, report.records) == (SyncSource.SALESFORCE, 1, 2, [one])
    report = force_sync_record(cfg, "Contact", odd_key, source=SyncSource.SALESFORCE)
    assert report.inbound == 1 and report.records == [one]
    sent = inbound(cfg, 2)
    assert [(ev.sfid, ev.local_key) for _k, ev in sent] == [(one, odd_key), (one, odd_key)]

    with pytest.raises(ForceSyncError, match=r"^no Contact with Local_Id__c = 'nobody' in Salesforce$"):
        force_sync_record(cfg, "Contact", "nobody", source=SyncSource.SALESFORCE)
    missing = normalize_sfid("003000000000ZZZ")
    with pytest.raises(ForceSyncError, match=f"^no Contact with Id = {missing} in Salesforce$"):
        force_sync_record(cfg, "Contact", missing)
    account = sf.Account.create({"Name": "A"})["id"]
    with pytest.raises(ForceSyncError, match=f"^{account} is not a Contact id: its prefix is 001"):
        force_sync_record(cfg, "Contact", account)
    with pytest.raises(ForceSyncError, match=r"^unknown object 'Lead'; mapped objects: Account, Case, Contact$"):
        force_sync_record(cfg, "Lead", one)


def test_from_local_the_row_goes_into_the_outbox_as_the_trigger_writes_it(org: Any, cfg: SfsyncConfig,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sfid = normalize_sfid("003000000000001")
    linked, unlinked = existing_rows(cfg, [("linked", sfid), ("unlinked", None)])
    with db(cfg) as conn:
        conn.execute("insert into sfsync_field_versions (direction, object, record, versions) "
                     "values ('inbound', 'Contact', %s, '{\"title\": [5, 6]}')", (sfid,))
    org.control.reset_stats()
    assert force_sync_record(cfg, "Contact", linked).outbound == 1
    report = force_sync_record(cfg, "Contact", sfid, source=SyncSource.LOCAL)  # an sfid, the row's values
    assert report.outbound == 1 and report.records == [linked] and report.api_calls == 1  # the prefix check
    assert force_sync_record(cfg, "Contact", unlinked).api_calls == 0
    with db(cfg) as conn:
        rows = conn.execute("select local_key, operation, changed_columns, new_values, origin, seen_versions "
                            "from sfsync_outbox order by id").fetchall()
    outbound = ["first_name", "last_name", "email", "phone", "title", "account_id"]
    assert [r[:3] for r in rows] == [(linked, "update", outbound), (linked, "update", outbound),
                                     (unlinked, "insert", outbound)]
    assert rows[0][3] == {"id": int(linked), "sfid": sfid, "first_name": None, "last_name": "linked", "email": None,
                          "phone": None, "title": "row", "account_id": None}
    assert {r[4] for r in rows} == {FORCE_ORIGIN}
    assert [r[5] for r in rows] == [{"title": [5, 6]}, {"title": [5, 6]}, None]

    with pytest.raises(ForceSyncError, match=r"^no Contact row with id = '999999' in t_\w+\.contacts$"):
        force_sync_record(cfg, "Contact", "999999")
    with pytest.raises(ForceSyncError, match=f"^no Contact row with sfid = {normalize_sfid('003000000000002')} in "):
        force_sync_record(cfg, "Contact", normalize_sfid("003000000000002"), source=SyncSource.LOCAL)

    # a local key that looks like a Salesforce id (15 digits) but has no Contact prefix: read as the key
    with db(cfg) as conn, conn.transaction():
        conn.execute("select set_config('sfsync.origin', 'sfsync', true)")
        conn.execute("insert into contacts (id, last_name) values (123456789012345, 'digits')")
    report = force_sync_record(cfg, "Contact", "123456789012345")
    assert report.outbound == 1 and report.records == ["123456789012345"] and report.api_calls == 1

    existing_rows(cfg, [(f"more-{i}", None) for i in range(2)])
    monkeypatch.setattr(forcesync, "LOCAL_BATCH", 2)
    told: list[tuple[int, int | None]] = []
    report = force_sync_all(cfg, "Contact", source=SyncSource.LOCAL, progress=lambda n, t: told.append((n, t)))
    assert (report.outbound, report.inbound, report.api_calls) == (5, 0, 0)
    assert told == [(0, 5), (2, None), (2, None), (1, None)]
    with db(cfg) as conn:
        assert conn.execute("select count(*) from sfsync_outbox").fetchone()[0] == 4 + 5
