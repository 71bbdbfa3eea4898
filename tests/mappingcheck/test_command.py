"""``sfsync mapping check`` and the start-up gate of every role, against the real emulator and PostgreSQL.

The bad mapping holds one of each problem the check knows; the fixed one passes; a role started with the
bad one refuses to start and prints the same report.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.config import build_config
from sfsync.database.schema import init_schema
from sfsync.devstack.emulator import PASSWORD, USERNAME
from sfsync.devstack.stack import demo_config

HANG_GUARD_S = 120  # only for a process that never exits; nothing asserts on speed

TABLES = """
CREATE TABLE {s}.people (id bigint PRIMARY KEY, sfid text UNIQUE, first_name varchar(100), last_name text,
  email text, title text, full_name text, interests text, mailing text, secret text, notes text, owner_id bigint);
CREATE TABLE {s}.orgs (id bigint PRIMARY KEY, sfid text UNIQUE, name text, employees text);
CREATE TABLE {s}.leads (id bigint PRIMARY KEY, sfid text UNIQUE, company text, last_name text, status text);
CREATE TABLE {s}.files (id bigint PRIMARY KEY, sfid text UNIQUE, name text, body text);
"""

BAD_OBJECTS: dict[str, Any] = {
    "Contact": {"table": "people", "fields": [
        {"column": "first_name", "field": "FirstName"},             # 0 varchar(100) into a 40-character field
        {"column": "last_name", "field": "LastName"},               # 1 fine
        {"column": "email", "field": "Emial"},                      # 2 unknown Salesforce field
        {"column": "nickname", "field": "Title"},                   # 3 unknown local column
        {"column": "full_name", "field": "Name"},                   # 4 read-only field written
        {"column": "interests", "field": "Interests__c"},           # 5 multipicklist
        {"column": "mailing", "field": "MailingAddress", "direction": "to_local"},  # 6 address compound
        {"column": "secret", "field": "Secret__c"},                 # 7 encrypted text
        {"column": "notes", "field": "Rich_Notes__c"},              # 8 rich text
        {"column": "owner_id", "field": "OwnerId", "direction": "to_local"},  # 9 lookup to unmapped User
    ]},
    "Account": {"table": "orgs", "fields": [
        {"column": "name", "field": "Name"},
        {"column": "employees", "field": "NumberOfEmployees"},      # 1 text column into a number field
    ]},
    "Lead": {"table": "leads", "external_id_field": "Email", "fields": [  # key field not an external id
        {"column": "company", "field": "Company"},
        {"column": "last_name", "field": "LastName"},
        {"column": "status", "field": "Status", "value_map": {"open": "Open"}},  # 2 not a picklist value
    ]},
    "Attachment": {"table": "files", "fields": [                   # no Local_Id__c: missing key field
        {"column": "name", "field": "Name"},
        {"column": "body", "field": "Body"},                        # 1 base64
    ]},
}

#: (entry path, Salesforce field or None, a word of the reason) of every problem in BAD_OBJECTS
EXPECTED = [
    ("objects.Contact.fields[0]", "Contact.FirstName", "longer than FirstName allows (40)"),
    ("objects.Contact.fields[2]", "Contact.Emial", "Contact has no field Emial (did you mean Email?)"),
    ("objects.Contact.fields[3]", "Contact.Title", "has no column nickname"),
    ("objects.Contact.fields[4]", "Contact.Name", "Name is read-only"),
    ("objects.Contact.fields[5]", "Contact.Interests__c", "type multipicklist is not supported"),
    ("objects.Contact.fields[6]", "Contact.MailingAddress", "type address is not supported"),
    ("objects.Contact.fields[7]", "Contact.Secret__c", "type encryptedstring is not supported"),
    ("objects.Contact.fields[8]", "Contact.Rich_Notes__c", "rich text"),
    ("objects.Contact.fields[9].reference", "Contact.OwnerId", "points to User, which is not mapped"),
    ("objects.Account.fields[1]", "Account.NumberOfEmployees", "type mismatch: text column employees into int"),
    ("objects.Lead.external_id_field", "Lead.Email", "is not an external id field"),
    ("objects.Lead.fields[2].value_map", "Lead.Status", "not a value of the restricted picklist Status"),
    ("objects.Attachment.external_id_field", "Attachment.Local_Id__c", "Attachment has no field Local_Id__c"),
    ("objects.Attachment.fields[1]", "Attachment.Body", "type base64 is not supported"),
]


def fixed_objects() -> dict[str, Any]:
    objects = copy.deepcopy(BAD_OBJECTS)
    contact = objects["Contact"]["fields"]
    contact[0]["direction"] = "to_local"
    contact[2]["field"] = "Email"
    contact[3]["column"] = "title"
    contact[4]["direction"] = "to_local"
    objects["Contact"]["fields"] = contact[:5]
    objects["Account"]["fields"][1].update(direction="to_local")
    objects["Lead"]["external_id_field"] = "Local_Id__c"
    objects["Lead"]["fields"][2]["value_map"] = {"open": "Open - Not Contacted"}
    del objects["Attachment"]
    return objects


def write_config(path: Path, emulator: Any, dsn: str, schema: str, objects: dict[str, Any]) -> Path:
    raw = {
        "salesforce": {"login_url": emulator.url, "ca_bundle": str(emulator.ca_path),
                       "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME,
                                "password": PASSWORD}},
        "postgres": {"dsn": dsn, "schema": schema},
        "objects": objects,
    }
    build_config(raw)  # the config itself is valid: every problem here is one only the org or the database shows
    path.write_text(yaml.safe_dump(raw))
    return path


def summary_rows(output: str) -> dict[str, list[str]]:
    """The summary table's rows: object -> table, fields, to salesforce, to local, errors, warnings, state."""
    return {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in output.splitlines() if line.count("│") > 5}


