"""When a sink batch is complete (pure rule) and how the backlog upstream is counted."""

from __future__ import annotations

import pytest

from consumers.backlog import FillState, batch_complete, upstream_remainder


def state(size: int, since_first: float, since_last: float = 0.0, batch_size: int = 200) -> FillState:
    return FillState(size=size, batch_size=batch_size, since_first_s=since_first, since_last_arrival_s=since_last,
                     linger_s=0.2, stall_s=5.0)


def test_a_full_batch_goes_at_once() -> None:
    assert batch_complete(state(200, 0.0), None)


def test_within_the_linger_a_batch_waits_without_measuring() -> None:
    assert not batch_complete(state(1, 0.1), None)


def test_past_the_linger_a_batch_goes_when_nothing_is_waiting() -> None:
    assert batch_complete(state(37, 0.3), waiting=0)


def test_past_the_linger_a_trickle_goes_out() -> None:
    """A record or two in flight cannot fill the batch: waiting for them only adds latency."""
    assert batch_complete(state(3, 0.3), waiting=2)
    assert batch_complete(state(150, 0.3), waiting=49)


def test_past_the_linger_a_batch_keeps_filling_while_records_are_on_their_way() -> None:
    """The rule that makes 10,000 inserts 50 calls on a busy machine: no timer sends a partial batch."""
    for since_first in (0.3, 3.0, 60.0):
        assert not batch_complete(state(199, since_first, since_last=0.5), waiting=1)
        assert not batch_complete(state(20, since_first, since_last=0.5), waiting=5000)


def test_a_backlog_that_delivers_nothing_does_not_hold_the_batch_forever() -> None:
    assert batch_complete(state(10, 30.0, since_last=5.0), waiting=400)


def test_past_the_linger_the_backlog_must_be_measured() -> None:
    with pytest.raises(ValueError, match="backlog must be measured"):
        batch_complete(state(10, 0.3), None)


@pytest.mark.parametrize(("low", "high", "committed", "seen", "markers", "expected"), [
    (0, 100, 40, -1, False, 60),     # the processor committed 40: 60 to go
    (0, 100, 40, 89, False, 10),     # this sink already got a command of change 89
    (0, 100, -1, -1, False, 100),    # nothing committed yet: from the start of the log
    (50, 100, -1, -1, False, 50),    # ... which retention may have moved
    (0, 100, 100, 99, False, 0),     # all done
    (0, 101, 100, 99, True, 0),      # a transaction's commit marker is not a change
    (0, 101, 100, 99, False, 1),     # a non-transactional topic: one more change is coming
    (0, 150, 100, 99, True, 50),     # more than a marker: changes are waiting
])
def test_upstream_remainder(low: int, high: int, committed: int, seen: int, markers: bool, expected: int) -> None:
    assert upstream_remainder(low, high, committed, seen, markers) == expected
