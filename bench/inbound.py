"""Inbound benchmark: Salesforce (emulator) -> CDC producer -> processor -> PostgreSQL sink.

Prints: sustained records/s for 20,000 updates (goal >= 2,000/s), p50/p99 latency from the
Salesforce commit to the row being visible at a trickle of 200 changes/s (goal p99 < 1 s), and,
in the same run, the raw broker pass-through rate for the same payloads and the ratio.

Run: python bench/inbound.py [--updates 20000] [--accounts 1000] [--trickle-seconds 10]
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
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--accounts", type=int, default=1_000)
    ap.add_argument("--trickle-rate", type=int, default=200)
    ap.add_argument("--trickle-seconds", type=float, default=10.0)
    args = ap.parse_args()

    stack = start_stack()
    try:
        run(stack, args)
    finally:
        stack.stop()


def run(stack: object, args: argparse.Namespace) -> None:
    from sfsync.devstack.stack import DevStack

    assert isinstance(stack, DevStack) and stack.emulator is not None and stack.endpoints is not None
    sf = stack.emulator.salesforce()
    conn = db(stack)

    # Warm-up: the producer starts at 'latest'; create canaries until one lands.
    made: list[str] = []

    def canary() -> bool:
        made.append(sf.Account.create({"Name": "bench-canary"})["id"])
        return conn.execute("select count(*) from accounts where sfid = any(%s)", [made]).fetchone()[0] > 0

    wait_until(canary, 120, "the pipeline to deliver a canary", interval=1.0)

    stack.emulator.control.seed("Account", args.accounts, {"Name": "bench {i}", "Phone": "0"})
    wait_until(lambda: conn.execute("select count(*) from accounts where name like 'bench %%'").fetchone()[0]
               >= args.accounts, 120, "seeded accounts")
    ids = [r[0] for r in conn.execute("select sfid from accounts where name like 'bench %%' order by id")]
    rounds = max(1, args.updates // len(ids))
    total = rounds * len(ids)

    # 1. Sustained throughput.
    stack.emulator.control.reset_stats()
    own_calls = 0
    cpu_before = cpu_seconds(stack)
    started = time.perf_counter()
    for r in range(1, rounds + 1):
        for i in range(0, len(ids), 200):
            chunk = [{"attributes": {"type": "Account"}, "id": sfid, "Phone": f"r{r}"} for sfid in ids[i:i + 200]]
            sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": chunk})
            own_calls += 1
    written = time.perf_counter()
    wait_until(lambda: conn.execute("select count(*) from accounts where phone = %s", [f"r{rounds}"]).fetchone()[0]
               >= len(ids), 600, "all updates to land", interval=0.1)
    elapsed = time.perf_counter() - started
    cpu = cpu_share(cpu_before, cpu_seconds(stack), elapsed)
    rate = total / elapsed

    drained = wait_idle(stack)

    # 2. Latency at a trickle: each change carries its sequence number; a poller notes first sight.
    seen: dict[int, float] = {}
    stop = threading.Event()

    def poll() -> None:
        with db(stack) as c:
            while not stop.is_set():
                for (phone,) in c.execute("select phone from accounts where phone like 'lat-%%'"):
                    seq = int(phone[4:])
                    seen.setdefault(seq, time.time())
                time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    committed: dict[int, float] = {}
    n = int(args.trickle_rate * args.trickle_seconds)
    interval = 1.0 / args.trickle_rate
    next_at = time.monotonic()
    for seq in range(n):
        sfid = ids[seq % len(ids)]
        sf.Account.update(sfid, {"Phone": f"lat-{seq}"})
        committed[seq] = time.time()
        own_calls += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    wait_until(lambda: all(s in seen for s in range(max(0, n - len(ids)), n)), 60, "trickle to land")
    time.sleep(0.5)
    stop.set()
    poller.join(5)
    # A record overwritten before the poller saw it has no sighting; measure what was seen.
    latencies = [(seen[s] - committed[s]) * 1000 for s in committed if s in seen]
    p50, p99, worst = percentiles(latencies)

    # 3. Raw broker pass-through of the same payloads, in the same run.
    serde = Serde()
    payloads = [serde.encode(ChangeEvent(source="salesforce", object="Account", operation="update",
                                         commit_ts=datetime.now(UTC), source_position=str(i), sfid=ids[i % len(ids)],
                                         changed_fields=["Phone"], values={"Phone": f"r{i}"}), "x")
                for i in range(total)]
    raw_rate = broker_pass_through(stack.endpoints.kafka, payloads, "bench-raw-inbound")

    sfsync_calls = stack.emulator.control.stats()["api_calls_total"] - own_calls
    memory = role_memory(stack)
    print_table("inbound benchmark (this machine: 2 cores; every role its own process)", [
        ("updates", f"{total:,} ({rounds} rounds x {len(ids):,} accounts, 200-record collections)"),
        ("write phase (Salesforce side)", f"{written - started:.1f} s"),
        ("sustained throughput", f"{rate:,.0f} records/s (goal >= 2,000)"),
        ("CPU during the run (cores)", cpu),
        ("trickle", f"{n} changes at {args.trickle_rate}/s; {len(latencies)} observed (started after "
                    f"{drained:.0f} s idle wait)"),
        ("latency commit -> row visible", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms (goal p99 < 1000)"),
        ("raw broker pass-through", f"{raw_rate:,.0f} msg/s (confluent-kafka produce -> consume, same payloads)"),
        ("pipeline / raw broker", f"{rate / raw_rate:.3f}"),
        ("sfsync API calls per record", f"{sfsync_calls / (total + n):.4f} ({sfsync_calls} calls; CDC is not "
                                         "counted against the REST allowance)"),
        ("role memory (RSS MiB)", ", ".join(f"{k} {v:.0f}" for k, v in memory.items())),
    ])


if __name__ == "__main__":
    main()
