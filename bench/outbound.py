"""Outbound benchmark: PostgreSQL triggers -> outbox relay -> processor -> Salesforce sink (emulator).

Prints, for 10,000 inserts in one transaction: wall time from commit to the emulator having every
record (goal < 10 s), records/s, API calls, records per call (goal >= 195); and p50/p99 latency from
the local commit to the emulator having the record at a trickle of 100 changes/s (goal p99 < 1 s);
and, in the same run, the raw broker pass-through rate for the same number of payloads.

Run: python bench/outbound.py [--rows 10000] [--trickle-seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import (
    broker_pass_through,
    cpu_seconds,
    cpu_share,
    db,
    percentiles,
    print_table,
    role_memory,
    start_stack,
    wait_idle,
    wait_until,
)

from sfsync.records import ChangeEvent
from sfsync.serde import Serde


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--trickle-rate", type=int, default=100)
    ap.add_argument("--trickle-seconds", type=float, default=10.0)
    args = ap.parse_args()
    stack = start_stack()
    try:
        run(stack, args)
    finally:
        stack.stop()


def emulator_count(stack: object, where: str) -> int:
    from sfsync.devstack.stack import DevStack

    assert isinstance(stack, DevStack)
    sf = stack.emulator.salesforce()
    return int(sf.query(f"select count() from Contact where {where}")["totalSize"])


def run(stack: object, args: argparse.Namespace) -> None:
    from sfsync.devstack.stack import DevStack

    assert isinstance(stack, DevStack) and stack.emulator is not None and stack.endpoints is not None
    conn = db(stack)
    sf = stack.emulator.salesforce()
    control = stack.emulator.control

    made: list[int] = []

    def canary() -> bool:
        made.append(conn.execute("insert into contacts (last_name) values ('bench-canary') returning id").fetchone()[0])
        keys = ", ".join(f"'{k}'" for k in made)
        return bool(sf.query(f"select Id from Contact where Local_Id__c in ({keys})")["records"])

    wait_until(canary, 120, "the pipeline to deliver a canary", interval=1.0)
    time.sleep(1.0)

    # 1. 10,000 inserts in one transaction.
    control.reset_stats()
    cpu_before = cpu_seconds(stack)
    with conn.transaction():
        conn.execute("insert into contacts (first_name, last_name, email) select 'F' || g, 'bulk-' || g, "
                     "'b' || g || '@x.test' from generate_series(1, %s) g", [args.rows])
    committed = time.perf_counter()
    query_calls = 0

    def all_there() -> bool:
        nonlocal query_calls
        query_calls += 1
        return emulator_count(stack, "LastName like 'bulk-%'") >= args.rows

    wait_until(all_there, 300, "10,000 records in Salesforce", interval=0.1)
    wall = time.perf_counter() - committed
    cpu = cpu_share(cpu_before, cpu_seconds(stack), wall)
    stats = control.stats()
    data_calls = sum(n for k, n in stats["api_calls"].items() if "composite/sobjects" in k)
    records = stats["collection_records_total"]

    drained = wait_idle(stack)  # the CDC echoes of the bulk load flow back through the processor first

    # 2. Latency at a trickle: one row per transaction; a poller reads the emulator's change events
    #    (a control endpoint, not an API call) to note when each record exists in Salesforce.
    seen: dict[str, float] = {}
    stop = threading.Event()
    after = control.events(limit=1)["last_replay_id"]

    def poll() -> None:
        nonlocal after
        while not stop.is_set():
            batch = control.events(after=after, limit=5000)
            now = time.time()
            for ev in batch["events"]:
                local = ev["payload"].get("Local_Id__c")
                if local:
                    seen.setdefault(str(local), now)
            if batch["events"]:
                after = batch["events"][-1]["replay_id"]
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    commits: dict[str, float] = {}
    n = int(args.trickle_rate * args.trickle_seconds)
    next_at = time.monotonic()
    for seq in range(n):
        row_id = conn.execute("insert into contacts (last_name) values (%s) returning id", [f"lat-{seq}"]).fetchone()[0]
        commits[str(row_id)] = time.time()
        next_at += 1.0 / args.trickle_rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    wait_until(lambda: all(k in seen for k in commits), 60, "trickle to land")
    stop.set()
    poller.join(5)
    p50, p99, worst = percentiles([(seen[k] - t) * 1000 for k, t in commits.items()])

    serde = Serde()
    payloads = [serde.encode(ChangeEvent(source="postgres", object="Contact", entity="contacts", operation="create",
                                         commit_ts=datetime.now(UTC), source_position=str(i), local_key=str(i),
                                         changed_fields=["first_name", "last_name", "email"],
                                         values={"first_name": f"F{i}", "last_name": f"bulk-{i}",
                                                 "email": f"b{i}@x.test"}), "x")
                for i in range(args.rows)]
    raw_rate = broker_pass_through(stack.endpoints.kafka, payloads, "bench-raw-outbound")
    rate = args.rows / wall
    print_table("outbound benchmark (this machine: 2 cores; every role its own process)", [
        ("inserts", f"{args.rows:,} in one transaction"),
        ("wall time commit -> all in Salesforce", f"{wall:.2f} s (goal < 10 s)"),
        ("throughput", f"{rate:,.0f} records/s"),
        ("CPU during the run (cores)", cpu),
        ("API calls for the data", f"{data_calls} sObject Collections calls (goal <= 51)"),
        ("records per call", f"{records / max(1, data_calls):.1f} (goal >= 195)"),
        ("API calls per record", f"{data_calls / args.rows:.4f}"),
        ("trickle", f"{n} rows at {args.trickle_rate}/s, one per transaction (after {drained:.0f} s for the "
                    "bulk load's CDC echoes to drain)"),
        ("latency commit -> record in Salesforce", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms "
                                                   "(goal p99 < 1000)"),
        ("raw broker pass-through", f"{raw_rate:,.0f} msg/s (same number of payloads)"),
        ("pipeline / raw broker", f"{rate / raw_rate:.3f}"),
        ("role memory (RSS MiB)", ", ".join(f"{k} {v:.0f}" for k, v in role_memory(stack).items())),
    ])


if __name__ == "__main__":
    main()
