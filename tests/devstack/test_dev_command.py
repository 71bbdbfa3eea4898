"""``sfsync dev``: ready quickly, endpoints usable, and no process left behind however it stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from confluent_kafka.admin import AdminClient

SFSYNC = str(Path(sys.executable).parent / "sfsync")
READY_LIMIT_S = 20.0


def start_dev(state_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str], float]:
    started = time.monotonic()
    proc = subprocess.Popen([SFSYNC, "dev", "--state-dir", str(state_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    endpoints = state_dir / "endpoints.json"
    while not endpoints.exists():
        if proc.poll() is not None:
            raise AssertionError(f"sfsync dev exited {proc.returncode}: {proc.stdout.read().decode()}")  # type: ignore[union-attr]
        if time.monotonic() - started > 60:
            proc.kill()
            raise AssertionError("sfsync dev never wrote endpoints.json")
        time.sleep(0.05)
    return proc, json.loads(endpoints.read_text()), time.monotonic() - started


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def assert_all_gone(procs: list[psutil.Process], timeout: float = 15.0) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_ready_fast_usable_and_stops_clean(tmp_path: Path, stop_signal: int) -> None:
    proc, endpoints, elapsed = start_dev(tmp_path / "state")
    try:
        assert elapsed < READY_LIMIT_S, f"dev stack took {elapsed:.1f} s"
        assert {"kafka", "postgres"} <= set(endpoints)
        with psycopg.connect(endpoints["postgres"]) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        topics = AdminClient({"bootstrap.servers": endpoints["kafka"]}).list_topics(timeout=10).topics
        assert "sfsync.changes.inbound" in topics and "sfsync.dlq.salesforce" in topics
        effective = (tmp_path / "state" / "sfsync.yaml").read_text()
        assert endpoints["kafka"] in effective
        # the effective config works with every other command
        listed = subprocess.run([SFSYNC, "topics", "list", "--config", str(tmp_path / "state" / "sfsync.yaml")],
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert "missing" not in listed.stdout
        children = descendants(proc.pid)
        assert len(children) >= 2  # broker + postgres (+ its workers)
    finally:
        proc.send_signal(stop_signal)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert_all_gone(children)
    assert not (tmp_path / "state" / "endpoints.json").exists()


def test_children_die_when_dev_is_killed(tmp_path: Path) -> None:
    proc, _, _ = start_dev(tmp_path / "state")
    children = descendants(proc.pid)
    proc.kill()
    proc.wait(10)
    assert_all_gone(children)
