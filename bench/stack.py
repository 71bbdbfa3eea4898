"""Shared set-up for the pipeline benchmarks: the dev stack (embedded broker, PostgreSQL, emulator,
every role as its own process) plus measuring helpers. Not a test; prints figures.

The helpers exist so that ``inbound.py`` and ``outbound.py`` measure the same things the same way:
the two baselines (raw broker pass-through, bare faust relay) on the same broker in the same run, CPU
per record and peak memory per process from the process counters, the processor's offset commits
(how often they land, and the commits its log reports as slower than the commit interval), and every
figure over several runs as min / median / max (:class:`Figures`), because on a shared 2-core machine
one run says little.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import yaml
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from sfsync.devstack.process import spawn, stop_process
from sfsync.devstack.stack import DevStack, demo_config


def settings(pairs: list[str]) -> dict[str, Any]:
    """``--set`` options (``sinks.salesforce.linger_ms=50``: a dotted key, a YAML value) as a base config
    for :class:`DevStack`: each named section is the demo config's with the keys set."""
    demo = demo_config()
    base: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) < 2 or not all(path):
            raise SystemExit(f"--set {pair!r}: give section.key=value, e.g. sinks.salesforce.linger_ms=50")
        if path[0] == "objects":
            raise SystemExit("--set: the benchmarks run the demo mapping; objects cannot be set")
        section = base.setdefault(path[0], copy.deepcopy(demo.get(path[0], {})))
        for part in path[1:-1]:
            section = section.setdefault(part, {})
        section[path[-1]] = yaml.safe_load(text)
    return base


def start_stack(workers: int = 1, base_config: dict[str, Any] | None = None) -> DevStack:
    """The dev stack with the demo mapping and tables, exactly as ``sfsync dev`` runs it, with ``workers``
    processor workers (``processor``, ``processor#2``, ...: one consumer group sharing the partitions) and
    ``base_config`` (:func:`settings`) over the demo config."""
    state_dir = Path(tempfile.mkdtemp(prefix="sfsync-bench-"))
    stack = DevStack(state_dir, base_config=base_config,
                     replicas={"processor": workers} if workers != 1 else None)
    # The roles inherit the working directory, and the processor keeps its RocksDB files under the relative
    # ``processor.data_dir`` (``.sfsync/processor/<group>``): from the repository, every fresh stack would
    # open the files the previous one left (same group name, another broker). In the stack's own directory
    # each stack starts without any.
    os.chdir(state_dir)
    stack.start()
    return stack


def processor_total(per_process: dict[str, float]) -> float:
    """The figure of every processor worker together (``processor``, ``processor#2``, ...)."""
    return sum(v for k, v in per_process.items() if k == "processor" or k.startswith("processor#"))


def stop_stack(stack: DevStack) -> None:
    """Stop every process of ``stack`` and drop its PostgreSQL data, emulator state and the processor's
    RocksDB files (tens of MB per start); the role logs stay in ``<state dir>/logs`` for reading after the
    run."""
    stack.stop()
    for name in ("pgdata", "emulator", ".sfsync"):
        shutil.rmtree(stack.state_dir / name, ignore_errors=True)


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


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its living children (/proc counters, via psutil)."""
    try:
        proc = psutil.Process(pid)
        tree = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for p in tree:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def stack_pids(stack: DevStack) -> dict[str, int]:
    """Each role, the emulator, the broker and PostgreSQL: name -> pid."""
    pids = {name: p.pid for name, p in stack.roles.procs.items()}
    if stack.emulator is not None:
        pids["emulator"] = stack.emulator.process.pid
    for name, popen in (("broker", stack.broker.proc), ("postgres", stack.postgres.proc)):
        if popen is not None:
            pids[name] = popen.pid
    return pids


def cpu_seconds(stack: DevStack) -> dict[str, float]:
    """CPU seconds used so far by each role, the emulator, the broker and PostgreSQL (with children)."""
    return {name: tree_cpu_seconds(pid) for name, pid in stack_pids(stack).items()}


def cpu_us_per_record(before: dict[str, float], after: dict[str, float], records: int) -> dict[str, float]:
    """Microseconds of CPU each process spent per record over a phase: the figure that says which
    process an optimisation should aim at (a share of cores hides how much work each record costs)."""
    return {k: (after[k] - before.get(k, 0.0)) * 1e6 / max(1, records) for k in after}


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


def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create fresh topics for a baseline (each run its own, so no run reads another's records)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep a reference until the futures resolve
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(10)


def _bench_producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})


def _bench_consumer(bootstrap: str, topic: str) -> Consumer:
    """A consumer of ``topic`` from its start, assigned before it returns (a join takes ~3 s here)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-g", "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "fetch.wait.max.ms": 10, "enable.auto.commit": False})
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    return consumer


