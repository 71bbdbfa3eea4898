"""Record filters in the pure mapping: a filtered record is a :class:`Filtered` (a ``Skipped``), never a write."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from processors.mapping import Filtered, Mapped, Skipped, map_inbound, map_outbound
from sfsync.config import build_config

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SFID = "003000000000001AAA"


def cfg(**filters: Any) -> Any:
    return build_config({
        "salesforce": {"auth": {"username": "u", "password": "p"}},
        "objects": {"Contact": {"table": "contacts", "filters": filters, "fields": [
            {"column": "email", "field": "Email"},
            {"column": "title", "field": "Title"},
            {"column": "vip", "field": "VIP__c", "direction": "to_local"},
        ]}},
    })


def sf(op: str = "create", sfid: str = SFID, **values: Any) -> Any:
    from sfsync.records import ChangeEvent

    return ChangeEvent(source="salesforce", object="Contact", operation=op, commit_ts=NOW, source_position="7",
                       sfid=sfid, changed_fields=list(values), values=values)


def pg(op: str = "insert", local_key: str = "42", **values: Any) -> Any:
    from sfsync.records import ChangeEvent

    operation = {"insert": "create", "update": "update", "delete": "delete"}[op]
    return ChangeEvent(source="postgres", object="Contact", entity="contacts", operation=operation, commit_ts=NOW,
                       source_position="9", local_key=local_key, changed_fields=list(values), values=values)


def test_a_record_outside_the_inbound_condition_is_filtered_with_its_rule() -> None:
    c = cfg(to_local="Email != null and not Email endswith '@example.org'")
    result = map_inbound(sf(Email="bob@example.org", Title="x"), c)
    assert result == Filtered("Contact: it does not match filters.to_local", "objects.Contact.filters.to_local")
    assert isinstance(result, Skipped)  # what a caller that knows only Skipped counts it as
    assert isinstance(map_inbound(sf(Email="ada@acme.com", Title="x"), c), Mapped)
    assert isinstance(map_inbound(sf("update", Title="x"), c), Mapped)  # an update that does not carry Email: unknown
    # a create (or undelete) event carries every field that has a value: one it does not carry is null
    assert isinstance(map_inbound(sf(Title="x"), c), Filtered)
    assert isinstance(map_inbound(sf("undelete", Title="x"), c), Filtered)


def test_the_outbound_condition_reads_columns() -> None:
    c = cfg(to_salesforce="title != 'internal' and id != '0'")
    assert map_outbound(pg(email="a@b.org", title="internal", id="42"), c) == Filtered(
        "Contact: it does not match filters.to_salesforce", "objects.Contact.filters.to_salesforce")
    assert isinstance(map_outbound(pg(email="a@b.org", title="boss", id="42"), c), Mapped)


def test_an_excluded_domain_is_never_written_either_way() -> None:
    c = cfg(exclude_domains=["example.org"], exclude_emails=["ceo@acme.com"])
    inbound = map_inbound(sf(Email="x@mail.example.org", Title="t"), c)
    outbound = map_outbound(pg(email="X@Example.org", title="t"), c)
    assert isinstance(inbound, Filtered) and inbound.rule == "objects.Contact.filters.exclude_domains"
    assert isinstance(outbound, Filtered) and outbound.rule == "objects.Contact.filters.exclude_domains"
    assert map_outbound(pg(email="ceo@acme.com"), c) == Filtered("Contact: its email address is excluded",
                                                                  "objects.Contact.filters.exclude_emails")
    assert isinstance(map_outbound(pg(email="ceo@acme.org"), c), Mapped)


def test_excluded_ids_cover_deletes_too() -> None:
    c = cfg(exclude_ids=[SFID[:15], "42"])
    assert isinstance(map_inbound(sf("delete"), c), Filtered)
    assert isinstance(map_outbound(pg("delete"), c), Filtered)
    assert isinstance(map_inbound(sf(Title="x"), c), Filtered)
    assert isinstance(map_outbound(pg(local_key="43", email="a@b.org", sfid=SFID), c), Filtered)  # by sfid column
    assert isinstance(map_inbound(sf("delete", sfid="003000000000002AAA"), c), Mapped)


def test_deletes_pass_conditions_they_cannot_be_judged_by() -> None:
    c = cfg(to_local="Email endswith '@acme.com'", to_salesforce="email endswith '@acme.com'")
    assert isinstance(map_inbound(sf("delete"), c), Mapped)
    assert isinstance(map_outbound(pg("delete"), c), Mapped)


def test_no_filters_no_change() -> None:
    assert isinstance(map_inbound(sf(Email="bob@example.org"), cfg()), Mapped)
