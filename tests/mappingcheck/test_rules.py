"""The pure mapping check: rules over describe documents (the emulator's own, offline) and table definitions."""

from __future__ import annotations

from typing import Any

from sfsync.config import build_config
from sfsync.emulator.schema import Schema
from sfsync.mappingcheck import Column, Severity, SfObject, Table, check_mapping, problem_lines

SCHEMA = Schema()


def describe(name: str) -> SfObject:
    return SfObject.from_describe(SCHEMA.objects[name].describe("59.0", SCHEMA.children(name)))


def objects(fields: list[dict[str, Any]], **contact: Any) -> Any:
    return build_config({
        "salesforce": {"auth": {"username": "u", "password": "p"}},
        "objects": {"Contact": {"table": "contacts", "fields": fields, **contact},
                    "Account": {"table": "accounts", "fields": [{"column": "name", "field": "Name"}]}},
    }).objects


def table(table_name: str, /, **columns: str | tuple[str, int]) -> Table:
    cols = {"id": Column("id", "bigint"), "sfid": Column("sfid", "text")}
    for col, kind in columns.items():
        data_type, length = (kind, None) if isinstance(kind, str) else kind
        cols[col] = Column(col, data_type, length)
    return Table(table_name, cols)


def run(fields: list[dict[str, Any]], columns: dict[str, Any], **contact: Any) -> list[tuple[str, str, str]]:
    report = check_mapping(objects(fields, **contact), {"Contact": describe("Contact"), "Account": describe("Account")},
                           {"contacts": table("contacts", **columns), "accounts": table("accounts", name="text")})
    return [(p.path, p.severity.value, p.message) for p in report.problems]


def test_a_clean_mapping_has_no_problem() -> None:
    assert run([{"column": "email", "field": "Email"}, {"column": "account_id", "field": "AccountId",
                                                        "reference": "Account"}],
               {"email": "text", "account_id": "bigint"}) == []


def test_field_names_are_case_insensitive_as_in_salesforce() -> None:
    assert run([{"column": "email", "field": "email"}], {"email": "text"}) == []


def test_unrestricted_picklist_values_outside_the_list_are_a_warning() -> None:
    problems = run([{"column": "salutation", "field": "Salutation", "value_map": {"sir": "Sir"}}],
                   {"salutation": "text"})
    assert problems == [("objects.Contact.fields[0].value_map", "warning",
                         "maps to 'Sir', not an active value of the picklist Salutation: stored, but not offered "
                         "in Salesforce")]


def test_a_declared_type_turns_inbound_text_into_a_number_column_into_a_warning() -> None:
    fields = [{"column": "title", "field": "Title", "direction": "to_local"}]
    assert [p[:2] for p in run(fields, {"title": "integer"})] == [("objects.Contact.fields[0]", "error")]
    fields[0]["type"] = "integer"
    assert [p[:2] for p in run(fields, {"title": "integer"})] == [("objects.Contact.fields[0]", "warning")]


def test_a_varchar_column_shorter_than_the_field_fails_inbound() -> None:
    problems = run([{"column": "title", "field": "Title", "direction": "to_local"}],
                   {"title": ("character varying", 40)})
    assert problems == [("objects.Contact.fields[0]", "error", "Title holds up to 128 characters, column title is "
                         "character varying(40): longer values would fail their record")]


def test_numbers_write_into_text_fields_and_json_columns_are_not_judged() -> None:
    assert run([{"column": "title", "field": "Title"}, {"column": "phone", "field": "Phone"}],
               {"title": "integer", "phone": "jsonb"}) == [
        ("objects.Contact.fields[0]", "error", "type mismatch: string field into integer column title (to_local); "
         "set type to coerce, or change the column")]


