"""The processor maps a parent path (``Owner.Name``) the producer resolved like any other field (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from processors.mapping import Mapped, Skipped, map_inbound
from sfsync.config import build_config
from sfsync.records import ChangeEvent, Operation, Source

CFG = build_config({
    "salesforce": {"auth": {"username": "u", "password": "p"}},
    "objects": {"Contact": {"table": "contacts", "fields": [
        {"column": "last_name", "field": "LastName"},
        {"column": "assigned_rep", "field": "Owner.Name", "direction": "to_local"}]}},
})


def event(values: dict[str, object], changed: list[str]) -> ChangeEvent:
    return ChangeEvent(source=Source.SALESFORCE, object="Contact", operation=Operation.UPDATE,
                       commit_ts=datetime(2026, 1, 1, tzinfo=UTC), source_position="1", sfid="0038d0000000004AAA",
                       values=values, changed_fields=changed)  # type: ignore[arg-type]


def test_a_resolved_path_lands_in_its_column() -> None:
    result = map_inbound(event({"OwnerId": "0058d0000000002AAA", "Owner.Name": "Ann Rep"},
                               ["OwnerId", "Owner.Name"]), CFG)
    assert isinstance(result, Mapped)
    assert result.command.values == {"assigned_rep": "Ann Rep"}
    assert result.unmapped_fields == ["OwnerId"]


def test_a_reference_change_without_the_path_maps_nothing() -> None:
    assert isinstance(map_inbound(event({"OwnerId": "0058d0000000002AAA"}, ["OwnerId"]), CFG), Skipped)
