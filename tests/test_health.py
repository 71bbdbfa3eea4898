"""/healthz and /readyz of a role: what they answer, over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests

from sfsync.health import RESTART_EXIT_CODE, Health, HealthServer, JoinWatch, exit_unless_gone, watch_join


@pytest.fixture
def served() -> Iterator[tuple[Health, str]]:
    health = Health("postgres-sink", checks=("target", "group"))
    server = HealthServer(health, "127.0.0.1", 0).start()
    try:
        yield health, server.url
    finally:
        server.close()


def get(url: str) -> tuple[int, dict[str, object]]:
    answer = requests.get(url, timeout=5)
    return answer.status_code, answer.json()


def test_alive_but_not_ready_until_every_check_holds(served: tuple[Health, str]) -> None:
    health, url = served
    assert get(url + "/healthz")[0] == 200
    status, body = get(url + "/readyz")
    assert status == 503 and body["checks"] == {"target": {"ok": False, "detail": "not yet"},
                                                "group": {"ok": False, "detail": "not yet"}}
    health.mark("target", True, "reachable")
    assert get(url + "/readyz")[0] == 503  # the group has not assigned partitions yet
    health.mark("group", True, "joined; 3 partition(s) assigned")
    status, body = get(url + "/readyz")
    assert status == 200 and body["ready"] is True and body["role"] == "postgres-sink"


def test_a_lost_target_makes_a_role_unready_not_dead(served: tuple[Health, str]) -> None:
    health, url = served
    health.mark("target", True)
    health.mark("group", True)
    health.mark("target", False, "PostgreSQL does not answer: OperationalError")
    assert get(url + "/readyz")[0] == 503
    assert get(url + "/healthz")[0] == 200


def test_a_silent_loop_is_not_alive() -> None:
    health = Health("processor", stale_after_s=0.0)
    health.beat()
    alive, why = health.alive()
    assert not alive and "silent" in why
    assert not health.ready()


def test_unknown_path_names_the_probes(served: tuple[Health, str]) -> None:
    status, body = get(served[1] + "/metricz")
    assert status == 404 and "/healthz" in str(body["error"])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_join_is_overdue_only_while_unassigned_past_the_timeout() -> None:
    clock = Clock()
    watch = JoinWatch(30.0, clock=clock)
    clock.now += 30.0
    assert watch.overdue() is None  # at the limit: still waiting
    watch.joined()
    clock.now += 1000.0
    assert watch.overdue() is None  # joined (an empty assignment counts): never overdue
    watch.joining("revocation")
    clock.now += 20.0
    watch.joining("revocation")  # a second revocation while joining does not restart the clock
    clock.now += 11.0
    why = watch.overdue()
    assert why is not None and "31 s since revocation" in why and str(RESTART_EXIT_CODE) in why


def test_from_start_the_first_join_is_timed_too() -> None:
    clock = Clock()
    watch = JoinWatch(5.0, clock=clock)
    clock.now += 6.0
    assert "since start" in (watch.overdue() or "")


def test_the_watchdog_exits_with_the_restart_code_once_overdue() -> None:
    clock = Clock()
    watch = JoinWatch(5.0, clock=clock)
    exited = threading.Event()
    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        exited.set()

    watch_join(watch, "processor", interval_s=0.01, exit=exit_)
    clock.now += 6.0
    assert exited.wait(30) and codes == [RESTART_EXIT_CODE]


def test_a_stop_that_hangs_ends_the_process_with_the_code() -> None:
    exited = threading.Event()
    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        exited.set()

    exit_unless_gone(0.05, 1, "test", exit=exit_)
    assert exited.wait(30) and codes == [1]