@pytest.fixture
def tables(postgres_dsn: str, schema: str) -> str:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(TABLES.format(s=f'"{schema}"'))
    return schema


def test_every_problem_is_reported_with_its_entry_path_and_exit_2(
        tmp_path: Path, org: Any, postgres_dsn: str, tables: str) -> None:
    path = write_config(tmp_path / "bad.yaml", org, postgres_dsn, tables, BAD_OBJECTS)
    result = CliRunner().invoke(app, ["mapping", "check", "--config", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"the mapping does not fit the org or the database ({len(EXPECTED)} errors):"
    for entry, sf_field, reason in EXPECTED:
        hits = [line for line in lines if line.startswith(f"  {entry} ({sf_field}): ")]
        assert len(hits) == 1 and reason in hits[0], (entry, reason, result.output)
    assert len([line for line in lines if line.startswith("  objects.")]) == len(EXPECTED), result.output


def test_the_fixed_mapping_passes_with_a_summary(
        tmp_path: Path, org: Any, postgres_dsn: str, tables: str) -> None:
    path = write_config(tmp_path / "fixed.yaml", org, postgres_dsn, tables, fixed_objects())
    result = CliRunner().invoke(app, ["mapping", "check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "mapping fits" in result.output
    assert summary_rows(result.output) == {
        "Contact": ["people", "5", "3", "5", "0", "0", "ok"],
        "Account": ["orgs", "2", "1", "2", "0", "0", "ok"],
        "Lead": ["leads", "3", "3", "3", "0", "0", "ok"],
    }


def test_a_role_with_the_bad_mapping_refuses_to_start_and_prints_the_same_report(
        tmp_path: Path, org: Any, postgres_dsn: str, tables: str) -> None:
    path = write_config(tmp_path / "bad.yaml", org, postgres_dsn, tables, BAD_OBJECTS)
    checked = CliRunner().invoke(app, ["mapping", "check", "--config", str(path)])
    role = subprocess.run([sys.executable, "-m", "sfsync", "run", "postgres-sink", "--config", str(path),
                           "--health-port", "0"], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert role.returncode == 2, role.stderr
    expected = checked.output.splitlines()
    printed = [line for line in role.stderr.splitlines() if not line[:4].isdigit()]  # not the log lines
    assert printed[0] == "postgres-sink refuses to start: " + expected[0]
    assert printed[1:] == expected[1:]


def test_the_demo_mapping_fits_the_emulator_and_the_demo_tables(
        tmp_path: Path, org: Any, postgres_dsn: str, schema: str) -> None:
    raw = demo_config()
    cfg = build_config({**raw, "postgres": {"dsn": postgres_dsn, "schema": schema}})
    init_schema(cfg, demo=True)
    path = write_config(tmp_path / "demo.yaml", org, postgres_dsn, schema, raw["objects"])
    result = CliRunner().invoke(app, ["mapping", "check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert summary_rows(result.output) == {
        "Account": ["accounts", "4", "4", "4", "0", "0", "ok"],
        "Contact": ["contacts", "6", "6", "6", "0", "0", "ok"],
        "Case": ["cases", "6", "6", "6", "0", "0", "ok"],
    }
    assert "warning:" not in result.output


def test_an_unreachable_side_is_named_and_exits_1(tmp_path: Path, org: Any, postgres_dsn: str, tables: str) -> None:
    path = write_config(tmp_path / "fixed.yaml", org, "postgresql://nobody@127.0.0.1:1/none", tables,
                        fixed_objects())
    result = CliRunner().invoke(app, ["mapping", "check", "--config", str(path)])
    assert result.exit_code == 1, result.output
    assert "not checked: postgres: cannot read the table definitions" in result.output


def test_export_writes_the_effective_mapping_that_loads_back_the_same(tmp_path: Path) -> None:
    raw = demo_config()
    raw["objects"]["Contact"]["filters"] = {"exclude_domains": ["example.org"], "to_local": "Email != null"}
    src = tmp_path / "in.yaml"
    src.write_text(yaml.safe_dump(raw))
    out = tmp_path / "mapping.yaml"
    result = CliRunner().invoke(app, ["mapping", "export", "--config", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    exported = yaml.safe_load(out.read_text())
    assert exported["objects"]["Contact"]["delete_policy"] == "propagate"  # defaults spelled out
    assert exported["objects"]["Contact"]["filters"]["exclude_domains"] == ["example.org"]
    again = build_config({**raw, "objects": exported["objects"]})
    assert again.objects == build_config(raw).objects