def test_lookups_reference_the_right_object_and_a_mapped_one() -> None:
    wrong = run([{"column": "account_id", "field": "AccountId", "reference": "Contact"}], {"account_id": "bigint"})
    assert wrong == [("objects.Contact.fields[0].reference", "error", "AccountId points to Account, not Contact")]
    not_lookup = run([{"column": "title", "field": "Title", "reference": "Account"}], {"title": "bigint"})
    assert not_lookup[0][:2] == ("objects.Contact.fields[0].reference", "error")
    raw = run([{"column": "account_sfid", "field": "AccountId"}], {"account_sfid": "text"})
    assert raw == [("objects.Contact.fields[0].reference", "warning",
                    "AccountId points to Account, which is mapped: set reference: Account to translate ids through "
                    "the link (raw Salesforce ids are synced now)")]
    owner = run([{"column": "owner_sfid", "field": "OwnerId", "direction": "to_local"}], {"owner_sfid": "text"})
    assert owner == []  # raw ids of an unmapped object into a text column: intended


def test_keys_and_sfid_column() -> None:
    problems = run([{"column": "email", "field": "Email"}], {"email": "text"}, external_id_field="LastName")
    assert [p[0] for p in problems] == ["objects.Contact.external_id_field"]
    short_sfid = Table("contacts", {"id": Column("id", "bigint"), "email": Column("email", "text"),
                                    "sfid": Column("sfid", "character varying", 15)})
    report = check_mapping(objects([{"column": "email", "field": "Email"}]), {"Contact": describe("Contact")},
                           {"contacts": short_sfid})
    assert [(p.path, p.message) for p in report.problems if p.path.startswith("objects.Contact")] == [
        ("objects.Contact.sfid_column", "column sfid is character varying(15); Salesforce ids have 18 characters")]


def test_a_match_key_names_a_column_of_the_table_and_a_field_of_the_object() -> None:
    fields = [{"column": "email", "field": "Email"}]
    assert run(fields, {"email": "text", "last_name": "text"},
               match_key=[{"column": "email", "field": "Email"}, {"column": "last_name", "field": "LastName"}]) == []
    problems = run(fields, {"email": "text"}, match_key={"column": "emial", "field": "Emial"})
    assert [(p[0], p[1]) for p in problems] == [("objects.Contact.match_key[0].field", "error"),
                                                ("objects.Contact.match_key[0].column", "error")]
    assert "Contact has no field Emial" in problems[0][2] and "no column emial" in problems[1][2]


def test_missing_object_table_and_skipped_sides() -> None:
    mapping = objects([{"column": "email", "field": "Email"}])
    report = check_mapping(mapping, {"Contact": None, "Account": describe("Account")}, {"contacts": None,
                                                                                        "accounts": None})
    assert [p.path for p in report.errors] == ["objects.Contact", "objects.Contact.table", "objects.Account.table"]
    assert check_mapping(mapping, None, None).problems == []  # nothing reachable: nothing judged


def test_inbound_filter_names_and_the_email_field_are_checked_against_the_describe() -> None:
    problems = run([{"column": "email", "field": "Email"}], {"email": "text"},
                   filters={"to_local": "Emial != null or Title = 'x'", "exclude_domains": ["example.org"]})
    assert problems == [("objects.Contact.filters.to_local", "error",
                         "names Emial, which Contact does not have (did you mean Email?)")]
    problems = run([{"column": "bday", "field": "Birthdate"}], {"bday": "date"},
                   filters={"email_field": "Birthdate", "exclude_emails": ["a@b.org"]})
    assert problems == [("objects.Contact.filters.email_field", "error", "Birthdate is a date field, not an email "
                         "address")]


def test_report_lines_put_errors_first_then_warnings() -> None:
    report = check_mapping(objects([{"column": "salutation", "field": "Salutation", "value_map": {"x": "X"}},
                                    {"column": "nope", "field": "Nope__c"}]),
                           {"Contact": describe("Contact"), "Account": describe("Account")}, None)
    assert [p.severity for p in report.problems] == [Severity.WARNING, Severity.ERROR]
    assert problem_lines(report) == [
        "the mapping does not fit the org or the database (1 error):",
        "  objects.Contact.fields[1] (Contact.Nope__c): Contact has no field Nope__c",
        "  warning: objects.Contact.fields[0].value_map (Contact.Salutation): maps to 'X', not an active value of "
        "the picklist Salutation: stored, but not offered in Salesforce",
    ]
