"""Outbound benchmark: PostgreSQL triggers -> outbox relay -> processor -> Salesforce sink (emulator).

Prints, per run and as min / median / max over ``--runs`` runs (default 3):

- for 10,000 inserts in one transaction: wall time from the commit to the emulator having every record
  (goal < 10 s), records/s, sObject Collections calls (goal 50) and records per call (goal >= 195);
- µs of CPU per record of every process (roles, emulator, broker, PostgreSQL) and each role's peak RSS;
- API calls per 1,000 records synced (all of sfsync's calls, not only the data calls), bulk and trickle;
- the processor's offset commits: the gaps between advances of its committed offsets (watched from
  outside) and the commits its log reports as slower than the commit interval;
- p50/p99/max latency from the local commit to the emulator having the record, at a trickle of 100 rows/s,
  one per transaction;
- in the same run, two baselines with the same number of payloads (the relay's change envelopes) on the
  same broker and partition count: the raw broker pass-through and a bare faust relay with the processor's
  faust settings (``bench/faust_relay.py``), and pipeline / baseline.

Each run starts a fresh stack by default. ``--reuse-stack`` runs them all on one start (each run inserts
rows of its own, ``bulk<run>-*`` / ``lat<run>-*``, waits until every process is idle, measures its baselines
on topics of its own), but the embedded broker slows down with what the pipeline's topics hold, so later
runs on one stack are slower for a reason a fresh machine does not have (docs/performance.md).

Run: python bench/outbound.py [--runs 3] [--rows 10000] [--trickle-seconds 10] [--reuse-stack]
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
from sfsync.records import ApplyCommand, ChangeEvent
from sfsync.serde import DecodeError, Serde

#: the roles ``--py-spy`` profiles (run 1, bulk phase)
PROFILED = ("postgres-producer", "processor", "salesforce-sink")

#: the processes whose CPU per record is printed, in the order a record passes them
PROCESSES = ("postgres", "postgres-producer", "processor", "salesforce-sink", "emulator", "broker",
             "salesforce-producer", "postgres-sink", "notifier")


@dataclass
class Session:
    """One started stack, shown to deliver a canary."""

    stack: DevStack
    sf: Any
    conn: Any


def open_session(workers: int = 1, base_config: dict[str, Any] | None = None) -> Session:
    """Start the stack and wait until a local insert reaches the emulator."""
    stack = start_stack(workers, base_config)
    try:
        assert stack.emulator is not None
        conn = db(stack)
        sf = stack.emulator.salesforce()
        made: list[int] = []

        def canary() -> bool:
            made.append(conn.execute("insert into contacts (last_name) values ('bench-canary') returning id")
                        .fetchone()[0])
            keys = ", ".join(f"'{k}'" for k in made)
            return bool(sf.query(f"select Id from Contact where Local_Id__c in ({keys})")["records"])

        wait_until(canary, 120, "the pipeline to deliver a canary", interval=1.0)
        time.sleep(1.0)
    except BaseException:
        stop_stack(stack)
        raise
    return Session(stack, sf, conn)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--trickle-rate", type=int, default=100)
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
    session = open_session(args.workers, settings(args.settings))
    try:
        for run in range(1, args.runs + 1):
            if run > 1 and not args.reuse_stack:
                stop_stack(session.stack)
                session = open_session(args.workers, settings(args.settings))
            measure(session, args, run, figures)
    finally:
        stop_stack(session.stack)
    figures.text("stack", f"{'one stack start for all runs' if args.reuse_stack else 'a fresh stack per run'}; "
                          f"{time.monotonic() - began:.0f} s in all")
    figures.text("config set (--set)", ", ".join(args.settings) or "none: the dev defaults")
    figures.print(f"outbound benchmark (this machine: 2 cores; every role its own process; "
                  f"{args.workers} processor worker{'s' if args.workers != 1 else ''})")


def measure(session: Session, args: argparse.Namespace, run: int, figures: Figures) -> None:
    """One run: one bulk transaction, a trickle, then both baselines with the same number of payloads."""
    stack, sf, conn = session.stack, session.sf, session.conn
    assert stack.emulator is not None and stack.endpoints is not None and stack.config is not None
    control = stack.emulator.control
    kafka = stack.config.kafka
    names = TopicNames(kafka.topic_prefix)
    processor_log = stack.roles.log_path("processor")
    wait_idle(stack)  # the previous run's CDC echoes are drained

    # 1. --rows inserts in one transaction.
    log_start = log_size(processor_log)
    control.reset_stats()
    query_calls = 0
    tag = f"bulk{run}-"

    landed: list[tuple[float, int]] = []  # (time, records in Salesforce), from each count query

    def all_there() -> bool:
        nonlocal query_calls
        query_calls += 1
        landed.append((time.perf_counter(),
                       int(sf.query(f"select count() from Contact where LastName like '{tag}%'")["totalSize"])))
        return landed[-1][1] >= args.rows

    stage_topics = [("outbox relay", names.changes_outbound), ("processor", names.apply_salesforce)]
    stage_starts = {topic: topic_ends(stack.endpoints.kafka, topic) for _, topic in stage_topics}
    cpu_before = cpu_seconds(stack)
    profile = (PySpy(args.py_spy, {r: stack.roles.procs[r].pid for r in PROFILED}, stack.state_dir)
               if args.py_spy and run == 1 else None)
    watch = CommitWatch(stack.endpoints.kafka, names.processor_group, names.changes_outbound, kafka.partitions)
    with profile or contextlib.nullcontext(), PeakRss(stack) as rss, watch as commits:
        with conn.transaction():
            conn.execute("insert into contacts (first_name, last_name, email) select 'F' || g, %s::text || g, "
                         "'b' || g || '@x.test' from generate_series(1, %s) g", [tag, args.rows])
        committed, committed_wall = time.perf_counter(), time.time()
        wait_until(all_there, 300, f"{args.rows:,} records in Salesforce", interval=0.1)
        wall = time.perf_counter() - committed
    cpu_after = cpu_seconds(stack)
    stats = control.stats()
    data_calls = sum(n for k, n in stats["api_calls"].items() if "composite/sobjects" in k)
    sfsync_calls = stats["api_calls_total"] - query_calls
    records = stats["collection_records_total"]
    overlaps = timer_overlaps(processor_log, log_start)
    rate = args.rows / wall

    figures.add("wall time commit -> all in Salesforce (s)", wall, "{:.2f}", note="goal < 10 s")
    figures.add("throughput (records/s)", rate)
    add_stages(figures, stack.endpoints.kafka, committed_wall,
               [(label, topic, stage_starts[topic]) for label, topic in stage_topics], wall, args.rows)
    half_at = next((t for t, n in landed if n >= args.rows / 2), committed + wall)
    figures.add("  first half of the records (records/s)", args.rows / 2 / max(1e-3, half_at - committed))
    figures.add("  second half of the records (records/s)", args.rows / 2 / max(1e-3, committed + wall - half_at))
    figures.add("sObject Collections calls", data_calls, "{:.0f}", note="goal 50 for 10,000 rows")
    figures.add("records per call", records / max(1, data_calls), "{:.1f}", note="goal >= 195")
    figures.add("API calls / 1,000 records, bulk", sfsync_calls * 1000 / args.rows, "{:.2f}",
                note="every sfsync call (the bench's own count queries excluded)")
    per_record = cpu_us_per_record(cpu_before, cpu_after, args.rows)
    per_record["processor"] = processor_total(per_record)  # every worker's, when there are several
    for name in [k for k in per_record if k.startswith("processor#")]:
        del per_record[name]
    for name in PROCESSES:
        if name in per_record:
            figures.add(f"CPU µs/record: {name}", per_record[name])
    figures.add("CPU µs/record: all processes", sum(per_record.values()))
    for name, mib in rss.peak.items():
        figures.add(f"peak RSS MiB: {name}", mib)
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
    figures.text(f"run {run}: CPU cores, bulk phase", cpu_share(cpu_before, cpu_after, wall))
    others = {k: v for k, v in overlaps.items() if k != "commit"}
    if others:
        figures.text(f"run {run}: other timers overlapping", ", ".join(
            f"{k} x{len(v)} (max {max(v):.2f} s)" for k, v in others.items()))

    drained = wait_idle(stack)  # the CDC echoes of the bulk load flow back through the processor first

    # 2. Latency at a trickle: one row per transaction; a poller reads the emulator's change events
    #    (a control endpoint, not an API call) to note when each record exists in Salesforce.
    seen: dict[str, float] = {}
    target_commit: dict[str, float] = {}  # the emulator's commit time of each record (its CDC event's header)
    stop = threading.Event()
    after = control.events(limit=1)["last_replay_id"]
    bootstrap = stack.endpoints.kafka
    starts = {topic: topic_ends(bootstrap, topic) for topic in (names.changes_outbound, names.apply_salesforce)}

    def poll() -> None:
        nonlocal after
        while not stop.is_set():
            batch = control.events(after=after, limit=5000)
            now = time.time()
            for ev in batch["events"]:
                local = ev["payload"].get("Local_Id__c")
                if local:
                    seen.setdefault(str(local), now)
                    stamp = (ev["payload"].get("ChangeEventHeader") or {}).get("commitTimestamp")
                    if isinstance(stamp, int):
                        target_commit.setdefault(str(local), stamp / 1000)
            if batch["events"]:
                after = batch["events"][-1]["replay_id"]
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    trickle_log_start = log_size(processor_log)
    control.reset_stats()
    commits_at: dict[str, float] = {}
    n = int(args.trickle_rate * args.trickle_seconds)
    next_at = time.monotonic()
    for seq in range(n):
        row_id = conn.execute("insert into contacts (last_name) values (%s) returning id",
                              [f"lat{run}-{seq}"]).fetchone()[0]
        commits_at[str(row_id)] = time.time()
        next_at += 1.0 / args.trickle_rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    wait_until(lambda: all(k in seen for k in commits_at), 60, "trickle to land")
    trickle_calls = control.stats()["api_calls_total"]
    stop.set()
    poller.join(5)
    p50, p99, worst = percentiles([(seen[k] - t) * 1000 for k, t in commits_at.items()])
    trickle_stalls = timer_overlaps(processor_log, trickle_log_start).get("commit", [])
    figures.add("processor commits > interval, trickle (log)", len(trickle_stalls), "{:.0f}")
    figures.add("processor slowest logged commit, trickle (s)", max(trickle_stalls, default=0.0), "{:.2f}")
    figures.add("trickle latency p50 (ms)", p50, note=f"commit -> record in Salesforce, {n} rows at "
                                                      f"{args.trickle_rate}/s")
    figures.add("trickle latency p99 (ms)", p99, note="goal < 500 (issue 14)")
    figures.add("trickle latency max (ms)", worst)
    figures.add("API calls / 1,000 records, trickle", trickle_calls * 1000 / n, "{:.2f}")
    figures.text(f"run {run}: trickle", f"{n} rows, one per transaction, after {drained:.0f} s for the bulk "
                                        "load's CDC echoes to drain")
    add_hops(figures, trickle_hops(bootstrap, names, starts, set(commits_at), seen, target_commit), HOP_LABELS)

    # 3. Baselines with the same number of payloads, in the same run, on the same broker and partitions.
    serde = Serde()
    payloads = [serde.encode(ChangeEvent(source="postgres", object="Contact", entity="contacts", operation="create",
                                         commit_ts=datetime.now(UTC), source_position=str(i), local_key=str(i),
                                         changed_fields=["first_name", "last_name", "email"],
                                         values={"first_name": f"F{i}", "last_name": f"bulk-{i}",
                                                 "email": f"b{i}@x.test"}), "x")
                for i in range(args.rows)]
    raw_rate = broker_pass_through(stack.endpoints.kafka, payloads, f"bench-raw-outbound-{run}", kafka.partitions)
    relay = faust_relay(stack, payloads, f"outbound-{run}", kafka.partitions)
    figures.add("raw broker pass-through (msg/s)", raw_rate, note="confluent-kafka produce -> consume")
    figures.add("bare faust relay (msg/s)", relay.rate, note="faust agent forwarding each message, processor's "
                                                             "settings")
    figures.add("bare faust relay CPU µs/msg: relay", relay.cpu_us["faust relay"])
    figures.add("bare faust relay CPU µs/msg: broker", relay.cpu_us["broker"])
    add_relay_commits(figures, relay)
    figures.add("pipeline / bare faust relay", rate / relay.rate, "{:.3f}")
    figures.add("pipeline / raw broker", rate / raw_rate, "{:.3f}")
    figures.add("processor CPU / relay CPU per record", per_record["processor"] / relay.cpu_us["faust relay"],
                "{:.2f}", note="the processor's own work, as a multiple of faust's")
    if run == 1:
        figures.text("bare faust relay settings", ", ".join(f"{k}={v}" for k, v in relay.settings.items()))
    if relay.overlaps:
        figures.text(f"run {run}: relay timers overlapping", ", ".join(
            f"{k} x{len(v)} (max {max(v):.2f} s)" for k, v in relay.overlaps.items()))
    print(f"run {run}: {args.rows:,} rows in {wall:.2f} s ({rate:,.0f}/s, {data_calls} data calls), relay "
          f"{relay.rate:,.0f} msg/s, ratio {rate / relay.rate:.3f}; trickle p50 {p50:.0f} / p99 {p99:.0f} ms",
          flush=True)


#: what each hop of the outbound trickle spans (:func:`trickle_hops`)
HOP_LABELS = {
    "capture": "local commit (commit_ts) -> the change in Kafka (outbox relay)",
    "processor": "change in Kafka -> apply command in Kafka (broker fetch + processor)",
    "sink": "apply command in Kafka -> Salesforce commit (fetch + batch + sObject Collections call)",
    "seen": "Salesforce commit -> the record seen by the bench's poller (its change events, 5 ms)",
}


def trickle_hops(bootstrap: str, names: TopicNames, starts: dict[str, dict[int, int]], keys: set[str],
                 seen: dict[str, float], target_commit: dict[str, float]) -> dict[str, list[float]]:
    """Per trickle row (by local key), seconds spent in each hop, from the timestamps its records carry: the
    change's ``commit_ts`` (the local commit), the Kafka timestamps of the change and of its apply command,
    and the emulator's commit time of the record (``commitTimestamp`` of its change event)."""
    serde = Serde()
    commit: dict[str, float] = {}
    changed: dict[str, float] = {}
    for m in read_from(bootstrap, names.changes_outbound, starts[names.changes_outbound]):
        try:
            change = serde.decode(m.value() or b"", ChangeEvent)
        except DecodeError:
            continue
        if change.local_key in keys and change.local_key not in changed:
            changed[change.local_key], commit[change.local_key] = kafka_time(m), change.commit_ts.timestamp()
    applied: dict[str, float] = {}
    for m in read_from(bootstrap, names.apply_salesforce, starts[names.apply_salesforce]):
        try:
            command = serde.decode(m.value() or b"", ApplyCommand)
        except DecodeError:
            continue
        if command.local_key in keys and command.local_key not in applied:
            applied[command.local_key] = kafka_time(m)
    return {
        "capture": [changed[k] - commit[k] for k in changed],
        "processor": [applied[k] - changed[k] for k in applied if k in changed],
        "sink": [target_commit[k] - applied[k] for k in applied if k in target_commit],
        "seen": [seen[k] - target_commit[k] for k in target_commit if k in seen],
    }


if __name__ == "__main__":
    main()
