"""The stall watchdog: the pure rule, the probe of what waits (real broker, a real group's committed
offsets) and the thread that exits. The worker exiting for real is in tests/processors/test_worker.py."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka_helpers import create_topic, produce

from processors.stall import StallWatch, WaitingProbe, watch_stall
from sfsync.config import KafkaConfig, build_config
from sfsync.health import RESTART_EXIT_CODE

Look = tuple[float, int, int, object]  # (now, waiting, events, what stalled() answers)


def _armed_at(t: float, looks: list[Look]) -> None:
    watch = StallWatch(after_s=10)
    watch.arm(t)
    assert [watch.stalled(now, waiting=w, events=e) for now, w, e, _ in looks] == [x for *_, x in looks]


def test_not_armed_never_stalls() -> None:
    watch = StallWatch(after_s=10)
    assert watch.stalled(100.0, waiting=5, events=0) is None
    assert watch.stalled(1_000.0, waiting=5, events=0) is None


def test_records_waiting_and_no_event_handled_for_the_timeout_is_a_stall() -> None:
    _armed_at(0.0, [(1.0, 5, 7, None),  # the first look after arming is progress
                    (10.9, 5, 7, None), (11.0, 5, 7, pytest.approx(10.0))])


def test_an_event_handled_or_nothing_waiting_is_progress() -> None:
    _armed_at(0.0, [(1.0, 5, 7, None),
                    (9.0, 5, 8, None),  # handled one: the clock starts again
                    (18.0, 5, 8, None),
                    (19.0, 0, 8, None),  # idle is not stalled
                    (28.0, 3, 8, None), (29.0, 3, 8, pytest.approx(10.0))])


def test_a_revocation_disarms_and_arming_again_starts_the_clock_afresh() -> None:
    watch = StallWatch(after_s=10)
    watch.arm(0.0)
    watch.stalled(1.0, waiting=5, events=7)
    watch.disarm()
    assert watch.stalled(50.0, waiting=5, events=7) is None  # recovering tables: not timed
    watch.arm(60.0)
    assert watch.stalled(61.0, waiting=5, events=7) is None
    assert watch.stalled(71.0, waiting=5, events=7) == pytest.approx(10.0)


@pytest.fixture
def kafka(kafka_config: dict[str, Any]) -> KafkaConfig:
    return build_config({"kafka": kafka_config}).kafka


def _commit(cfg: KafkaConfig, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer({"bootstrap.servers": cfg.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def test_the_probe_counts_what_the_partitions_hold_beyond_the_groups_committed_offsets(kafka: KafkaConfig) -> None:
    topic = create_topic(kafka, "stall-source", 3)
    produce(kafka, topic, [(0, b"k", b"v")] * 40 + [(1, b"k", b"v")] * 5)
    group = f"{kafka.topic_prefix}-stall-{uuid.uuid4().hex[:6]}"
    probe = WaitingProbe(kafka, group)
    try:
        everything = {(topic, 0), (topic, 1), (topic, 2)}
        assert probe.waiting(everything) == 45  # nothing committed: all of it
        _commit(kafka, group, {(topic, 0): 30, (topic, 1): 5})
        assert probe.waiting(everything) == 10
        assert probe.waiting({(topic, 1), (topic, 2)}) == 0  # only the partitions asked about count
        assert probe.waiting(set()) == 0
    finally:
        probe.close()


def test_the_thread_exits_with_75_once_stalled_and_not_before() -> None:
    """Phases by the watchdog's own looks, not by the clock: busy (an event handled between every two looks),
    idle (nothing waiting), then stalled (records waiting, nothing handled)."""
    watch = StallWatch(after_s=0.3)
    watch.arm(time.monotonic())
    phase = ["busy"]
    looks = [0]
    handled = [0]
    exits: list[int] = []
    exited = threading.Event()

    def probe() -> int:
        looks[0] += 1
        return 0 if phase[0] == "idle" else 4

    def events() -> int:
        if phase[0] == "busy":
            handled[0] += 1
        return handled[0]

    def exit(code: int) -> None:
        exits.append(code)
        exited.set()

    def after_looks(n: int) -> None:
        target = looks[0] + n
        while looks[0] < target and not exited.is_set():
            exited.wait(0.02)

    stop = threading.Event()
    thread = watch_stall(watch, probe, events, interval_s=0.05, exit=exit, stop=stop,
                         clock=time.monotonic)
    try:
        after_looks(20)  # about 1 s: over three times the timeout
        assert not exits
        phase[0] = "idle"
        after_looks(20)
        assert not exits
        phase[0] = "stalled"
        assert exited.wait(30)
        assert exits == [RESTART_EXIT_CODE]
    finally:
        stop.set()
        thread.join(5)
