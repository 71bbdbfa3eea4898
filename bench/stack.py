"""Shared set-up for the pipeline benchmarks: the dev stack (embedded broker, PostgreSQL, emulator,
every role as its own process) plus measuring helpers. Not a test; prints figures."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
from confluent_kafka import Consumer, Producer

from sfsync.devstack.stack import DevStack


def start_stack() -> DevStack:
    """The dev stack with the demo mapping and tables, exactly as ``sfsync dev`` runs it."""
    stack = DevStack(Path(tempfile.mkdtemp(prefix="sfsync-bench-")))
    stack.start()
    return stack


def db(stack: DevStack) -> psycopg.Connection[Any]:
    assert stack.config is not None
    conn = psycopg.connect(stack.config.postgres.dsn.get_secret_value(), autocommit=True)
    conn.execute(f'set search_path to "{stack.config.postgres.schema_name}"')
    return conn


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def percentiles(samples_ms: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def role_memory(stack: DevStack) -> dict[str, float]:
    """Resident memory (MiB) of each role process."""
    out: dict[str, float] = {}
    for name, proc in stack.roles.procs.items():
        try:
            out[name] = psutil.Process(proc.pid).memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            out[name] = float("nan")
    return out


def cpu_seconds(stack: DevStack) -> dict[str, float]:
    """CPU seconds used so far by each role, the emulator, the broker and PostgreSQL (with children)."""
    procs: dict[str, psutil.Process] = {name: psutil.Process(p.pid) for name, p in stack.roles.procs.items()}
    if stack.emulator is not None:
        procs["emulator"] = psutil.Process(stack.emulator.process.pid)
    for name, popen in (("broker", stack.broker.proc), ("postgres", stack.postgres.proc)):
        if popen is not None:
            procs[name] = psutil.Process(popen.pid)
    out: dict[str, float] = {}
    for name, proc in procs.items():
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        out[name] = total
    return out


def wait_idle(stack: DevStack, below_cores: float = 0.3, timeout: float = 90.0) -> float:
    """Wait until the roles together use less than ``below_cores`` (backlogs such as the CDC echoes
    of a bulk load are drained), so a latency phase is not measured under the previous phase's load."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(stack)
        time.sleep(1.0)
        after = cpu_seconds(stack)
        busy = sum(after[k] - before.get(k, 0.0) for k in stack.roles.procs if k in after)
        if busy < below_cores:
            break
    return time.monotonic() - started


def cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """Per-process CPU use over a phase, in cores (1.0 = one core busy all the time)."""
    return ", ".join(f"{k} {(after[k] - before.get(k, 0.0)) / seconds:.2f}"
                     for k in sorted(after, key=lambda k: before.get(k, 0.0) - after[k]))


def broker_pass_through(bootstrap: str, payloads: list[bytes], topic: str) -> float:
    """Messages/s for confluent-kafka produce -> consume of the same payloads (the raw broker's rate)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep a reference until the future resolves
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-g", "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "fetch.wait.max.ms": 10, "enable.auto.commit": False})
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    started = time.perf_counter()
    for i, value in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, value, key=str(i % 1000))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    got = 0
    while got < len(payloads):
        got += sum(1 for m in consumer.consume(1000, 1.0) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return len(payloads) / elapsed


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 30))
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
