"""What the processor's per-record state costs: memory, time and disk of the ``records`` Table's store.

Fills the Table's store with ``--records`` entries (default 1,000,000) of realistic size — each the
:func:`processors.entry.dump_entry` of a Contact synced both ways with 10 fields, every one different —
then reads every one back in random order, and prints per store: RSS before, peak and after (MiB), write and read time
(records/s), disk size, and for the RocksDB stores the time to open the files again and read a sample
(what a restarted worker does instead of replaying the changelog). Each run of each store is its own
process (``--child``), so one store's memory never counts for the next; ``--runs`` (default 3) runs,
printed min / median / max with each run's value.

Stores: ``memory`` (faust's ``memory://``), ``rocksdb`` (faust's ``rocksdb://`` with its defaults: a
2 GiB block cache and 3 x 64 MiB write buffers per partition) and ``sfsync-rocksdb`` (what sfsync runs,
:class:`processors.store.RecordStore`: one ``processor.cache_mb`` cache for all partitions, 2 x
``processor.write_buffer_mb`` per partition).

Why the store objects and not a worker over the broker: the store is the only part of the processor whose
memory grows with the number of records, and the Table a worker builds is this one (same app settings from
:func:`processors.store.store_settings`, same Table declaration, same ``records.data[key] = value`` /
``records.data.get(key)`` calls). A worker would add its fixed overhead and cap the fill at the processor's
few thousand changes/s (1,000,000 records: 5+ minutes per run). The store files an entry under the
partition of the event being processed (``faust.streams.current_event()``); the benchmark sets that event
the way a stream does, to a stand-in with the key's partition. Nothing fails: a benchmark, not a test.

    .venv/bin/python bench/state.py [--records 1000000] [--runs 3] [--partitions 6] [--stores ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STORES = ("memory", "rocksdb", "sfsync-rocksdb")
SAMPLE = 10_000  # entries read after reopening the files


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MiB (``/proc/self/status``)."""
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / (1024 * 1024)


#: stands for a record's number in the entry templates (``entry_bytes``): replaced by 9 digits
TAG = "QQQQQQQQQ"
VARIANTS = 30  # first names (5) x titles and cities (3) x source partitions (6) repeat with this period


def entry_template(i: int) -> bytes:
    """The Table value of a contact like number ``i`` with its number as :data:`TAG`: 10 fields synced both
    ways, each with sfsync's write to Salesforce, positions of both sides (what a long-synced record
    holds). :func:`processors.entry.dump_entry` of a real :class:`~processors.entry.Entry`."""
    from processors.conflicts import FieldState, RecordState, Sent, Side, Values
    from processors.entry import Entry, dump_entry
    from processors.state import SourcePosition

    ts = 1_780_000_000_000_000 + i * 1_000
    first = ("Ada", "Grace", "Alan", "Edsger", "Barbara")[i % 5]
    values: dict[str, Any] = {
        "FirstName": first, "LastName": f"Lovelace-{TAG}", "Email": f"{first.lower()}.{TAG}@example.org",
        "Phone": f"+44 20 7946 {TAG}", "Title": ("Engineer", "Analyst", "Director")[i % 3],
        "MailingStreet": f"{TAG} Analytical Engine Road", "MailingCity": ("London", "Leeds", "York")[i % 3],
        "MailingPostalCode": f"N{i % 99} {i % 9}AA", "AccountId": f"001000000{TAG}",
        "Birthdate": (datetime(1950, 1, 1, tzinfo=UTC) + timedelta(days=i * 37 % 20_000)).date().isoformat(),
    }
    position = SourcePosition(i % 6, 1_000_000 + i)
    fields = {name: FieldState(Values(v, v), Side.LOCAL, ts, position,
                               {Side.SALESFORCE: Sent((ts, 1_000_000 + i), v)})
              for name, v in values.items()}
    record = RecordState(fields, {Side.LOCAL: position, Side.SALESFORCE: SourcePosition(i % 6, 2_000_000 + i)},
                         writes=3)
    return dump_entry(Entry(record, sfid=f"003000000{TAG}", local_key=TAG))


def entry_bytes(templates: list[bytes], i: int) -> bytes:
    """Record ``i``'s entry: its variant's template with its number in it (every entry differs)."""
    return templates[i % len(templates)].replace(TAG.encode(), b"%09d" % i)


@dataclass
class _Message:
    partition: int


class _Event:
    """What faust's RocksDB store reads of the current event: ``message.partition``."""

    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


