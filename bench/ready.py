"""Readiness benchmark: is the dev stack really ready when ``DevStack.start()`` (``sfsync dev``) says so?

For each run, a fresh dev stack (demo config: accounts/contacts/cases <-> Account/Contact/Case, every role
its own process) is started in-process. Prints, per run: the time ``start()`` took (it returns once every
role answers ``/readyz``); the latency of the first change made right after it returned, each direction at
once (inbound: a Contact created through the emulator's REST API -> the row in ``contacts``; outbound: a
row inserted into ``contacts`` -> the Contact in the emulator); the steady-state p50/p99 of ``--steady``
more changes per direction, one at a time; and first / steady p50. Then min/median/max over the runs.
Before /readyz gated "ready", the first Contact took 7.3 s to reach PostgreSQL and the next 157-222 ms.

Arrival: inbound polls ``select 1 from contacts where sfid = <created Id>``; outbound polls the emulator's
change events (``GET /__emulator/events``, a control endpoint: no API calls spent) for a Contact event
carrying ``Local_Id__c = <inserted id>``, then checks every outbound record once with SOQL at the end.

Run: python bench/ready.py [--runs 3] [--steady 20] [--timeout 120]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from simple_salesforce import Salesforce

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import db, percentiles, print_table

from sfsync.devstack.stack import DevStack
from sfsync.emulator.client import EmulatorControl

POLL_S = 0.01  # arrival poll interval (10 ms)


@dataclass
class RunResult:
    ready_s: float
    first_after_ready_ms: float  # from start() returning to both first changes committed
    first_in_ms: float
    first_out_ms: float
    steady_in_ms: list[float] = field(default_factory=list)
    steady_out_ms: list[float] = field(default_factory=list)

    def steady(self, direction: str) -> tuple[float, float, float]:
        return percentiles(self.steady_in_ms if direction == "in" else self.steady_out_ms)

    def ratio(self, direction: str) -> float:
        first = self.first_in_ms if direction == "in" else self.first_out_ms
        return first / self.steady(direction)[0]


class ContactEvents:
    """The ``Local_Id__c`` values of Contact change events emitted since creation, read incrementally from the
    emulator's control API (``/__emulator/...`` is not counted as an API call)."""

    def __init__(self, control: EmulatorControl) -> None:
        self.control = control
        self.after = int(control.events(limit=0)["last_replay_id"])
        self.local_ids: set[str] = set()

    def has(self, local_id: int) -> bool:
        batch = self.control.events(after=self.after, limit=5000)
        for ev in batch["events"]:
            payload = ev["payload"]
            if payload.get("ChangeEventHeader", {}).get("entityName") == "Contact" and payload.get("Local_Id__c"):
                self.local_ids.add(str(payload["Local_Id__c"]))
        if batch["events"]:
            self.after = int(batch["events"][-1]["replay_id"])
        return str(local_id) in self.local_ids


def login(endpoints: dict[str, Any]) -> Salesforce:
    """simple-salesforce on the emulator, logged in from ``endpoints.json`` data the way a user would."""
    sfc = endpoints["salesforce"]
    http = requests.Session()
    http.verify, http.trust_env = sfc["ca"], False
    answer = http.post(sfc["url"] + "/services/oauth2/token", data={
        "grant_type": "password", "client_id": "bench-ready", "username": sfc["username"],
        "password": sfc["password"]}, timeout=30)
    answer.raise_for_status()
    token = answer.json()
    return Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], session=http)


def until_arrived(checks: dict[str, Callable[[], Any]], started: dict[str, float], timeout: float) -> dict[str, float]:
    """Poll every check every ``POLL_S`` until each is true; ms from ``started[name]`` to its first true.
    Raises naming the ones still pending after ``timeout`` seconds."""
    arrived: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while True:
        for name, check in checks.items():
            if name not in arrived and check():
                arrived[name] = (time.perf_counter() - started[name]) * 1000
        if len(arrived) == len(checks):
            return arrived
        if time.perf_counter() > deadline:
            pending = ", ".join(n for n in checks if n not in arrived)
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for: {pending}")
        time.sleep(POLL_S)


def one_run(args: argparse.Namespace) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="sfsync-bench-ready-", ignore_cleanup_errors=True) as tmp:
        stack = DevStack(Path(tmp) / "state")
        started = time.perf_counter()
        stack.start()
        ready = time.perf_counter()
        try:
            return measure(stack, ready - started, ready, args)
        finally:
            stack.stop()


