"""Sink acknowledgements of the control topic as pure functions: their keys, who is live, who took a record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sfsync.config import build_config
from sfsync.operations.acks import (
    ControlPosition,
    ack_key,
    instance_id,
    is_live,
    judge,
    parse_ack_key,
)
from sfsync.operations.control import ControlFollower, ControlScope, parse_suspension_key, suspension_key
from sfsync.records import ControlAction, ControlRecord, Direction, SinkAck
from sfsync.serde import Serde

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AT = ControlPosition(partition=0, offset=41)


def ack(instance: str, applied: dict[str, int], age_s: float = 0.0, *, beat_ms: int = 5_000,
        direction: Direction = Direction.INBOUND) -> SinkAck:
    return SinkAck(direction=direction, sink="postgres", instance=instance, applied=applied, beat_ms=beat_ms,
                   ts=NOW - timedelta(seconds=age_s))


def test_ack_keys_round_trip_and_other_keys_are_not_acks() -> None:
    key = ack_key(Direction.OUTBOUND, "host-1-ab12")
    assert key == "ack:outbound:host-1-ab12"
    assert parse_ack_key(key) == (Direction.OUTBOUND, "host-1-ab12")
    assert parse_ack_key("ack:inbound:h:with:colons") == (Direction.INBOUND, "h:with:colons")
    for other in ("inbound", "inbound:Contact", suspension_key(Direction.INBOUND, "Contact", "Title"),
                  "ack:sideways:h", "ack:inbound:", "ack:"):
        assert parse_ack_key(other) is None, other


def test_pause_readers_do_not_parse_ack_keys() -> None:
    for direction in Direction:
        key = ack_key(direction, "host-1-ab12")
        assert ControlScope.parse(key) is None
        assert parse_suspension_key(key, direction) is None


def test_instance_ids_name_the_host_and_differ_per_runner() -> None:
    import os
    import socket

    a, b = instance_id(), instance_id()
    assert a != b
    assert a.startswith(f"{socket.gethostname()}-{os.getpid()}-")


def test_an_instance_is_live_for_three_of_its_beats() -> None:
    assert is_live(ack("a", {}, age_s=15.0), NOW)
    assert not is_live(ack("a", {}, age_s=15.1), NOW)
    assert is_live(ack("a", {}, age_s=50.0, beat_ms=20_000), NOW)  # its own interval counts
    assert is_live(ack("a", {}, age_s=-5.0), NOW)  # a clock ahead of the reader's


def test_judge_sorts_instances_into_acknowledged_pending_and_stale() -> None:
    acks = [
        ack("b-took-it", {"0": 42}),
        ack("a-took-later-too", {"0": 50}),
        ack("c-one-short", {"0": 41}),  # has the records below 41, not 41 itself
        ack("d-starting", {}),
        ack("e-other-partition", {"1": 99}),
        ack("f-killed", {"0": 10}, age_s=3600),
        ack("g-outbound", {}, direction=Direction.OUTBOUND),  # another direction: not counted
    ]
    report = judge(acks, Direction.INBOUND, AT, NOW)
    assert [a.instance for a in report.acknowledged] == ["a-took-later-too", "b-took-it"]
    assert [a.instance for a in report.pending] == ["c-one-short", "d-starting", "e-other-partition"]
    assert [a.instance for a in report.stale] == ["f-killed"]
    assert not report.done


def test_done_when_every_live_instance_took_it_or_none_runs_but_only_once_read_to_the_end() -> None:
    assert judge([ack("a", {"0": 42}), ack("old", {}, age_s=60)], Direction.INBOUND, AT, NOW).done
    nobody = judge([], Direction.INBOUND, AT, NOW)
    assert nobody.done and nobody.acknowledged == nobody.pending == nobody.stale == ()
    assert not judge([], Direction.INBOUND, AT, NOW, complete=False).done


def test_sink_ack_validates() -> None:
    with pytest.raises(ValueError, match="instance"):
        ack("", {})
    with pytest.raises(ValueError, match="beat_ms"):
        ack("a", {}, beat_ms=0)
    assert ack("a", {"3": 7}).applied_offset(3) == 7 and ack("a", {}).applied_offset(0) == 0


def test_follower_counts_control_changes_but_every_record_moves_its_position() -> None:
    """Other instances' acknowledgements move a sink's position but are no control change: only a change makes
    it acknowledge at once (else every beat of one instance would make every other one write a record)."""
    cfg = build_config({"kafka": {"bootstrap_servers": "127.0.0.1:9", "topic_prefix": "t"}})
    serde = Serde.from_config(cfg.kafka)
    follower = ControlFollower(cfg.kafka, "test-sink")  # not started: nothing connects
    try:
        pause = serde.encode(ControlRecord(direction=Direction.INBOUND, action=ControlAction.PAUSE,
                                           requested_by="ops"), "t.control")
        follower._apply(b"inbound", pause, 0, 0)
        assert follower.state.direction_paused(Direction.INBOUND)
        assert (dict(follower.state.position), follower.state.changes) == ({0: 1}, 1)
        follower._apply(ack_key(Direction.INBOUND, "x").encode(), serde.encode(ack("x", {"0": 1}), "t.control"), 0, 1)
        follower._apply(b"field:inbound:Contact.Title", None, 0, 2)
        assert (dict(follower.state.position), follower.state.changes) == ({0: 3}, 1)
        assert follower.state.direction_paused(Direction.INBOUND)
        follower._apply(b"inbound", None, 0, 3)  # a tombstone of a scope is a change too
        assert (dict(follower.state.position), follower.state.changes) == ({0: 4}, 2)
        assert not follower.state.direction_paused(Direction.INBOUND)
    finally:
        follower.close()