def child(store: str, records: int, partitions: int, directory: Path, seed: int) -> dict[str, Any]:
    """One run of one store, in this process: the figures as a dict."""
    import faust
    from faust.streams import _current_event

    from processors.store import store_settings
    from sfsync.config import build_config

    rss_start, _ = rss_mib()
    if store == "rocksdb":
        settings: dict[str, Any] = {"store": "rocksdb://", "datadir": str(directory / "faust-rocksdb")}
    else:
        cfg = build_config({"kafka": {"partitions": partitions},
                            "processor": {"store": "memory" if store == "memory" else "rocksdb",
                                          "data_dir": str(directory)}})
        settings = store_settings(cfg)
    app = faust.App("bench-state", broker="kafka://127.0.0.1:9", key_serializer="raw", value_serializer="raw",
                    topic_partitions=partitions, **settings)
    table = app.Table("records", default=None, partitions=partitions, key_type=bytes, value_type=bytes)
    data = table.data
    events = [_Event(p) for p in range(partitions)]
    keys = [f"Contact:local:{i}".encode() for i in range(records)]
    templates = [entry_template(i) for i in range(VARIANTS)]
    value_size = statistics.fmean(len(entry_bytes(templates, i)) for i in range(VARIANTS))
    rss_base, _ = rss_mib()

    started = time.perf_counter()
    for i, key in enumerate(keys):
        _current_event.set(weakref.ref(events[i % partitions]))  # what the stream does per event
        data[key] = entry_bytes(templates, i)
    write_s = time.perf_counter() - started
    rss_written, _ = rss_mib()

    order = list(range(records))
    random.Random(seed).shuffle(order)
    started = time.perf_counter()
    missing = 0
    for i in order:
        _current_event.set(weakref.ref(events[i % partitions]))
        if data.get(keys[i]) is None:
            missing += 1
    read_s = time.perf_counter() - started
    gc.collect()
    rss_after, rss_peak = rss_mib()

    out: dict[str, Any] = {
        "store": store, "records": records, "value_bytes": value_size, "missing": missing,
        "rss_start": rss_start, "rss_base": rss_base, "rss_written": rss_written, "rss_after": rss_after,
        "rss_peak": rss_peak, "write_s": write_s, "read_s": read_s, "disk_mib": 0.0,
    }
    if store != "memory":
        dbs = data._dbs  # the benchmark flushes the memtables to measure the files
        for db in dbs.values():
            db.flush()
        root = Path(settings["datadir"])
        out["disk_mib"] = disk_mib(root)
        for db in list(dbs.values()):
            db.close()
        dbs.clear()
        gc.collect()
        # a restarted worker: open the partition files again and read a sample
        started = time.perf_counter()
        for p in range(partitions):
            data._db_for_partition(p)  # what assign_partitions does at a rebalance
        for i in order[:SAMPLE]:
            _current_event.set(weakref.ref(events[i % partitions]))
            if data.get(keys[i]) is None:
                out["missing"] += 1
        out["reopen_s"] = time.perf_counter() - started
    return out


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    each = ", ".join(fmt.format(v) for v in values)
    return f"{fmt.format(min(values))} / {fmt.format(statistics.median(values))} / {fmt.format(max(values))}  ({each})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--child", choices=STORES, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.records, args.partitions, args.dir, args.seed)))
        return

    print(f"{args.records:,} records, {args.partitions} partitions, {args.runs} run(s) per store, "
          f"each its own process; min / median / max (each run)")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in args.stores}
    for run in range(args.runs):
        for store in args.stores:
            directory = Path(tempfile.mkdtemp(prefix="sfsync-bench-state-"))
            try:
                proc = subprocess.run([sys.executable, __file__, "--child", store, "--records", str(args.records),
                                       "--partitions", str(args.partitions), "--dir", str(directory),
                                       "--seed", str(run)], capture_output=True, text=True, check=False,
                                      env={**os.environ, "PYTHONPATH": str(REPO)})
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            if proc.returncode != 0:
                print(f"run {run + 1} {store}: failed\n{proc.stderr[-3000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[store].append(r)
            print(f"run {run + 1} {store}: peak {r['rss_peak']:,.0f} MiB, after {r['rss_after']:,.0f} MiB, "
                  f"write {r['write_s']:.1f} s, read {r['read_s']:.1f} s, disk {r['disk_mib']:,.0f} MiB",
                  flush=True)

    for store, rs in results.items():
        if not rs:
            continue
        n = rs[0]["records"]
        print(f"\n{store}  (entry {rs[0]['value_bytes']:,.0f} bytes; missing on read: {sum(r['missing'] for r in rs)})")
        print(f"  RSS before fill MiB        {spread([r['rss_base'] for r in rs])}")
        print(f"  RSS peak MiB               {spread([r['rss_peak'] for r in rs])}")
        print(f"  RSS after write MiB        {spread([r['rss_written'] for r in rs])}")
        print(f"  RSS after read MiB         {spread([r['rss_after'] for r in rs])}")
        print(f"  RSS growth by the fill MiB {spread([r['rss_peak'] - r['rss_base'] for r in rs])}")
        print(f"  write records/s            {spread([n / r['write_s'] for r in rs])}")
        print(f"  read (random) records/s    {spread([n / r['read_s'] for r in rs])}")
        if store != "memory":
            print(f"  disk MiB (flushed)         {spread([r['disk_mib'] for r in rs])}")
            print(f"  reopen + {SAMPLE:,} reads s     {spread([r['reopen_s'] for r in rs], '{:.2f}')}")


if __name__ == "__main__":
    main()
