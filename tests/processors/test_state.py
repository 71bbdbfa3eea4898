"""The processor's record state: its codec and the redelivery decision (pure, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from field_value_strategies import field_values, same_value
from hypothesis import given
from hypothesis import strategies as st

from processors.state import SourcePosition, SyncedState, dump_state, is_redelivery, load_state, next_output
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Source

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def at(offset: int, partition: int = 0) -> SourcePosition:
    return SourcePosition(partition, offset)


def command(op: ApplyOperation = ApplyOperation.UPSERT, **values: Any) -> ApplyCommand:
    return ApplyCommand(command_id="c1", target=ApplyTarget.SALESFORCE, operation=op, object="Contact",
                        local_key="7", values=values, fields=sorted(values), source=Source.POSTGRES,
                        source_event_id="e1", trace_id="t1", source_commit_ts=NOW)


positions = st.builds(SourcePosition, st.integers(0, 10_000), st.integers(0, 2**63 - 1)) | st.none()


@given(st.dictionaries(st.text(min_size=1, max_size=8), field_values, max_size=6), st.text(min_size=1) | st.none(),
       positions)
def test_state_round_trips_every_field_value(values: dict[str, Any], event_id: str | None,
                                             position: SourcePosition | None) -> None:
    back = load_state(dump_state(SyncedState(values, event_id, position)))
    assert back is not None and back.event_id == event_id and back.position == position
    assert back.values.keys() == values.keys()
    assert all(same_value(back.values[k], v) for k, v in values.items())


def test_an_entry_written_before_positions_were_stored_still_loads() -> None:
    old = b'{"v": {"Title": {"value": "A", "logical": null}}, "e": "e1"}'
    assert load_state(old) == SyncedState({"Title": "A"}, "e1", None)


def test_a_record_never_seen_has_no_state() -> None:
    assert load_state(None) is None
    assert not is_redelivery(None, "e1", at(0))


def test_first_change_is_sent_in_full_and_becomes_the_state() -> None:
    sent, state = next_output(command(Title="A", Phone="1"), None, "e1", at(5))
    assert sent == command(Title="A", Phone="1")
    assert state == SyncedState({"Title": "A", "Phone": "1"}, "e1", at(5))


def test_an_echo_of_synced_values_is_a_no_op_and_stores_nothing() -> None:
    sent, state = next_output(command(Title="A"), SyncedState({"Title": "A"}, "e0", at(4)), "e2", at(5))
    assert sent is None and state is None


def test_only_changed_fields_are_sent() -> None:
    sent, state = next_output(command(Title="A", Phone="2"), SyncedState({"Title": "A", "Phone": "1"}, "e0", at(4)),
                              "e2", at(5))
    assert sent is not None and sent.values == {"Phone": "2"} and sent.fields == ["Phone"]
    assert state == SyncedState({"Title": "A", "Phone": "2"}, "e2", at(5))


def test_every_change_at_or_below_the_stored_position_is_resent_in_full_and_keeps_the_state() -> None:
    """After a crash the state may hold several changes whose outputs were lost: each is sent again with
    its own values (even where they equal the state, or are older than it), and the state stays the newest."""
    state = SyncedState({"FirstName": "Ada", "Title": "T2", "Phone": "555"}, "e3", at(12))
    for offset, cmd in ((10, command(FirstName="Ada", Title="T1")), (11, command(Title="T2")),
                        (12, command(Phone="555"))):
        assert next_output(cmd, state, f"e{offset}", at(offset)) == (cmd, None)
    assert is_redelivery(state, "e13", at(12)) and not is_redelivery(state, "e13", at(13))


def test_a_position_on_another_partition_is_not_compared() -> None:
    state = SyncedState({"Title": "A"}, "e1", at(50, partition=1))
    assert not is_redelivery(state, "e2", at(3, partition=0))
    sent, after = next_output(command(Title="A"), state, "e2", at(3, partition=0))
    assert sent is None and after is None


def test_an_old_entry_treats_only_its_own_change_as_a_redelivery() -> None:
    state = SyncedState({"Title": "A", "Phone": "1"}, "e1")
    sent, after = next_output(command(Title="A", Phone="1"), state, "e1", at(7))
    assert sent == command(Title="A", Phone="1") and after is None
    assert next_output(command(Title="A"), state, "e0", at(6)) == (None, None)


def test_a_delete_always_goes_through_and_clears_the_state() -> None:
    sent, state = next_output(command(ApplyOperation.DELETE), SyncedState({"Title": "A"}, "e0", at(1)), "e3", at(2))
    assert sent is not None and sent.operation is ApplyOperation.DELETE
    assert state == SyncedState({}, "e3", at(2))
