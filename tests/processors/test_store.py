"""The processor's ``records`` Table store (``processor.store``, :mod:`processors.store`).

Unit: what :func:`processors.store.store_settings` gives faust for each setting. Worker: a real processor
worker (``python -m sfsync run processor``, as in ``test_worker.py``) against the real broker, restarted
after its table changelog topic was emptied: with ``rocksdb`` the restarted worker still knows the record
(it reads its own RocksDB files), so a change equal to the state is still recognised as unchanged; with
``memory`` the same restart forgets it. Assertions read Kafka (what came out on ``apply.salesforce``) and
the worker's data directory, never the worker's internals.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import rocksdict
import yaml
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_helpers import running_broker

from processors.store import STORE_SCHEME, data_dir, store_settings
from sfsync.config import SfsyncConfig, build_config
from sfsync.devstack.roles import RoleSet
from sfsync.devstack.stack import demo_config
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.records import ApplyCommand, ChangeEvent, Operation, Source
from sfsync.serde import Serde

REPO = Path(__file__).resolve().parents[2]
ROLE = "processor"
HANG_GUARD_S = 90.0  # only for something that never happens; no assertion is about speed
KEY = b"Contact:local:7"
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- unit


def _cfg(processor: dict[str, Any] | None = None, prefix: str = "sfsync") -> SfsyncConfig:
    raw: dict[str, Any] = {"kafka": {"topic_prefix": prefix}}
    if processor is not None:
        raw["processor"] = processor
    return build_config(raw)


def test_the_default_store_is_rocksdb_with_bounded_memory_under_the_data_dir(tmp_path: Path) -> None:
    settings = store_settings(_cfg({"data_dir": str(tmp_path)}))
    assert settings == {"store": f"{STORE_SCHEME}://?cache_mb=64&write_buffer_mb=8",
                        "datadir": str(tmp_path / "sfsync-processor" / "worker-0")}
    assert store_settings(_cfg({"data_dir": str(tmp_path)})) == settings  # one slot per process


def test_each_process_on_a_machine_claims_its_own_slot_and_a_restarted_one_the_first_free(tmp_path: Path) -> None:
    """Two workers of one group sharing ``data_dir`` never open the same partition files (RocksDB's lock
    would crash the second); the slot of a process that exited is free again."""
    claim = ("import sys; from pathlib import Path; from processors.store import claim_slot; "
             "print(claim_slot(Path(sys.argv[1]))); sys.stdout.flush(); sys.stdin.read()")
    group = tmp_path / "g-processor"

    def worker() -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", claim, str(group)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
        return proc

    first, second = worker(), worker()
    try:
        slots = sorted(Path((p.stdout.readline() if p.stdout else "").strip()).name for p in (first, second))
        assert slots == ["worker-0", "worker-1"]
    finally:
        for p in (first, second):
            p.communicate("")
    again = worker()
    try:
        assert again.stdout is not None and Path(again.stdout.readline().strip()).name == "worker-0"
    finally:
        again.communicate("")


def test_the_memory_store_keeps_the_data_dir_out_of_the_working_directory(tmp_path: Path) -> None:
    settings = store_settings(_cfg({"store": "memory", "data_dir": str(tmp_path)}))
    assert settings == {"store": "memory://", "datadir": str(tmp_path / "sfsync-processor")}


def test_the_memory_bounds_reach_the_store_url(tmp_path: Path) -> None:
    settings = store_settings(_cfg({"data_dir": str(tmp_path), "cache_mb": 256, "write_buffer_mb": 32}))
    assert settings["store"] == f"{STORE_SCHEME}://?cache_mb=256&write_buffer_mb=32"


def test_each_processor_group_has_its_own_directory_and_a_relative_data_dir_is_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = data_dir(_cfg({"data_dir": "state"}, "a")), data_dir(_cfg({"data_dir": "state"}, "b"))
    assert a == tmp_path / "state" / "a-processor" and b == tmp_path / "state" / "b-processor"


def test_the_store_scheme_names_sfsyncs_rocksdb_store() -> None:
    import faust.stores

    from processors.store import RecordStore

    assert faust.stores.by_url(f"{STORE_SCHEME}://?cache_mb=64") is RecordStore


def test_the_records_table_gets_the_bounded_rocksdb_store(tmp_path: Path) -> None:
    """The Table as the processor declares it, on the settings :func:`store_settings` gives: sfsync's store
    with the configured write buffers (faust's default is 3 x 64 MiB per partition), files in the data dir."""
    import faust

    from processors.store import MIB, WRITE_BUFFERS, RecordStore

    cfg = _cfg({"data_dir": str(tmp_path), "write_buffer_mb": 4})
    app = faust.App("store-test", broker="kafka://127.0.0.1:9", **store_settings(cfg))
    table = app.Table("records", default=None, partitions=3, key_type=bytes, value_type=bytes)
    store = table.data
    assert isinstance(store, RecordStore)
    options = store.rocksdb_options
    assert (options.write_buffer_size, options.max_write_buffer_number) == (4 * MIB, WRITE_BUFFERS)
    assert store.partition_path(2) == tmp_path / "sfsync-processor" / "worker-0" / "v1" / "tables" / "records-2.db"


# ---------------------------------------------------------------------------------------------- worker


def outbound_change(local_key: str, op: Operation = Operation.UPDATE, **values: Any) -> ChangeEvent:
    """A PostgreSQL change of one ``contacts`` row, as the outbox relay writes it."""
    return ChangeEvent(source=Source.POSTGRES, object="Contact", entity="contacts", operation=op,
                       local_key=local_key, changed_fields=sorted(values), values=values,
                       commit_ts=datetime.now(UTC), source_position=uuid.uuid4().hex)


class StoreHarness:
    """One config file (with ``processor.store``), its topics, and one processor worker process."""

    def __init__(self, root: Path, kafka: dict[str, Any], store: str) -> None:
        self.raw: dict[str, Any] = demo_config()
        self.raw["kafka"] = dict(kafka)
        # no Salesforce here: the start-up mapping check finds a closed local port, never the internet
        self.raw["salesforce"] = {**self.raw.get("salesforce", {}), "login_url": "https://127.0.0.1:9"}
        self.raw["processor"] = {"store": store, "data_dir": str(root / "state")}
        self.cfg: SfsyncConfig = build_config(self.raw)
        self.config_path = root / "sfsync.yaml"
        self.config_path.write_text(yaml.safe_dump(self.raw))
        self.names = TopicNames(self.cfg.kafka.topic_prefix)
        apply_topics(self.cfg)
        self.roles = RoleSet(self.config_path, root / "logs")
        self.serde = Serde()
        self.admin = AdminClient({"bootstrap.servers": self.cfg.kafka.bootstrap_servers})
        self._producer = Producer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers, "linger.ms": 0})

    @property
    def changelog(self) -> str:
        """faust's changelog topic of the table (``<app id>-records-changelog``)."""
        return f"{self.names.processor_group}-records-changelog"

    def start(self) -> None:
        self.roles.start(ROLE)
        self.roles.wait_ready(timeout=3 * HANG_GUARD_S, names=[ROLE])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.roles.kill(ROLE, sig)
        return self.roles.procs[ROLE].returncode

    def log(self) -> str:
        path = self.roles.log_path(ROLE)
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def produce(self, topic: str, key: bytes, value: bytes | None, partition: int = 0) -> None:
        errors: list[KafkaError] = []
        self._producer.produce(topic, value, key=key, partition=partition,
                               on_delivery=lambda err, _m: errors.append(err) if err else None)
        assert self._producer.flush(30) == 0 and not errors, errors

    def change(self, change: ChangeEvent) -> None:
        self.produce(self.names.changes_outbound, KEY, self.serde.encode(change, self.names.changes_outbound))

    def read(self, topic: str, start: dict[int, int] | None = None) -> list[Message]:
        """Every message of ``topic`` up to its current end (from ``start[partition]``, else the beginning)."""
        consumer = Consumer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers,
                             "group.id": f"reader-{uuid.uuid4()}", "enable.auto.commit": False,
                             "enable.partition.eof": True})
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            if metadata.error is not None:
                return []
            partitions = set(metadata.partitions)
            consumer.assign([TopicPartition(topic, p, (start or {}).get(p, 0)) for p in partitions])
            out: list[Message] = []
            at_end: set[int] = set()
            deadline = time.monotonic() + 30
            while at_end != partitions and time.monotonic() < deadline:
                for m in consumer.consume(1000, 0.5):
                    error = m.error()
                    if error is None:
                        out.append(m)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition() or 0)
            assert at_end == partitions, f"could not read {topic} to its end"
            return out
        finally:
            consumer.close()

    def ends(self, topic: str) -> dict[int, int]:
        """The next offset of every partition of ``topic`` (read to the end, not ListOffsets: docs/kafka.md)."""
        ends: dict[int, int] = {}
        for m in self.read(topic):
            ends[m.partition() or 0] = max(ends.get(m.partition() or 0, 0), (m.offset() or 0) + 1)
        return ends

    def commands(self, start: dict[int, int] | None = None) -> dict[str, ApplyCommand]:
        """The ``apply.salesforce`` commands by source event id."""
        topic = self.names.apply_salesforce
        commands = (self.serde.decode(m.value() or b"", ApplyCommand, topic) for m in self.read(topic, start))
        return {c.source_event_id: c for c in commands}

    def empty_the_changelog(self) -> None:
        """Delete the table's changelog topic and create it again, empty but as long as it was: each
        partition gets as many tombstones of an unrelated key as it had records, so a worker that remembers
        how far its files got (faust's persisted changelog offset) still finds the partition that long.
        No worker may run. What is left of the record's state is only in the worker's own files."""
        ends = self.ends(self.changelog)
        partitions = self.cfg.kafka.partitions
        for future in self.admin.delete_topics([self.changelog]).values():
            future.result(timeout=30)
        deadline = time.monotonic() + 30
        while self.changelog in self.admin.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, "the changelog topic is still listed 30 s after its deletion"
            time.sleep(0.2)
        topic = NewTopic(self.changelog, partitions, self.cfg.kafka.replication_factor,
                         config={"cleanup.policy": "compact"})
        for future in self.admin.create_topics([topic]).values():
            future.result(timeout=30)
        for partition, end in ends.items():
            for _ in range(end):
                self.produce(self.changelog, b"unrelated", None, partition)
        assert not [m for m in self.read(self.changelog) if m.key() == KEY]

    def wait_until(self, predicate: Callable[[], T | None], what: str) -> T:
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            answer = predicate()
            if answer:
                return answer
            time.sleep(0.2)
        raise AssertionError(f"timed out after {HANG_GUARD_S:.0f} s (hang guard) waiting for {what}\n{self.log()}")

    def close(self) -> None:
        self.roles.stop_all()


