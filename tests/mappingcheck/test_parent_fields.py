"""``mapping check`` of parent paths (``Owner.Name``): the pure rules over the emulator's describes, and the
command against the real emulator and PostgreSQL (the parent object is described too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.config import build_config
from sfsync.devstack.emulator import PASSWORD, USERNAME
from sfsync.emulator.schema import Schema
from sfsync.mappingcheck import Column, SfObject, Table, check_mapping
from sfsync.mappingcheck.rules import parent_objects

SCHEMA = Schema()


def describe(name: str) -> SfObject:
    return SfObject.from_describe(SCHEMA.objects[name].describe("59.0", SCHEMA.children(name)))


def mapping(obj: str, fields: list[dict[str, Any]]) -> Any:
    return build_config({"salesforce": {"auth": {"username": "u", "password": "p"}},
                         "objects": {obj: {"table": "t", "fields": fields}}}).objects


def run(field: str, column_type: str = "text", obj: str = "Contact",
        described: tuple[str, ...] = ("Contact", "User", "Account")) -> list[tuple[str, str | None, str]]:
    objects = mapping(obj, [{"column": "rep", "field": field, "direction": "to_local"}])
    table = Table("t", {"id": Column("id", "bigint"), "sfid": Column("sfid", "text"),
                        "rep": Column("rep", column_type)})
    describes = {n: describe(n) for n in (obj, *described)}
    report = check_mapping(objects, describes, {"t": table})
    return [(p.path, p.sf_field, p.message) for p in report.problems if "Local_Id__c" not in p.message]


def test_a_valid_path_has_no_problem() -> None:
    assert run("Owner.Name") == []
    assert run("account.industry") == []  # case-insensitive, as in Salesforce
    assert run("Owner.IsActive", "boolean") == []


def test_an_unknown_relationship_is_named_with_a_suggestion() -> None:
    [(path, where, message)] = run("Ownr.Name")
    assert (path, where) == ("objects.Contact.fields[0]", "Contact.Ownr.Name")
    assert message.startswith("Contact has no relationship Ownr (did you mean Owner?)")


def test_a_field_name_is_not_a_relationship() -> None:
    [(_, _, message)] = run("OwnerId.Name")
    assert "Contact has no relationship OwnerId" in message


def test_an_unknown_parent_field_is_named_with_a_suggestion() -> None:
    assert run("Owner.Nmae") == [("objects.Contact.fields[0]", "Contact.Owner.Nmae",
                                  "User (the parent Owner points to) has no field Nmae (did you mean Name?)")]


def test_the_parent_field_type_must_fit_the_column() -> None:
    [(path, where, message)] = run("Owner.IsActive", "integer")
    assert (path, where) == ("objects.Contact.fields[0]", "Contact.Owner.IsActive")
    assert message.startswith("type mismatch: boolean field into integer column rep")


def test_a_polymorphic_relationship_is_refused() -> None:
    [(_, _, message)] = run("Parent.Name", obj="Attachment")
    assert "Attachment.ParentId is polymorphic (it points to Account, Contact, Lead, Case)" in message


def test_a_parent_that_was_not_described_is_an_error() -> None:
    [(_, _, message)] = run("Owner.Name", described=())
    assert message.startswith("Salesforce has no object User (the parent Owner points to)")


def test_parent_objects_lists_what_still_needs_describing() -> None:
    objects = mapping("Contact", [{"column": "rep", "field": "Owner.Name", "direction": "to_local"},
                                  {"column": "ind", "field": "Account.Industry", "direction": "to_local"}])
    assert parent_objects(objects, {"Contact": describe("Contact")}) == {"User", "Account"}
    assert parent_objects(objects, {"Contact": describe("Contact"), "User": describe("User")}) == {"Account"}
    assert parent_objects(objects, {"Contact": None}) == set()


def write_config(path: Path, emulator: Any, dsn: str, schema: str, objects: dict[str, Any]) -> Path:
    raw = {"salesforce": {"login_url": emulator.url, "ca_bundle": str(emulator.ca_path),
                          "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME,
                                   "password": PASSWORD}},
           "postgres": {"dsn": dsn, "schema": schema}, "objects": objects}
    build_config(raw)  # valid as config: what is wrong only the org and the database show
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def contacts(postgres_dsn: str, schema: str) -> str:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".people (id bigint PRIMARY KEY, sfid text UNIQUE, last_name text, '
                     'rep text, active integer)')
    return schema


def test_the_command_describes_the_parent_and_reports_each_path(
        tmp_path: Path, org: Any, postgres_dsn: str, contacts: str) -> None:
    objects = {"Contact": {"table": "people", "fields": [
        {"column": "last_name", "field": "LastName"},
        {"column": "rep", "field": "Owner.Name", "direction": "to_local"},         # 1 fine
        {"column": "active", "field": "Owner.IsActive", "direction": "to_local"},  # 2 boolean into integer
        {"column": "last_name_2", "field": "Ownr.Name", "direction": "to_local"},  # 3 no relationship, column
    ]}}
    path = write_config(tmp_path / "parents.yaml", org, postgres_dsn, contacts, objects)
    result = CliRunner().invoke(app, ["mapping", "check", "--config", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("  objects.Contact.fields")]
    assert [line.split(": ", 1)[0] for line in lines] == [
        "  objects.Contact.fields[2] (Contact.Owner.IsActive)",
        "  objects.Contact.fields[3] (Contact.Ownr.Name)",
        "  objects.Contact.fields[3] (Contact.Ownr.Name)",
    ], result.output
    assert "type mismatch: boolean field into integer column active" in lines[0]
    assert "has no column last_name_2" in lines[1] and "has no relationship Ownr" in lines[2]
