"""``sfsync dev``: "ready" means ready, endpoints usable, and no process left behind however it stops.

How fast it gets ready, and how fast the first change after "ready" arrives, is measured in
``bench/ready.py``; here only what "ready" promises is checked.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests
from confluent_kafka.admin import AdminClient
from simple_salesforce import Salesforce

from sfsync.roles import ROLES

SFSYNC = str(Path(sys.executable).parent / "sfsync")
#: how long to wait for "ready" at all (not a speed check: a loaded machine may be slow)
READY_WAIT_S = 240.0
CONSUMER_ROLES = ("processor", "postgres-sink", "salesforce-sink")


def start_dev(state_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str], float]:
    started = time.monotonic()
    proc = subprocess.Popen([SFSYNC, "dev", "--state-dir", str(state_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    endpoints = state_dir / "endpoints.json"
    while not endpoints.exists():
        if proc.poll() is not None:
            raise AssertionError(f"sfsync dev exited {proc.returncode}: {proc.stdout.read().decode()}")  # type: ignore[union-attr]
        if time.monotonic() - started > READY_WAIT_S:
            proc.kill()
            raise AssertionError("sfsync dev never wrote endpoints.json")
        time.sleep(0.05)
    return proc, json.loads(endpoints.read_text()), time.monotonic() - started


def assert_pipeline_runs(endpoints: dict[str, Any]) -> None:
    """A local insert reaches the emulator and a Salesforce create reaches PostgreSQL."""
    sfc = endpoints["salesforce"]
    http = requests.Session()
    http.verify, http.trust_env = sfc["ca"], False
    token = http.post(sfc["url"] + "/services/oauth2/token", data={
        "grant_type": "password", "client_id": "dev-test", "username": sfc["username"],
        "password": sfc["password"]}, timeout=10).json()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], session=http)
    with psycopg.connect(endpoints["postgres"], autocommit=True) as db:
        local = db.execute("insert into contacts (last_name) values ('dev-test') returning id").fetchone()[0]
        acc = sf.Account.create({"Name": "dev-test"})["id"]
        deadline = time.monotonic() + 60
        out = inbound = None
        while time.monotonic() < deadline and not (out and inbound):
            out = out or sf.query(f"select Id from Contact where Local_Id__c = '{local}'")["records"]
            inbound = inbound or db.execute("select 1 from accounts where sfid = %s", [acc]).fetchone()
            time.sleep(0.3)
    assert out, "a local insert did not reach Salesforce"
    assert inbound, "a Salesforce create did not reach PostgreSQL"


def assert_ready_waited_for_the_groups(endpoints: dict[str, Any]) -> None:
    """When endpoints.json appears, every role already answers /readyz, and every consumer role owns
    partitions of its group (nothing is left to a first rebalance after "ready")."""
    for role, url in endpoints["health"].items():
        answer = requests.get(url + "/readyz", timeout=10)
        assert answer.status_code == 200, (role, answer.text)
        report = answer.json()
        assert report["ready"] and all(c["ok"] for c in report["checks"].values()), report
        if role in CONSUMER_ROLES:
            detail = report["checks"]["group"]["detail"]
            assert detail.startswith("joined; ") and not detail.startswith("joined; 0 "), (role, detail)
        assert requests.get(url + "/healthz", timeout=10).status_code == 200


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def assert_all_gone(procs: list[psutil.Process], timeout: float = 15.0) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_ready_usable_and_stops_clean(tmp_path: Path, stop_signal: int) -> None:
    proc, endpoints, _ = start_dev(tmp_path / "state")
    try:
        assert {"kafka", "postgres", "salesforce", "roles", "health"} <= set(endpoints)
        assert set(endpoints["roles"]) == set(ROLES) == set(endpoints["health"])
        assert_ready_waited_for_the_groups(endpoints)
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
        if stop_signal == signal.SIGINT:  # once: the stack really syncs, in both directions
            assert_pipeline_runs(endpoints)
        children = descendants(proc.pid)
        assert {c.pid for c in children} >= set(endpoints["roles"].values())
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
