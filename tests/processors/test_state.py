"""The processor's record state: its codec and the redelivery decision (pure, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from field_value_strategies import field_values, same_value
from hypothesis import given
from hypothesis import strategies as st

from processors.state import SyncedState, dump_state, is_redelivery, load_state, next_output
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Source

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def command(op: ApplyOperation = ApplyOperation.UPSERT, **values: Any) -> ApplyCommand:
    return ApplyCommand(command_id="c1", target=ApplyTarget.SALESFORCE, operation=op, object="Contact",
                        local_key="7", values=values, fields=sorted(values), source=Source.POSTGRES,
                        source_event_id="e1", trace_id="t1", source_commit_ts=NOW)


@given(st.dictionaries(st.text(min_size=1, max_size=8), field_values, max_size=6), st.text(min_size=1) | st.none())
def test_state_round_trips_every_field_value(values: dict[str, Any], event_id: str | None) -> None:
    back = load_state(dump_state(SyncedState(values, event_id)))
    assert back is not None and back.event_id == event_id and back.values.keys() == values.keys()
    assert all(same_value(back.values[k], v) for k, v in values.items())


def test_a_record_never_seen_has_no_state() -> None:
    assert load_state(None) is None
    assert not is_redelivery(None, "e1")


def test_first_change_is_sent_in_full_and_becomes_the_state() -> None:
    sent, state = next_output(command(Title="A", Phone="1"), None, "e1")
    assert sent == command(Title="A", Phone="1")
    assert state == SyncedState({"Title": "A", "Phone": "1"}, "e1")


def test_an_echo_of_synced_values_is_a_no_op() -> None:
    sent, state = next_output(command(Title="A"), SyncedState({"Title": "A"}, "e0"), "e2")
    assert sent is None and state == SyncedState({"Title": "A"}, "e2")


def test_only_changed_fields_are_sent() -> None:
    sent, state = next_output(command(Title="A", Phone="2"), SyncedState({"Title": "A", "Phone": "1"}, "e0"), "e2")
    assert sent is not None and sent.values == {"Phone": "2"} and sent.fields == ["Phone"]
    assert state.values == {"Title": "A", "Phone": "2"}


def test_the_change_that_set_the_state_is_resent_in_full() -> None:
    """A redelivery of the state's own change: its output may have been lost in a crash."""
    state = SyncedState({"Title": "A", "Phone": "1"}, "e1")
    sent, after = next_output(command(Title="A", Phone="1"), state, "e1")
    assert sent == command(Title="A", Phone="1") and after == state


def test_a_delete_always_goes_through_and_clears_the_state() -> None:
    sent, state = next_output(command(ApplyOperation.DELETE), SyncedState({"Title": "A"}, "e0"), "e3")
    assert sent is not None and sent.operation is ApplyOperation.DELETE
    assert state == SyncedState({}, "e3")
