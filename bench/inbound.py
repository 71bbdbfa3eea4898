"""Inbound benchmark: Salesforce (emulator) -> CDC producer -> processor -> PostgreSQL sink.

Prints, per run and as min / median / max over ``--runs`` runs (default 3):

- sustained records/s for 20,000 updates (goal >= 2,000/s) and the Salesforce-side write time;
- µs of CPU per record of every process (roles, emulator, broker, PostgreSQL) and each role's peak RSS;
- API calls per 1,000 records synced, for the bulk updates and for the trickle;
- the processor's offset commits: the gaps between advances of its committed offsets (watched from
  outside) and the commits its log reports as slower than the commit interval ("Timer commit is
  overlapping");
- p50/p99/max latency from the Salesforce commit to the row being visible at a trickle of 200 changes/s;
- in the same run, two baselines with the same payloads (the pipeline's change envelopes) on the same broker
  and partition count: the raw broker pass-through (confluent-kafka produce -> consume) and a bare faust
  relay with the processor's faust settings (``bench/faust_relay.py``), and pipeline / baseline.

Each run starts a fresh stack by default. ``--reuse-stack`` runs them all on one start (each run writes values
of its own, waits until every process is idle and measures its baselines on topics of its own), but that is
not sound for comparing runs: on one stack the embedded broker's CPU per pipeline record grew run after run
(1,244 -> 2,366 -> 3,006 µs) and the trickle p99 with it (1.3 -> 3.1 -> 8.7 s), while its cost per relayed
message stayed flat: the broker slows down with what the pipeline's topics hold (docs/performance.md).

Run: python bench/inbound.py [--runs 3] [--updates 20000] [--accounts 1000] [--trickle-seconds 10] [--reuse-stack]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import (
    CommitWatch,
    Figures,
    Landed,
    PeakRss,
    PySpy,
    add_hops,
    add_relay_commits,
    add_stages,
    broker_pass_through,
    cpu_seconds,
    cpu_share,
    cpu_us_per_record,
    db,
    faust_relay,
    kafka_time,
    log_size,
    percentiles,
    processor_total,
    profile_summary,
    read_from,
    settings,
    start_stack,
    stop_stack,
    timer_overlaps,
    topic_ends,
    wait_idle,
    wait_until,
)

from sfsync.devstack.stack import DevStack
from sfsync.kafka.topics import TopicNames
from sfsync.records import ApplyCommand, ChangeEvent, RecordStatus, SyncState
from sfsync.serde import DecodeError, Serde

#: the roles ``--py-spy`` profiles (run 1, bulk phase)
PROFILED = ("salesforce-producer", "processor", "postgres-sink")

#: the processes whose CPU per record is printed, in the order a record passes them
PROCESSES = ("emulator", "salesforce-producer", "processor", "postgres-sink", "postgres", "broker",
             "postgres-producer", "salesforce-sink", "notifier")


@dataclass
class Session:
    """One started stack with the benchmark's accounts in it (seeded once per stack)."""

    stack: DevStack
    sf: Any
    conn: Any
    ids: list[str]


