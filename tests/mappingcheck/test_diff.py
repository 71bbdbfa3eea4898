"""``sfsync mapping diff OLD NEW``: the pure diff over configs built here, and the command through the CLI.

The diff is judged on the example config (``demo_config()``) and copies of it with one change each; the
command on files written from them. ``--count`` runs against the real PostgreSQL and the real emulator; a
Salesforce that cannot be reached (a closed local port) is reported as not counted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.config import build_config
from sfsync.devstack.emulator import PASSWORD, USERNAME
from sfsync.devstack.stack import demo_config
from sfsync.mappingcheck.diff import (
    ChangeKind,
    Count,
    MappingDiff,
    ObjectStatus,
    Scope,
    Side,
    diff_json,
    diff_lines,
    diff_mappings,
)

Raw = dict[str, Any]
ALL_BOTH = {Side.INBOUND: Scope.ALL, Side.OUTBOUND: Scope.ALL}


def changed(mutate: Callable[[Raw], None], base: Raw | None = None) -> Raw:
    raw = copy.deepcopy(base if base is not None else demo_config())
    mutate(raw)
    return raw


def fields(raw: Raw, obj: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = raw["objects"][obj]["fields"]
    return result


def field(raw: Raw, obj: str, name: str) -> dict[str, Any]:
    return next(f for f in fields(raw, obj) if f["field"] == name)


def diff_of(mutate: Callable[[Raw], None], base: Raw | None = None) -> MappingDiff:
    old = copy.deepcopy(base if base is not None else demo_config())
    return diff_mappings(build_config(old), build_config(changed(mutate, old)))


def only_change(diff: MappingDiff) -> Any:
    assert len(diff.objects) == 1 and len(diff.objects[0].changes) == 1, diff_lines(diff)
    return diff.objects[0].changes[0]


# ------------------------------------------------------------------ the pure diff


def test_the_same_mapping_has_no_differences() -> None:
    cfg = build_config(demo_config())
    diff = diff_mappings(cfg, cfg)
    assert not diff.changed and diff.targets() == []
    assert diff_lines(diff) == ["no differences"]
    assert diff_json(diff) == {"differences": False, "objects": [], "summary": "no differences"}


def test_field_order_and_settings_outside_the_mapping_are_no_difference() -> None:
    def mutate(raw: Raw) -> None:
        fields(raw, "Contact").reverse()
        raw["kafka"]["topic_prefix"] = "other"
        raw["objects"]["Contact"]["filters"] = {}

    assert not diff_of(mutate).changed


def test_a_newly_mapped_field_needs_every_record_resynced_in_its_directions() -> None:
    both = only_change(diff_of(lambda raw: fields(raw, "Account").append({"column": "fax", "field": "Fax"})))
    assert (both.kind, both.path, both.resync) == (ChangeKind.FIELD_ADDED, "objects.Account.fields[Fax]", ALL_BOTH)
    assert both.summary == "field Fax added (column fax, both)"
    assert both.new["column"] == "fax" and both.old is None

    diff = diff_of(lambda raw: fields(raw, "Account").append(
        {"column": "rating", "field": "Rating", "direction": "to_local"}))
    assert only_change(diff).resync == {Side.INBOUND: Scope.ALL}
    lines = diff_lines(diff)
    assert lines[2] == "    re-sync needed: inbound, all Account records (newly mapped)"
    assert lines[-2:] == ["  re-sync Account: inbound, all Account records",
                          "1 object differs, 1 change; re-sync needed: inbound for Account"]


def test_a_removed_field_touches_nothing() -> None:
    change = only_change(diff_of(lambda raw: fields(raw, "Account").pop()))
    assert (change.kind, change.path, change.resync) == (ChangeKind.FIELD_REMOVED, "objects.Account.fields[Industry]",
                                                         {})
    assert change.summary == "field Industry removed (column industry)"
    assert diff_lines(diff_of(lambda raw: fields(raw, "Account").pop()))[1:4] == [
        "  objects.Account.fields[Industry]: field Industry removed (column industry)",
        "    nothing to re-sync: it stops syncing; both sides keep their values",
        "  re-sync Account: nothing",
    ]


def test_a_renamed_column_is_newly_mapped_in_the_fields_directions() -> None:
    change = only_change(diff_of(lambda raw: field(raw, "Contact", "Title").update(column="job_title")))
    assert (change.kind, change.path, change.summary) == (ChangeKind.COLUMN, "objects.Contact.fields[Title].column",
                                                          "title -> job_title")
    assert change.resync == ALL_BOTH


@pytest.mark.parametrize(("old", "new", "resync", "note"), [
    ("both", "to_local", {}, "outbound stops"),
    ("both", "to_salesforce", {}, "inbound stops"),
    ("to_local", "both", {Side.OUTBOUND: Scope.ALL}, "the field now flows outbound"),
    ("to_salesforce", "both", {Side.INBOUND: Scope.ALL}, "the field now flows inbound"),
    ("to_local", "to_salesforce", {Side.OUTBOUND: Scope.ALL}, "the field now flows outbound; inbound stops"),
])
def test_a_direction_change_resyncs_only_the_side_it_gains(old: str, new: str, resync: dict[Side, Scope],
                                                           note: str) -> None:
    base = changed(lambda raw: field(raw, "Contact", "Phone").update(direction=old))
    change = only_change(diff_of(lambda raw: field(raw, "Contact", "Phone").update(direction=new), base))
    assert (change.kind, change.summary, change.resync, change.note) == (ChangeKind.DIRECTION, f"{old} -> {new}",
                                                                         resync, note)
    assert (change.old, change.new) == (old, new)


def test_conflict_and_delete_policies_touch_nothing() -> None:
    def mutate(raw: Raw) -> None:
        raw["objects"]["Account"]["conflict_policy"] = "salesforce_wins"
        field(raw, "Account", "Phone")["conflict_policy"] = "local_wins"
        raw["objects"]["Case"]["delete_policy"] = "ignore"

    diff = diff_of(mutate)
    found = {c.path: (c.kind, c.summary, c.resync) for o in diff.objects for c in o.changes}
    assert found == {
        "objects.Account.conflict_policy": (ChangeKind.CONFLICT_POLICY, "last_writer_wins -> salesforce_wins", {}),
        "objects.Account.fields[Phone].conflict_policy": (ChangeKind.CONFLICT_POLICY, "(the object's) -> local_wins",
                                                          {}),
        "objects.Case.delete_policy": (ChangeKind.DELETE_POLICY, "unlink -> ignore", {}),
    }
    assert diff.targets() == []
    assert diff_lines(diff)[-1] == "2 objects differ, 3 changes; nothing to re-sync"


def test_value_rules_resync_in_the_directions_values_flow() -> None:
    def mutate(raw: Raw) -> None:
        field(raw, "Case", "Priority")["value_map"] = {"low": "Low", "medium": "Medium", "high": "High",
                                                       "urgent": "Urgent"}
        field(raw, "Contact", "Email")["transforms"] = ["strip"]
        field(raw, "Account", "Industry")["type"] = None
        field(raw, "Account", "Phone").update(type="string", direction="to_salesforce")  # type: inbound only

    base = changed(lambda raw: field(raw, "Account", "Phone").update(direction="to_salesforce"))
    diff = diff_of(mutate, base)
    found = {c.path: (c.kind, c.resync) for o in diff.objects for c in o.changes}
    assert found == {
        "objects.Case.fields[Priority].value_map": (ChangeKind.VALUE_MAP, ALL_BOTH),
        "objects.Contact.fields[Email].transforms": (ChangeKind.TRANSFORMS, ALL_BOTH),
        "objects.Account.fields[Industry].type": (ChangeKind.TYPE, {Side.INBOUND: Scope.ALL}),
        "objects.Account.fields[Phone].type": (ChangeKind.TYPE, {}),
    }


def test_a_reference_change_resyncs_the_field() -> None:
    def mutate(raw: Raw) -> None:
        field(raw, "Case", "AccountId")["reference"] = None

    change = only_change(diff_of(mutate))
    assert (change.kind, change.summary, change.resync) == (ChangeKind.REFERENCE, "Account -> (none)", ALL_BOTH)


def test_key_changes_fill_the_new_key() -> None:
    def mutate(raw: Raw) -> None:
        raw["objects"]["Account"]["external_id_field"] = "Sync_Key__c"
        raw["objects"]["Contact"]["local_key"] = "uid"
        raw["objects"]["Case"]["sfid_column"] = "salesforce_id"

    found = {c.path: (c.kind, c.summary, c.resync) for o in diff_of(mutate).objects for c in o.changes}
    assert found == {
        "objects.Account.external_id_field": (ChangeKind.KEY, "Local_Id__c -> Sync_Key__c",
                                              {Side.OUTBOUND: Scope.ALL}),
        "objects.Contact.local_key": (ChangeKind.KEY, "id -> uid", {Side.OUTBOUND: Scope.ALL}),
        "objects.Case.sfid_column": (ChangeKind.KEY, "sfid -> salesforce_id", {Side.INBOUND: Scope.ALL}),
    }


def test_objects_added_removed_and_moved_to_another_table() -> None:
    def mutate(raw: Raw) -> None:
        raw["objects"]["Lead"] = {"table": "leads", "fields": [
            {"column": "company", "field": "Company", "direction": "to_local"}]}
        del raw["objects"]["Case"]
        raw["objects"]["Account"]["table"] = "companies"

    diff = diff_of(mutate)
    by_name = {o.name: o for o in diff.objects}
    assert [o.name for o in diff.objects] == ["Account", "Lead", "Case"]  # NEW's order, then removed ones
    assert by_name["Lead"].status is ObjectStatus.ADDED
    assert by_name["Lead"].resync == {Side.INBOUND: Scope.ALL}
    assert by_name["Case"].status is ObjectStatus.REMOVED and by_name["Case"].resync == {}
    assert by_name["Case"].qualified_table == "public.cases"
    table = by_name["Account"].changes[0]
    assert (table.kind, table.summary, table.resync) == (ChangeKind.TABLE, "public.accounts -> public.companies",
                                                         ALL_BOTH)


def test_another_schema_moves_every_table() -> None:
    diff = diff_of(lambda raw: raw.setdefault("postgres", {}).update(schema="sales"))
    assert [(o.name, o.changes[0].summary) for o in diff.objects] == [
        ("Account", "public.accounts -> sales.accounts"), ("Contact", "public.contacts -> sales.contacts"),
        ("Case", "public.cases -> sales.cases")]


def test_filter_changes_let_records_start_or_stop_matching() -> None:
    base = changed(lambda raw: raw["objects"]["Contact"].update(filters={
        "to_local": "Email != null", "exclude_domains": ["example.org"], "exclude_emails": ["ceo@acme.com"]}))

    def mutate(raw: Raw) -> None:
        raw["objects"]["Contact"]["filters"] = {
            "to_salesforce": "email != null",              # added: records can only stop matching
            "exclude_domains": ["EXAMPLE.org", "test.com"],  # same domain in another case; one more
            "exclude_emails": [],                            # removed: records can only start matching
        }                                                    # to_local removed: records can only start matching

    found = {c.path: (c.summary, c.resync) for o in diff_of(mutate, base).objects for c in o.changes}
    matching_both = {Side.INBOUND: Scope.MATCHING, Side.OUTBOUND: Scope.MATCHING}
    assert found == {
        "objects.Contact.filters.to_local": ('"Email != null" -> (none)', {Side.INBOUND: Scope.MATCHING}),
        "objects.Contact.filters.to_salesforce": ('(none) -> "email != null"', {}),
        "objects.Contact.filters.exclude_emails": ("removed ceo@acme.com", matching_both),
        "objects.Contact.filters.exclude_domains": ("added test.com", {}),
    }
    changed_condition = only_change(diff_of(
        lambda raw: raw["objects"]["Contact"]["filters"].update(to_local="Email != null and Phone != null"), base))
    assert changed_condition.resync == {Side.INBOUND: Scope.MATCHING}
    assert "records may start or stop matching" in changed_condition.note
    lines = diff_lines(diff_of(
        lambda raw: raw["objects"]["Contact"]["filters"].update(to_local="Email != null and Phone != null"), base))
    assert lines[2].startswith("    re-sync needed: inbound, Contact records that now match (records may start or "
                               "stop matching")


def test_an_object_needing_all_and_matching_needs_all() -> None:
    def mutate(raw: Raw) -> None:
        raw["objects"]["Contact"]["filters"] = {}
        fields(raw, "Contact").append({"column": "fax", "field": "Fax", "direction": "to_local"})

    base = changed(lambda raw: raw["objects"]["Contact"].update(filters={"exclude_domains": ["example.org"]}))
    diff = diff_of(mutate, base)
    assert diff.objects[0].resync == {Side.INBOUND: Scope.ALL, Side.OUTBOUND: Scope.MATCHING}
    assert [(t.object, t.side, t.scope, t.table) for t in diff.targets()] == [
        ("Contact", Side.INBOUND, Scope.ALL, "contacts"), ("Contact", Side.OUTBOUND, Scope.MATCHING, "contacts")]


def test_counts_are_shown_next_to_the_resync() -> None:
    diff = diff_of(lambda raw: fields(raw, "Account").append({"column": "fax", "field": "Fax"}))
    counts = [Count("Account", Side.INBOUND, 1), Count("Account", Side.OUTBOUND, None, "postgres: down")]
    assert diff_lines(diff, counts)[-2] == ("  re-sync Account: inbound, all Account records (1 record); outbound, "
                                            "all rows of public.accounts (not counted: postgres: down)")
    shown = diff_json(diff, counts)["objects"][0]["resync"]
    assert shown == {
        "inbound": {"scope": "all", "touches": "all Account records", "records": 1, "not_counted": None},
        "outbound": {"scope": "all", "touches": "all rows of public.accounts", "records": None,
                     "not_counted": "postgres: down"},
    }


# ------------------------------------------------------------------ the command


def write(path: Path, raw: Raw) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def add_fax(raw: Raw) -> None:
    fields(raw, "Account").append({"column": "fax", "field": "Fax"})
    field(raw, "Contact", "FirstName")["direction"] = "to_local"


def test_command_without_differences_exits_0(tmp_path: Path) -> None:
    old = write(tmp_path / "old.yaml", demo_config())
    new = write(tmp_path / "new.yaml", changed(lambda raw: fields(raw, "Case").reverse()))
    result = CliRunner().invoke(app, ["mapping", "diff", old, new])
    assert result.exit_code == 0, result.output
    assert result.output == "no differences\n"


def test_command_with_differences_exits_3_with_the_lines(tmp_path: Path) -> None:
    old = write(tmp_path / "old.yaml", demo_config())
    new = write(tmp_path / "new.yaml", changed(add_fax))
    result = CliRunner().invoke(app, ["mapping", "diff", old, new])
    assert result.exit_code == 3, result.output
    assert result.output.splitlines() == [
        "objects.Account (table public.accounts): changed",
        "  objects.Account.fields[Fax]: field Fax added (column fax, both)",
        "    re-sync needed: inbound, all Account records; outbound, all rows of public.accounts (newly mapped)",
        "  re-sync Account: inbound, all Account records; outbound, all rows of public.accounts",
        "objects.Contact (table public.contacts): changed",
        "  objects.Contact.fields[FirstName].direction: both -> to_local",
        "    nothing to re-sync: outbound stops",
        "  re-sync Contact: nothing",
        "2 objects differ, 2 changes; re-sync needed: inbound for Account; outbound for Account",
    ]


def test_command_json(tmp_path: Path) -> None:
    old = write(tmp_path / "old.yaml", demo_config())
    new = write(tmp_path / "new.yaml", changed(add_fax))
    result = CliRunner().invoke(app, ["mapping", "diff", old, new, "--json"])
    assert result.exit_code == 3, result.output
    data = json.loads(result.output)
    assert data["differences"] is True
    assert [(o["object"], o["status"]) for o in data["objects"]] == [("Account", "changed"), ("Contact", "changed")]
    fax = data["objects"][0]["changes"][0]
    assert (fax["path"], fax["kind"], fax["resync"]) == ("objects.Account.fields[Fax]", "field_added",
                                                         {"inbound": "all", "outbound": "all"})
    assert fax["new"]["direction"] == "both"
    direction = data["objects"][1]["changes"][0]
    assert (direction["old"], direction["new"], direction["effect"]) == ("both", "to_local",
                                                                         "nothing to re-sync: outbound stops")
    assert data["objects"][1]["resync"] == {}
    assert "records" not in data["objects"][0]["resync"]["inbound"]  # nothing counted without --count


@pytest.mark.parametrize(("content", "problem"), [
    ("objects: [\n", "YAML expected the node content"),
    (None, "does not exist"),
])
def test_command_unreadable_file_exits_2_naming_it(tmp_path: Path, content: str | None, problem: str) -> None:
    old = write(tmp_path / "old.yaml", demo_config())
    bad = tmp_path / "bad.yaml"
    if content is not None:
        bad.write_text(content)
    result = CliRunner().invoke(app, ["mapping", "diff", old, str(bad)])
    assert result.exit_code == 2, result.output
    assert f"{bad} is invalid" in result.output and problem in result.output
    assert "Traceback" not in result.output


def test_command_invalid_config_exits_2_with_the_key_path(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", changed(lambda raw: field(raw, "Contact", "Email").update(direction="up")))
    new = write(tmp_path / "new.yaml", demo_config())
    result = CliRunner().invoke(app, ["mapping", "diff", bad, new])
    assert result.exit_code == 2, result.output
    assert f"{bad} is invalid (1 problem):" in result.output
    assert "objects.Contact.fields[2].direction: must be one of both, to_salesforce, to_local" in result.output


def with_connections(raw: Raw, dsn: str, schema: str, salesforce: dict[str, Any]) -> Raw:
    return {**raw, "postgres": {"dsn": dsn, "schema": schema}, "salesforce": salesforce}


def test_count_rows_in_postgres_and_salesforce_unreachable(tmp_path: Path, postgres_dsn: str, schema: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".accounts (id bigint PRIMARY KEY, sfid text UNIQUE, name text)')
        conn.execute(f'INSERT INTO "{schema}".accounts (id, name) SELECT n, \'a\' || n FROM generate_series(1, 3) n')
    closed = {"login_url": "https://127.0.0.1:9", "request_timeout_s": 2,
              "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME, "password": PASSWORD}}
    old_raw = with_connections(demo_config(), postgres_dsn, schema, closed)
    old = write(tmp_path / "old.yaml", old_raw)
    new_raw = changed(lambda raw: fields(raw, "Account").append({"column": "fax", "field": "Fax"}), old_raw)
    new = write(tmp_path / "new.yaml", new_raw)
    result = CliRunner().invoke(app, ["mapping", "diff", old, new, "--count"])
    assert result.exit_code == 3, result.output
    resync = [line for line in result.output.splitlines() if line.startswith("  re-sync Account: ")]
    assert resync == [f"  re-sync Account: inbound, all Account records (not counted: salesforce: Salesforce "
                      f"authentication failed: unreachable: https://127.0.0.1:9: ConnectionError); outbound, all rows "
                      f"of {schema}.accounts (3 rows)"], result.output


def test_count_records_in_the_emulator_and_a_missing_table(tmp_path: Path, org: Any, postgres_dsn: str,
                                                           schema: str) -> None:
    sf = org.salesforce()
    for name in ("Acme", "Globex"):
        sf.Account.create({"Name": name})
    reachable = {"login_url": org.url, "ca_bundle": str(org.ca_path),
                 "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME, "password": PASSWORD}}
    old_raw = with_connections(demo_config(), postgres_dsn, schema, reachable)  # the schema does not exist
    old = write(tmp_path / "old.yaml", old_raw)
    new = write(tmp_path / "new.yaml", changed(
        lambda raw: fields(raw, "Account").append({"column": "fax", "field": "Fax"}), old_raw))
    result = CliRunner().invoke(app, ["mapping", "diff", old, new, "--count", "--json"])
    assert result.exit_code == 3, result.output
    assert json.loads(result.output)["objects"][0]["resync"] == {
        "inbound": {"scope": "all", "touches": "all Account records", "records": 2, "not_counted": None},
        "outbound": {"scope": "all", "touches": f"all rows of {schema}.accounts", "records": None,
                     "not_counted": f"postgres: table {schema}.accounts does not exist"},
    }


def test_without_count_nothing_is_contacted(tmp_path: Path) -> None:
    unreachable = {"login_url": "https://127.0.0.1:9",
                   "auth": {"flow": "password", "client_id": "x", "username": USERNAME, "password": PASSWORD}}
    raw = with_connections(demo_config(), "postgresql://nobody@127.0.0.1:1/none", "public", unreachable)
    old = write(tmp_path / "old.yaml", raw)
    new = write(tmp_path / "new.yaml", changed(add_fax, raw))
    result = CliRunner().invoke(app, ["mapping", "diff", old, new])
    assert result.exit_code == 3, result.output
    assert "not counted" not in result.output
