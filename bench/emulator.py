"""Benchmark the Salesforce emulator through the unmodified clients.

Prints: single-record GET and PATCH requests/s (simple-salesforce, one keep-alive connection),
ms per 200-record sObject Collections upsert, the time to seed records through the control API
(``/__emulator/seed``, no events), and the REST-commit -> aiosfstream-ng delivery latency of CDC events.
Run: ``python bench/emulator.py [--seconds S] [--upserts N] [--seed N] [--events N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sfsync.devstack.emulator import EmulatorHandle, start_emulator, streaming_client


def _rate(label: str, seconds: float, call: Any) -> float:
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        call(count)
        count += 1
    rate = count / (time.perf_counter() - start)
    print(f"{label:<42} {rate:9.0f} req/s  (target >= 500)")
    return rate


def bench_single(handle: EmulatorHandle, seconds: float) -> None:
    """Single-record GET and PATCH throughput."""
    sf = handle.salesforce()
    record_id = sf.Account.create({"Name": "Bench"})["id"]
    _rate("single-record GET (sf.Account.get)", seconds, lambda n: sf.Account.get(record_id))
    _rate("single-record PATCH (sf.Account.update)", seconds,
          lambda n: sf.Account.update(record_id, {"Phone": str(n)}))


def bench_upserts(handle: EmulatorHandle, rounds: int) -> None:
    """200-record collection upserts by external id (half creates, then updates)."""
    sf = handle.salesforce()
    timings = []
    for r in range(rounds):
        records = [{"attributes": {"type": "Contact"}, "Local_Id__c": f"b{(r // 2) * 200 + i}",
                    "LastName": f"Bench {r}-{i}", "Email": f"b{i}@example.com"} for i in range(200)]
        start = time.perf_counter()
        result = sf.restful("composite/sobjects/Contact/Local_Id__c", method="PATCH",
                            json={"allOrNone": False, "records": records})
        timings.append((time.perf_counter() - start) * 1000)
        assert all(item["success"] for item in result), result[:2]
    print(f"{'200-record collection upsert':<42} {statistics.median(timings):9.1f} ms median, "
          f"{max(timings):.1f} ms max  (target < 50 ms)")


def bench_seed(handle: EmulatorHandle, count: int) -> None:
    """One control-API seed of ``count`` Contacts without CDC events (what tests use to make big orgs)."""
    start = time.perf_counter()
    ids = handle.control.seed("Contact", count, {"LastName": "Seed {i}", "Local_Id__c": "seed{i}"},
                              emit_events=False)
    elapsed = time.perf_counter() - start
    assert len(ids) == count
    print(f"{f'seed {count} records (control API, no events)':<42} {elapsed * 1000:9.1f} ms  "
          f"({count / elapsed:.0f} records/s, target < 5 s for 2000)")


async def bench_latency(handle: EmulatorHandle, events: int) -> None:
    """Time from a REST update's response to the CDC event arriving at an aiosfstream-ng subscriber."""
    sf = handle.salesforce()
    record_id = sf.Account.create({"Name": "Latency"})["id"]
    client = streaming_client(handle, replay=-1)
    await client.open()
    await client.subscribe("/data/AccountChangeEvent")
    latencies = []
    try:
        for n in range(events):
            start = time.perf_counter()
            await asyncio.to_thread(sf.Account.update, record_id, {"Phone": f"L{n}"})
            message = await asyncio.wait_for(client.receive(), 5)
            latencies.append((time.perf_counter() - start) * 1000)
            assert message["data"]["payload"]["Phone"] == f"L{n}"
    finally:
        await client.close()
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(f"{'CDC latency (REST call -> subscriber)':<42} {statistics.median(latencies):9.1f} ms median, "
          f"{p95:.1f} ms p95  (target < 100 ms)")


def main() -> None:
    """Run every benchmark against a fresh emulator."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    parser.add_argument("--upserts", type=int, default=20, help="number of 200-record upserts")
    parser.add_argument("--seed", type=int, default=2000, help="records in the control-API seed")
    parser.add_argument("--events", type=int, default=50, help="number of CDC latency samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        handle = start_emulator(Path(tmp))
        try:
            bench_single(handle, args.seconds)
            bench_upserts(handle, args.upserts)
            bench_seed(handle, args.seed)
            asyncio.run(bench_latency(handle, args.events))
        finally:
            handle.stop()


if __name__ == "__main__":
    main()