def open_session(args: argparse.Namespace) -> Session:
    """Start the stack, wait for the pipeline to deliver a canary, seed the accounts the runs update."""
    stack = start_stack(args.workers, settings(args.settings))
    try:
        assert stack.emulator is not None
        sf = stack.emulator.salesforce()
        conn = db(stack)
        made: list[str] = []

        def canary() -> bool:  # the CDC producer starts at 'latest': create canaries until one lands
            made.append(sf.Account.create({"Name": "bench-canary"})["id"])
            return conn.execute("select count(*) from accounts where sfid = any(%s)", [made]).fetchone()[0] > 0

        wait_until(canary, 120, "the pipeline to deliver a canary", interval=1.0)
        stack.emulator.control.seed("Account", args.accounts, {"Name": "bench {i}", "Phone": "0"})
        wait_until(lambda: conn.execute("select count(*) from accounts where name like 'bench %%'").fetchone()[0]
                   >= args.accounts, 120, "seeded accounts")
        ids = [r[0] for r in conn.execute("select sfid from accounts where name like 'bench %%' order by id")]
    except BaseException:
        stop_stack(stack)
        raise
    return Session(stack, sf, conn, ids)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--accounts", type=int, default=1_000)
    ap.add_argument("--trickle-rate", type=int, default=200)
    ap.add_argument("--trickle-seconds", type=float, default=10.0)
    ap.add_argument("--py-spy", metavar="PATH", help="profile the direction's roles in run 1's bulk phase with "
                    "this py-spy executable and print where their time goes")
    ap.add_argument("--workers", type=int, default=1, help="processor workers (one group sharing the partitions)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                    help="a config key for every run's stack (dotted, YAML value): --set sinks.salesforce.linger_ms=50")
    ap.add_argument("--reuse-stack", action="store_true",
                    help="run every run on one stack start (quicker, but the embedded broker slows down run after run)")
    args = ap.parse_args()
    if args.py_spy:
        args.py_spy = str(Path(args.py_spy).resolve())  # the stacks run in their own directories

    figures = Figures()
    began = time.monotonic()
    session = open_session(args)
    try:
        for run in range(1, args.runs + 1):
            if run > 1 and not args.reuse_stack:
                stop_stack(session.stack)
                session = open_session(args)
            measure(session, args, run, figures)
    finally:
        stop_stack(session.stack)
    figures.text("stack", f"{'one stack start for all runs' if args.reuse_stack else 'a fresh stack per run'}; "
                          f"{time.monotonic() - began:.0f} s in all")
    figures.text("config set (--set)", ", ".join(args.settings) or "none: the dev defaults")
    figures.print(f"inbound benchmark (this machine: 2 cores; every role its own process; "
                  f"{args.workers} processor worker{'s' if args.workers != 1 else ''})")


def measure(session: Session, args: argparse.Namespace, run: int, figures: Figures) -> None:
    """One run: bulk updates, trickle, then both baselines with the same payloads."""
    stack, sf, conn, ids = session.stack, session.sf, session.conn, session.ids
    assert stack.emulator is not None and stack.endpoints is not None and stack.config is not None
    control = stack.emulator.control
    kafka = stack.config.kafka
    names = TopicNames(kafka.topic_prefix)
    processor_log = stack.roles.log_path("processor")
    rounds = max(1, args.updates // len(ids))
    total = rounds * len(ids)
    wait_idle(stack)  # the previous run's echoes are drained

    # 1. Sustained throughput.
    log_start = log_size(processor_log)
    control.reset_stats()
    own_calls = 0
    cpu_before = cpu_seconds(stack)
    profile = (PySpy(args.py_spy, {r: stack.roles.procs[r].pid for r in PROFILED}, stack.state_dir)
               if args.py_spy and run == 1 else None)
    watch = CommitWatch(stack.endpoints.kafka, names.processor_group, names.changes_inbound, kafka.partitions)
    tag = f"b{run}r"
    progress_conn = db(stack)
    stage_topics = [("CDC producer", names.changes_inbound), ("processor", names.apply_local)]
    stage_starts = {topic: topic_ends(stack.endpoints.kafka, topic) for _, topic in stage_topics}

    def landed() -> int:  # each account's updates land in order: its round number counts its landed updates
        rows = progress_conn.execute("select phone from accounts where phone like %s", [tag + "%"]).fetchall()
        return sum(int(phone[len(tag):]) for (phone,) in rows)

    with (profile or contextlib.nullcontext(), PeakRss(stack) as rss, watch as commits,
          Landed(landed) as progress):
        started, started_wall = time.perf_counter(), time.time()
        for r in range(1, rounds + 1):
            for i in range(0, len(ids), 200):
                chunk = [{"attributes": {"type": "Account"}, "id": sfid, "Phone": f"{tag}{r}"}
                         for sfid in ids[i:i + 200]]
                sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": chunk})
                own_calls += 1
        written = time.perf_counter()
        wait_until(lambda: conn.execute("select count(*) from accounts where phone = %s",
                                        [f"{tag}{rounds}"]).fetchone()[0] >= len(ids),
                   600, "all updates to land", interval=0.1)
        elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(stack)
    progress_conn.close()
    first_half, second_half = progress.halves(started, total, started + elapsed)
    bulk_calls = control.stats()["api_calls_total"] - own_calls
    rate = total / elapsed
    overlaps = timer_overlaps(processor_log, log_start)

    figures.add("sustained throughput (records/s)", rate, note="goal >= 2,000")
    figures.add("  first half of the records (records/s)", first_half)
    figures.add("  second half of the records (records/s)", second_half)
    figures.add("write phase, Salesforce side (s)", written - started, "{:.1f}")
    add_stages(figures, stack.endpoints.kafka, started_wall,
               [(label, topic, stage_starts[topic]) for label, topic in stage_topics], elapsed, total)
    per_record = cpu_us_per_record(cpu_before, cpu_after, total)
    per_record["processor"] = processor_total(per_record)  # every worker's, when there are several
    for name in [k for k in per_record if k.startswith("processor#")]:
        del per_record[name]
    for name in PROCESSES:
        if name in per_record:
            figures.add(f"CPU µs/record: {name}", per_record[name])
    figures.add("CPU µs/record: all processes", sum(per_record.values()))
    for name, mib in rss.peak.items():
        figures.add(f"peak RSS MiB: {name}", mib)
    figures.add("API calls / 1,000 records, bulk", bulk_calls * 1000 / total, "{:.2f}",
                note="sfsync's calls only (CDC is not counted against the REST allowance)")
    gaps = commits.gaps()
    figures.add("processor commit gap, median (s)", statistics.median(gaps) if gaps else float("nan"), "{:.2f}",
                note="between advances of its committed offsets (commit interval 0.5 s)")
    figures.add("processor commit gap, max (s)", max(gaps, default=float("nan")), "{:.2f}")
    commit_stalls = overlaps.get("commit", [])
    figures.add("processor commits > interval, bulk (log)", len(commit_stalls), "{:.0f}",
                note="'Timer commit is overlapping' during the bulk phase")
    figures.add("processor slowest logged commit, bulk (s)", max(commit_stalls, default=0.0), "{:.2f}")
    figures.text(f"run {run}: logs", str(stack.state_dir / "logs"))
    if profile is not None:
        for role in PROFILED:
            figures.text(f"run {run}: py-spy {role}", "; ".join(
                f"{share:.0%} {frame}" for frame, share in profile_summary(profile.out[role], 14)))
    figures.text(f"run {run}: CPU cores, bulk phase", cpu_share(cpu_before, cpu_after, elapsed))
    others = {k: v for k, v in overlaps.items() if k != "commit"}
    if others:
        figures.text(f"run {run}: other timers overlapping", ", ".join(
            f"{k} x{len(v)} (max {max(v):.2f} s)" for k, v in others.items()))

    drained = wait_idle(stack)

    # 2. Latency at a trickle: each change carries its sequence number; a poller notes first sight.
    seen: dict[int, float] = {}
    stop = threading.Event()
    prefix = f"lat{run}-"

    def poll() -> None:
        with db(stack) as c:
            while not stop.is_set():
                for (phone,) in c.execute("select phone from accounts where phone like %s", [prefix + "%"]):
                    seen.setdefault(int(phone[len(prefix):]), time.time())
                time.sleep(0.005)

    bootstrap = stack.endpoints.kafka
    hop_topics = (names.changes_inbound, names.apply_local, names.status)
    starts = {topic: topic_ends(bootstrap, topic) for topic in hop_topics}
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    trickle_log_start = log_size(processor_log)
    control.reset_stats()
    committed: dict[int, float] = {}
    n = int(args.trickle_rate * args.trickle_seconds)
    interval = 1.0 / args.trickle_rate
    next_at = time.monotonic()
    for seq in range(n):
        sf.Account.update(ids[seq % len(ids)], {"Phone": f"{prefix}{seq}"})
        committed[seq] = time.time()
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    wait_until(lambda: all(s in seen for s in range(max(0, n - len(ids)), n)), 60, "trickle to land")
    trickle_calls = control.stats()["api_calls_total"] - n
    time.sleep(0.5)
    stop.set()
    poller.join(5)
    # A record overwritten before the poller saw it has no sighting; measure what was seen.
    latencies = [(seen[s] - committed[s]) * 1000 for s in committed if s in seen]
    p50, p99, worst = percentiles(latencies)
    trickle_stalls = timer_overlaps(processor_log, trickle_log_start).get("commit", [])
    figures.add("processor commits > interval, trickle (log)", len(trickle_stalls), "{:.0f}")
    figures.add("processor slowest logged commit, trickle (s)", max(trickle_stalls, default=0.0), "{:.2f}")
    figures.add("trickle latency p50 (ms)", p50, note=f"commit -> row visible, {n} changes at {args.trickle_rate}/s")
    figures.add("trickle latency p99 (ms)", p99, note="goal < 500 (issue 14)")
    figures.add("trickle latency max (ms)", worst)
    figures.add("API calls / 1,000 records, trickle", trickle_calls * 1000 / n, "{:.2f}")
    figures.text(f"run {run}: trickle", f"{len(latencies)} of {n} observed; started after {drained:.0f} s idle wait")
    add_hops(figures, trickle_hops(bootstrap, names, starts, prefix, seen), HOP_LABELS)

    # 3. Baselines with the same payloads, in the same run, on the same broker and partition count.
    serde = Serde()
    payloads = [serde.encode(ChangeEvent(source="salesforce", object="Account", operation="update",
                                         commit_ts=datetime.now(UTC), source_position=str(i), sfid=ids[i % len(ids)],
                                         changed_fields=["Phone"], values={"Phone": f"r{i}"}), "x")
                for i in range(total)]
    raw_rate = broker_pass_through(stack.endpoints.kafka, payloads, f"bench-raw-inbound-{run}", kafka.partitions)
    relay = faust_relay(stack, payloads, f"inbound-{run}", kafka.partitions)
    figures.add("raw broker pass-through (msg/s)", raw_rate, note="confluent-kafka produce -> consume")
    figures.add("bare faust relay (msg/s)", relay.rate, note="faust agent forwarding each message, processor's "
                                                             "settings")
    figures.add("bare faust relay CPU µs/msg: relay", relay.cpu_us["faust relay"])
    figures.add("bare faust relay CPU µs/msg: broker", relay.cpu_us["broker"])
    add_relay_commits(figures, relay)
    figures.add("pipeline / bare faust relay", rate / relay.rate, "{:.3f}", note="goal >= 0.6 (issue 14)")
    figures.add("pipeline / raw broker", rate / raw_rate, "{:.3f}")
    figures.add("processor CPU / relay CPU per record", per_record["processor"] / relay.cpu_us["faust relay"],
                "{:.2f}", note="the processor's own work, as a multiple of faust's")
    if run == 1:
        figures.text("bare faust relay settings", ", ".join(f"{k}={v}" for k, v in relay.settings.items()))
    if relay.overlaps:
        figures.text(f"run {run}: relay timers overlapping", ", ".join(
            f"{k} x{len(v)} (max {max(v):.2f} s)" for k, v in relay.overlaps.items()))
    print(f"run {run}: {rate:,.0f} records/s, relay {relay.rate:,.0f} msg/s, ratio {rate / relay.rate:.3f}; "
          f"trickle p50 {p50:.0f} / p99 {p99:.0f} ms", flush=True)


#: what each hop of the inbound trickle spans (:func:`trickle_hops`)
HOP_LABELS = {
    "capture": "Salesforce commit (commit_ts) -> the change in Kafka (CDC producer)",
    "processor": "change in Kafka -> apply command in Kafka (broker fetch + processor)",
    "sink": "apply command in Kafka -> the sink's Success status (fetch + write + PostgreSQL commit)",
    "seen": "the sink's status -> the row seen by the bench's poller (5 ms)",
}


def trickle_hops(bootstrap: str, names: TopicNames, starts: dict[str, dict[int, int]], prefix: str,
                 seen: dict[int, float]) -> dict[str, list[float]]:
    """Per trickle change, seconds spent in each hop, from the timestamps its records carry: the change's
    ``commit_ts`` (Salesforce's commit), the Kafka timestamps of the change and of its apply command, and
    the ``last_attempt_ts`` of the sink's status (written once the PostgreSQL transaction committed). A
    change is found by its value (``Phone`` = ``<prefix><seq>``); each apply command of a record is paired
    with the first Success status of that record written after it (one status per command)."""
    serde = Serde()
    commit: dict[int, float] = {}
    changed: dict[int, float] = {}
    for m in read_from(bootstrap, names.changes_inbound, starts[names.changes_inbound]):
        try:
            change = serde.decode(m.value() or b"", ChangeEvent)
        except DecodeError:
            continue
        phone = change.values.get("Phone")
        if isinstance(phone, str) and phone.startswith(prefix) and int(phone[len(prefix):]) not in changed:
            seq = int(phone[len(prefix):])
            changed[seq], commit[seq] = kafka_time(m), change.commit_ts.timestamp()
    applied: dict[int, float] = {}
    order: dict[str, list[int]] = {}  # record key -> its trickle changes, in command order
    for m in read_from(bootstrap, names.apply_local, starts[names.apply_local]):
        try:
            command = serde.decode(m.value() or b"", ApplyCommand)
        except DecodeError:
            continue
        phone = command.values.get("phone")
        if isinstance(phone, str) and phone.startswith(prefix) and int(phone[len(prefix):]) not in applied:
            seq = int(phone[len(prefix):])
            applied[seq] = kafka_time(m)
            order.setdefault(f"inbound:{command.key}", []).append(seq)
    written: dict[str, list[float]] = {}
    for m in read_from(bootstrap, names.status, starts[names.status]):
        key = (m.key() or b"").decode()
        if key not in order or m.value() is None:
            continue
        try:
            status = serde.decode(m.value() or b"", RecordStatus)
        except DecodeError:
            continue
        if status.state in (SyncState.SUCCESS, SyncState.SUPERSEDED):
            written.setdefault(key, []).append((status.last_attempt_ts or status.updated_ts).timestamp())
    sunk: dict[int, float] = {}
    for key, seqs in order.items():
        # each command, in order, takes the first status of its record written after it: the ends the
        # statuses were read from may be under-reported (earlier statuses of the record come first)
        times = iter(sorted(written.get(key, [])))
        for seq in seqs:
            sunk_at = next((t for t in times if t >= applied[seq]), None)
            if sunk_at is None:
                break
            sunk[seq] = sunk_at
    return {
        "capture": [changed[s] - commit[s] for s in changed],
        "processor": [applied[s] - changed[s] for s in applied if s in changed],
        "sink": [sunk[s] - applied[s] for s in sunk],
        "seen": [seen[s] - sunk[s] for s in sunk if s in seen],
    }


if __name__ == "__main__":
    main()