def measure(stack: DevStack, ready_s: float, ready_at: float, args: argparse.Namespace) -> RunResult:
    assert stack.emulator is not None and stack.endpoints is not None
    sf = login(stack.endpoints.to_json())
    conn = db(stack)
    events = ContactEvents(stack.emulator.control)
    out_ids: list[int] = []

    def create_in(label: str) -> tuple[str, float]:
        sfid = sf.Contact.create({"LastName": label})["id"]
        return sfid, time.perf_counter()

    def insert_out(label: str) -> tuple[int, float]:
        local = conn.execute("insert into contacts (last_name) values (%s) returning id", [label]).fetchone()[0]
        out_ids.append(local)
        return local, time.perf_counter()

    def in_pg(sfid: str) -> Callable[[], bool]:
        return lambda: conn.execute("select 1 from contacts where sfid = %s", [sfid]).fetchone() is not None

    def in_sf(local: int) -> Callable[[], bool]:
        return lambda: events.has(local)

    # 1. The first change each way, made at once right after start() returned.
    sfid, in_at = create_in("ready-first-in")
    local, out_at = insert_out("ready-first-out")
    first = until_arrived({"inbound": in_pg(sfid), "outbound": in_sf(local)},
                          {"inbound": in_at, "outbound": out_at}, args.timeout)
    result = RunResult(ready_s=ready_s, first_after_ready_ms=(out_at - ready_at) * 1000,
                       first_in_ms=first["inbound"], first_out_ms=first["outbound"])

    # 2. Steady state: one change at a time, each waited for before the next.
    for i in range(args.steady):
        sfid, at = create_in(f"ready-in-{i}")
        result.steady_in_ms.append(until_arrived({"inbound": in_pg(sfid)}, {"inbound": at}, args.timeout)["inbound"])
    for i in range(args.steady):
        local, at = insert_out(f"ready-out-{i}")
        result.steady_out_ms.append(until_arrived({"outbound": in_sf(local)}, {"outbound": at},
                                                  args.timeout)["outbound"])

    # Cross-check the event-based detection once with SOQL (one API call).
    keys = ", ".join(f"'{k}'" for k in out_ids)
    found = {str(r["Local_Id__c"]) for r in sf.query_all(
        f"select Local_Id__c from Contact where Local_Id__c in ({keys})")["records"]}
    missing = [k for k in out_ids if str(k) not in found]
    if missing:
        raise SystemExit(f"change events showed Contacts that SOQL does not find: Local_Id__c {missing}")
    conn.close()
    return result


def run_rows(r: RunResult, steady: int) -> list[tuple[str, str]]:
    rows = [
        ("ready time (DevStack.start())", f"{r.ready_s:.1f} s"),
        ("first changes committed after ready", f"{r.first_after_ready_ms:.0f} ms"),
        ("first inbound (SF create -> row in PG)", f"{r.first_in_ms:,.0f} ms"),
        ("first outbound (PG insert -> SF record)", f"{r.first_out_ms:,.0f} ms"),
    ]
    for direction, label in (("in", "inbound"), ("out", "outbound")):
        p50, p99, _ = r.steady(direction)
        rows.append((f"steady {label} ({steady} sequential)", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"))
    rows.append(("first / steady p50", f"inbound {r.ratio('in'):.2f}x, outbound {r.ratio('out'):.2f}x"))
    return rows


def spread(values: list[float], fmt: str, unit: str) -> str:
    return (f"min {min(values):{fmt}}, median {statistics.median(values):{fmt}}, "
            f"max {max(values):{fmt}} {unit}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="fresh dev stacks to start, one after the other")
    ap.add_argument("--steady", type=int, default=20, help="steady-state changes per direction per run")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds any one change may take to arrive")
    args = ap.parse_args()

    results: list[RunResult] = []
    for n in range(1, args.runs + 1):
        result = one_run(args)
        results.append(result)
        print_table(f"readiness benchmark, run {n}/{args.runs} (this machine: 2 cores; every role its own process)",
                    run_rows(result, args.steady))
        sys.stdout.flush()

    rows = [
        ("ready time", spread([r.ready_s for r in results], ".1f", "s")),
        ("first inbound", spread([r.first_in_ms for r in results], ",.0f", "ms")),
        ("first outbound", spread([r.first_out_ms for r in results], ",.0f", "ms")),
    ]
    for direction, label in (("in", "inbound"), ("out", "outbound")):
        rows += [
            (f"steady {label} p50", spread([r.steady(direction)[0] for r in results], ".0f", "ms")),
            (f"steady {label} p99", spread([r.steady(direction)[1] for r in results], ".0f", "ms")),
            (f"first / steady p50 {label}", spread([r.ratio(direction) for r in results], ".2f", "x")),
        ]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rows.append(("peak RSS", f"benchmark process {own:.0f} MiB; largest stack child {child:.0f} MiB"))
    print_table(f"readiness benchmark summary over {len(results)} run(s), {args.steady} steady changes per "
                "direction per run", rows)


if __name__ == "__main__":
    main()