def _produce_all(producer: Producer, topic: str, payloads: list[bytes]) -> None:
    """Produce every payload (keys as the pipeline's: 1,000 distinct records) and wait for delivery."""
    for i, value in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, value, key=str(i % 1000))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)


def _consume_n(consumer: Consumer, n: int, timeout: float) -> None:
    got = 0
    deadline = time.monotonic() + timeout
    while got < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"baseline: {got} of {n} messages after {timeout} s")
        got += sum(1 for m in consumer.consume(1000, 1.0) if m.error() is None)


def broker_pass_through(bootstrap: str, payloads: list[bytes], topic: str, partitions: int = 3) -> float:
    """Messages/s for confluent-kafka produce -> consume of the same payloads (the raw broker's rate)."""
    create_topics(bootstrap, [topic], partitions)
    producer = _bench_producer(bootstrap)
    consumer = _bench_consumer(bootstrap, topic)
    started = time.perf_counter()
    _produce_all(producer, topic, payloads)
    _consume_n(consumer, len(payloads), 300)
    elapsed = time.perf_counter() - started
    consumer.close()
    return len(payloads) / elapsed


_OVERLAP = re.compile(r"Timer (\S+) is overlapping \(interval=([\d.]+) runtime=([\d.]+)\)")


def log_size(path: Path) -> int:
    """Where a log ends now, so :func:`timer_overlaps` reads only what a phase added."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def timer_overlaps(path: Path, start: int = 0) -> dict[str, list[float]]:
    """faust's (mode's) "Timer X is overlapping (interval=I runtime=R)" warnings in a log since byte
    ``start``: timer name -> runtimes (s). A ``commit`` runtime is how long one offset commit took, when
    it took longer than the commit interval; other timers overlapping means the event loop was blocked."""
    out: dict[str, list[float]] = {}
    try:
        with path.open("rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return out
    for name, _interval, runtime in _OVERLAP.findall(text):
        out.setdefault(name, []).append(float(runtime))
    return out


@dataclass
class RelayResult:
    """One bare faust relay measurement (:func:`faust_relay`)."""

    rate: float  #: messages/s, first produce -> last relayed message consumed
    cpu_us: dict[str, float]  #: µs of CPU per message: the relay process, the broker
    rss_mib: float  #: the relay's resident memory at the end
    commits: list[float]  #: seconds each of the relay's offset commits took (all of them)
    overlaps: dict[str, list[float]]  #: the relay's own "Timer ... is overlapping" warnings
    settings: dict[str, Any]  #: the faust settings it ran with (copied from the processor)


def faust_relay(stack: DevStack, payloads: list[bytes], tag: str, partitions: int) -> RelayResult:
    """Messages/s through a bare faust relay (``bench/faust_relay.py``): confluent-kafka produces the
    payloads to a source topic, the relay (its own process, the processor's faust settings) forwards each
    to a target topic, a confluent-kafka consumer reads them there. The relay is started and shown to
    forward a canary first, so its start and group join are not in the figure."""
    assert stack.endpoints is not None
    bootstrap = stack.endpoints.kafka
    source, target = f"bench-relay-{tag}-in", f"bench-relay-{tag}-out"
    create_topics(bootstrap, [source, target], partitions)
    stats_path = stack.state_dir / f"faust-relay-{tag}.json"
    log_path = stack.state_dir / "logs" / f"faust-relay-{tag}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    consumer = _bench_consumer(bootstrap, target)
    relay = spawn([sys.executable, str(Path(__file__).with_name("faust_relay.py")), "--config",
                   str(stack.config_path), "--bootstrap", bootstrap, "--source", source, "--target", target,
                   "--partitions", str(partitions), "--app-id", f"bench-relay-{tag}", "--stats", str(stats_path),
                   "--max-seconds", "600"], log_path)
    try:
        producer = _bench_producer(bootstrap)
        producer.produce(source, b"canary", key=b"canary")
        producer.flush(10)
        deadline = time.monotonic() + 120
        while not any(m.error() is None for m in consumer.consume(100, 0.5)):
            if relay.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the faust relay did not forward its canary; log: {log_path}")
        broker = stack.broker.proc.pid if stack.broker.proc is not None else relay.pid
        before = {"faust relay": tree_cpu_seconds(relay.pid), "broker": tree_cpu_seconds(broker)}
        started = time.perf_counter()
        _produce_all(producer, source, payloads)
        _consume_n(consumer, len(payloads), 300)
        elapsed = time.perf_counter() - started
        after = {"faust relay": tree_cpu_seconds(relay.pid), "broker": tree_cpu_seconds(broker)}
        rss = psutil.Process(relay.pid).memory_info().rss / 2**20
        time.sleep(1.2)  # the relay writes its counters once a second
        stats = json.loads(stats_path.read_text())
    finally:
        consumer.close()
        stop_process(relay)
    return RelayResult(rate=len(payloads) / elapsed, cpu_us=cpu_us_per_record(before, after, len(payloads)),
                       rss_mib=rss, commits=[float(c) for c in stats["commits"]],
                       overlaps=timer_overlaps(log_path), settings=stats["settings"])


def add_relay_commits(figures: Figures, relay: RelayResult) -> None:
    """The relay's own commit durations (every commit timed in the relay): what one faust commit costs
    on this broker when nothing but faust runs, to set the processor's commit gaps against."""
    figures.add("bare faust relay commits timed", len(relay.commits), "{:.0f}")
    figures.add("bare faust relay commit, median (s)",
                statistics.median(relay.commits) if relay.commits else float("nan"), "{:.3f}")
    figures.add("bare faust relay commit, max (s)", max(relay.commits, default=float("nan")), "{:.3f}")


def topic_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end as the broker reports it (ListOffsets), where a phase's records will start. The
    embedded broker may under-report an end (docs/kafka.md): reading from it then reads a few records more,
    which the callers filter out by content."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ends-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def read_from(bootstrap: str, topic: str, start: dict[int, int], timeout: float = 60.0) -> list[Message]:
    """Every message of ``topic`` from ``start[partition]`` to the partition's end (read to the end, not
    ListOffsets), in offset order per partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
        out: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while at_end != set(start) and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                error = m.error()
                if error is None:
                    out.append(m)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition() or 0)
        return out
    finally:
        consumer.close()


def add_stages(figures: Figures, bootstrap: str, started: float, stages: list[tuple[str, str, dict[int, int]]],
               landed_s: float, records: int) -> None:
    """When each stage of the bulk phase had written half and all of its records, in seconds from the bulk
    phase's start (``started``, epoch seconds): ``stages`` are (label, topic, that topic's ends before the
    phase), read back from the topics (each record's Kafka timestamp; the first ``records`` of the phase, in
    time order, so echoes and other later records do not count). The stage that finishes far behind the one
    before it is where a bulk load queues; ``landed_s`` is the target's own finish."""
    for label, topic, start in stages:
        times = sorted(kafka_time(m) for m in read_from(bootstrap, topic, start))[:records]
        if len(times) < records:
            figures.text(f"bulk stage done (s): {label}", f"only {len(times)} of {records} records read back")
            continue
        figures.add(f"bulk stage half (s): {label}", times[len(times) // 2 - 1] - started, "{:.2f}")
        figures.add(f"bulk stage done (s): {label}", times[-1] - started, "{:.2f}",
                    note=f"the last of the {records} records in {topic}")
    figures.add("bulk stage done (s): target", landed_s, "{:.2f}", note="every record at the target")


def kafka_time(msg: Message) -> float:
    """A message's Kafka timestamp (its producer's CreateTime) in seconds since the epoch."""
    return msg.timestamp()[1] / 1000


#: the trickle's hops, in the order a change passes them (the keys of :func:`add_hops`' samples)
HOPS = ("capture", "processor", "sink", "seen")


def add_hops(figures: Figures, hops: dict[str, list[float]], labels: dict[str, str]) -> None:
    """p50 / p99 of each hop of the trickle (ms), from the timestamps the records carry: where the latency
    goes. ``labels`` say what each hop spans, from which timestamp to which."""
    for hop in HOPS:
        samples = hops.get(hop) or []
        if not samples:
            figures.add(f"trickle hop p50 (ms): {hop}", float("nan"), note=f"{labels[hop]} (no samples)")
            continue
        p50, p99, _worst = percentiles([s * 1000 for s in samples])
        figures.add(f"trickle hop p50 (ms): {hop}", p50, note=f"{labels[hop]}, {len(samples)} records")
        figures.add(f"trickle hop p99 (ms): {hop}", p99)


class PeakRss:
    """Samples every role's resident memory twice a second during a phase and keeps each one's peak:
    the end-of-run RSS misses a batch that was held (and freed) mid-phase."""

    def __init__(self, stack: DevStack, every: float = 0.5) -> None:
        self.pids = {name: p.pid for name, p in stack.roles.procs.items()}
        self.peak: dict[str, float] = dict.fromkeys(self.pids, 0.0)
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                self.peak[name] = max(self.peak[name], psutil.Process(pid).memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()


class CommitWatch:
    """When the processor's committed offsets move, seen from outside: a consumer in the processor's group
    that never subscribes (so it never joins or rebalances it; the sinks' backlog probe does the same) asks
    for the group's committed offsets every ``every`` s. The gaps between advances show a commit stall
    without touching the processor: faust commits every 0.5 s, so a gap of seconds is a commit (or the
    stream) stuck. Resolution: ``every`` plus one OffsetFetch round trip."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int, every: float = 0.1) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.every = every
        self.advances: list[float] = []
        self._last: tuple[int, ...] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                offsets = tuple(tp.offset for tp in self.consumer.committed(self.tps, timeout=5))
            except Exception:  # a slow answer: try again; the gap shows in the figure
                offsets = self._last or ()
            now = time.monotonic()
            if self._last is not None and offsets != self._last:
                self.advances.append(now)
            self._last = offsets
            self._stop.wait(self.every)

    def __enter__(self) -> CommitWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()

    def gaps(self) -> list[float]:
        """Seconds between successive advances of the committed offsets."""
        return [b - a for a, b in zip(self.advances, self.advances[1:], strict=False)]


class Landed:
    """Samples how many of a phase's records have landed, every ``every`` s, in a thread of its own, from
    the phase's start: the records/s of the first and of the second half of the records (:meth:`halves`)
    show whether the pipeline slows down as a run goes on (the embedded broker does, with every
    transaction a tailed partition holds: ``bench/broker.py``), which one rate over the whole run hides."""

    def __init__(self, count: Callable[[], int], every: float = 0.25) -> None:
        self.count = count
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.count()))
            self._stop.wait(self.every)

    def __enter__(self) -> Landed:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def halves(self, started: float, total: int, ended: float) -> tuple[float, float]:
        """records/s for the first ``total / 2`` records (from ``started``) and for the rest (to ``ended``)."""
        half = total / 2
        t_half = next((t for t, n in self.samples if n >= half), ended)
        return half / max(1e-3, t_half - started), half / max(1e-3, ended - t_half)


class PySpy:
    """An optional sampling profile of some role processes during a phase (``--py-spy PATH`` of the
    benchmarks): ``py-spy record`` per process, collapsed stacks in ``<out_dir>/profile-<role>.txt``.
    py-spy is not a dependency of sfsync; give the path of one you installed (``pip install py-spy``). The
    CPU figures say which process costs most per record; this says which of its functions."""

    def __init__(self, exe: str, pids: dict[str, int], out_dir: Path, rate: int = 50) -> None:
        self.exe = exe
        self.pids = pids
        self.out = {name: out_dir / f"profile-{name}.txt" for name in pids}
        self.rate = rate
        self.procs: list[Any] = []

    def __enter__(self) -> PySpy:
        import subprocess

        for name, pid in self.pids.items():
            self.procs.append(subprocess.Popen(
                [self.exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                 "--output", str(self.out[name]), "--nonblocking", "--duration", "3600"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def __exit__(self, *_exc: object) -> None:
        import signal
        import subprocess

        for proc in self.procs:  # py-spy writes its output when interrupted
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def profile_summary(path: Path, top: int = 10) -> list[tuple[str, float]]:
    """The functions with the largest share of a py-spy raw profile's samples (inclusive), leaving out
    the frames nearly every sample passes (the process's entry points and event loop), so what is left
    is where the work is."""
    inclusive: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = {re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if not f.startswith(("process ", "thread "))}
        for f in frames:
            inclusive[f] = inclusive.get(f, 0) + n
    if not total:
        return []
    shares = sorted(((f, n / total) for f, n in inclusive.items() if n / total < 0.6), key=lambda x: -x[1])
    return shares[:top]


@dataclass
class Figures:
    """Every figure of every run, printed as min / median / max with the runs' own values: a median
    of three says more than one run on a shared 2-core machine, and the spread says how much to trust it."""

    rows: dict[str, list[float]] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: float, fmt: str = "{:,.0f}", note: str = "") -> None:
        self.rows.setdefault(name, []).append(value)
        self.formats[name] = fmt
        if note:
            self.notes[name] = note

    def text(self, name: str, value: str) -> None:
        """A line printed as it is (settings, per-run remarks)."""
        self.texts.append((name, value))

    def print(self, title: str) -> None:
        rows: list[tuple[str, str]] = []
        for name, values in self.rows.items():
            fmt = self.formats[name]
            ordered = sorted(values)
            summary = " / ".join(fmt.format(v) for v in (ordered[0], statistics.median(ordered), ordered[-1]))
            runs = ", ".join(fmt.format(v) for v in values)
            note = f"  {self.notes[name]}" if name in self.notes else ""
            rows.append((name, f"{summary}  [{runs}]{note}"))
        print_table(f"{title}\nmin / median / max over {max(map(len, self.rows.values()), default=0)} runs "
                    "[each run in order]", rows + self.texts)


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 30))
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