@pytest.fixture(scope="module")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory, docker_available: bool) -> Iterator[str]:
    """This module's own embedded broker (as test_worker.py: worker restarts are reliable on an idle one)."""
    with running_broker(tmp_path_factory, docker_available, "store-broker") as bootstrap:
        yield bootstrap


@pytest.fixture
def harness_factory(tmp_path: Path, kafka_config: dict[str, Any]) -> Iterator[Callable[[str], StoreHarness]]:
    made: list[StoreHarness] = []

    def make(store: str) -> StoreHarness:
        made.append(StoreHarness(tmp_path, kafka_config, store))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


def restart_without_changelog(h: StoreHarness, sig: int = signal.SIGTERM,
                              ) -> tuple[ChangeEvent, ChangeEvent, dict[str, ApplyCommand]]:
    """A record created (Title T1), the worker stopped with ``sig``, the changelog emptied, the worker
    started again; then the same Title again and a new one (T2). The commands the restarted worker sent for
    the two (and for the create, when it was not committed before a kill: a redelivery)."""
    h.start()
    created = outbound_change("7", Operation.CREATE, first_name="Ada", last_name="Lovelace", title="T1")
    h.change(created)
    h.wait_until(lambda: created.event_id in h.commands(), "the create's command")
    h.wait_until(lambda: any(m.key() == KEY for m in h.read(h.changelog)), "the record's state in the changelog")
    assert h.stop(sig) == (0 if sig == signal.SIGTERM else -sig)
    h.empty_the_changelog()

    h.start()
    after = h.ends(h.names.apply_salesforce)
    same = outbound_change("7", first_name="Ada", last_name="Lovelace", title="T1")  # equal to the state
    newer = outbound_change("7", first_name="Ada", last_name="Lovelace", title="T2")
    h.change(same)
    h.change(newer)
    # the same partition, in order: once the newer change's command is out, the first one was decided
    got = h.wait_until(lambda: (c := h.commands(after)) and newer.event_id in c and c, "the newer change")
    return same, newer, got


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_restarted_worker_reads_the_records_state_from_its_rocksdb_files(
        harness_factory: Callable[[str], StoreHarness], sig: int) -> None:
    """rocksdb: the record's state outlives the worker in its data directory, also a kill -9 (RocksDB's
    write-ahead log is written with every put); the restarted worker, whose changelog holds nothing of the
    record, still takes a change equal to it for unchanged (nothing sent) and sends only the field that
    changed."""
    h = harness_factory("rocksdb")
    same, newer, got = restart_without_changelog(h, sig)
    assert same.event_id not in got, "the restarted worker forgot the record's state"
    assert got[newer.event_id].values == {"Title": "T2"}

    assert h.stop() == 0
    files = sorted(data_dir(h.cfg).rglob("records-*.db"))
    assert files, f"no partition database under {data_dir(h.cfg)}"
    held: list[str] = []
    for path in files:
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            if db.get(KEY) is not None:
                held.append(path.name)
        finally:
            db.close()
    assert held == ["records-0.db"]  # the record's partition, once


def test_a_restarted_memory_store_worker_has_only_the_changelog(
        harness_factory: Callable[[str], StoreHarness]) -> None:
    """memory: the same restart forgets the record (the changelog was its only copy), so the change equal to
    its old state is sent again in full: the restart above proves the RocksDB files, not the changelog."""
    h = harness_factory("memory")
    same, newer, got = restart_without_changelog(h)
    assert got[same.event_id].values == {"FirstName": "Ada", "LastName": "Lovelace", "Title": "T1"}
    assert newer.event_id in got
    assert not list(data_dir(h.cfg).rglob("records-*.db"))
