"""Per-field versions: the pure rules that keep a retry from losing its fields or overwriting newer ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.versions import DELETED, advance, command_version, record_id, screen, screen_batch
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Direction, Source

T0 = datetime(2026, 11, 30, tzinfo=UTC)


def cmd(version: int, op: ApplyOperation = ApplyOperation.UPSERT, position: str | None = None,
        **values: Any) -> ApplyCommand:
    return ApplyCommand(target=ApplyTarget.SALESFORCE, object="Contact", operation=op, local_key="7", sfid=None,
                        values=values, fields=sorted(values), source=Source.POSTGRES, source_event_id=f"e{version}",
                        source_commit_ts=T0 + timedelta(seconds=version),
                        source_position=str(version) if position is None else position,
                        command_id=f"c{version}", trace_id="t")


def v(version: int) -> tuple[int, int]:
    return command_version(cmd(version))


def test_version_is_commit_time_then_position() -> None:
    assert command_version(cmd(3)) == (int((T0 + timedelta(seconds=3)).timestamp() * 1_000_000), 3)
    assert command_version(cmd(3, position="catchup:2026-11-30T00:00:00+00:00"))[1] == -1


def test_identity_is_the_sfid_inbound_and_the_local_key_outbound() -> None:
    c = cmd(1, Title="x")
    assert record_id(c, Direction.OUTBOUND) == ("Contact", "7")
    assert record_id(c, Direction.INBOUND) is None  # no sfid: not versioned


def test_a_retry_keeps_the_fields_it_alone_carries() -> None:
    stored = {"Title": v(2)}
    kept = screen(cmd(1, Title="old", Phone="1"), stored)
    assert kept is not None and kept.values == {"Phone": "1"} and kept.fields == ["Phone"]


def test_an_older_command_with_nothing_newer_to_say_is_superseded() -> None:
    assert screen(cmd(1, Title="old"), {"Title": v(2)}) is None


def test_a_command_already_written_is_not_written_again() -> None:
    """A replay after a crash: what the target holds since (a user's change among it) stays."""
    assert screen(cmd(2, Title="new"), {"Title": v(2)}) is None
    assert screen(cmd(2, ApplyOperation.DELETE), {DELETED: v(2)}) is None


def test_an_older_upsert_never_brings_back_a_deleted_record_and_an_older_delete_never_removes_a_newer_one() -> None:
    assert screen(cmd(1, Title="x"), {DELETED: v(2)}) is None
    assert screen(cmd(3, Title="x"), {DELETED: v(2)}) == cmd(3, Title="x")
    assert screen(cmd(1, ApplyOperation.DELETE), {"Title": v(2)}) is None
    assert screen(cmd(3, ApplyOperation.DELETE), {"Title": v(2)}) is not None


def test_advance_never_moves_a_version_back() -> None:
    assert advance({"Title": v(3)}, cmd(2, Title="x", Phone="1")) == {"Title": v(3), "Phone": v(2)}
    assert advance({}, cmd(4, ApplyOperation.DELETE)) == {DELETED: v(4)}


def test_a_batch_is_screened_in_order_against_its_own_earlier_commands() -> None:
    screened = screen_batch([cmd(2, Title="new"), cmd(1, Title="old", Phone="1"), cmd(1, Title="old")],
                            Direction.OUTBOUND, {})
    assert [c.values if c else None for c in screened.commands] == [{"Title": "new"}, {"Phone": "1"}, None]
    assert screened.superseded == 1
    versions = screened.record([None, None, None])
    assert versions == {("Contact", "7"): {"Title": v(2), "Phone": v(1)}}
    assert screened.record([None, object(), None]) == {("Contact", "7"): {"Title": v(2)}}  # type: ignore[list-item]
