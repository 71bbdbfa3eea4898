"""The processor worker (``python -m sfsync run processor``) against the real broker: replay after a crash
and unexpected errors.

The worker runs as a process, started the way deploy/ starts it. Changes go in on ``changes.outbound`` the
way the outbox relay writes them; assertions read Kafka only — what came out on ``apply.salesforce`` and the
DLQ, the processor group's committed offsets and the table changelog — never the worker's internals. Each
test has its own topic prefix (the ``kafka_config`` fixture).
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka_helpers import running_broker

from sfsync.config import SfsyncConfig, build_config
from sfsync.devstack.process import free_port
from sfsync.devstack.roles import RoleSet
from sfsync.devstack.stack import demo_config
from sfsync.failures import Origin, parse_failure_headers
from sfsync.health import RESTART_EXIT_CODE
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.records import ApplyCommand, ChangeEvent, Operation, Source
from sfsync.serde import Serde

ROLE = "processor"
HANG_GUARD_S = 90.0  # only for something that never happens; no assertion is about speed
KEY = b"Contact:local:7"
T = TypeVar("T")


def outbound_change(local_key: str | None, op: Operation = Operation.UPDATE, **values: Any) -> ChangeEvent:
    """A PostgreSQL change of one ``contacts`` row, as the outbox relay writes it."""
    return ChangeEvent(source=Source.POSTGRES, object="Contact", entity="contacts", operation=op,
                       local_key=local_key, changed_fields=sorted(values), values=values,
                       commit_ts=datetime.now(UTC), source_position=uuid.uuid4().hex)


class ProcessorHarness:
    """One config file, its topics, and one processor worker process (started on demand)."""

    def __init__(self, root: Path, kafka: dict[str, Any]) -> None:
        self.raw: dict[str, Any] = demo_config()
        self.raw["kafka"] = dict(kafka)
        # no Salesforce here: the start-up mapping check finds a closed local port, never the internet
        self.raw["salesforce"] = {**self.raw.get("salesforce", {}), "login_url": "https://127.0.0.1:9"}
        self.root = root
        self.config_path = root / "sfsync.yaml"
        self.write_config()
        self.names = TopicNames(self.cfg.kafka.topic_prefix)
        apply_topics(self.cfg)
        self.roles = RoleSet(self.config_path, root / "logs")
        self.serde = Serde()  # what the producers write: single-object encoding
        self._producer = Producer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers,
                                   "message.max.bytes": 5_000_000, "linger.ms": 0})

    @property
    def changelog_outbound(self) -> str:
        """faust's changelog topic of the outbound table (``<app id>-<table>-changelog``)."""
        return f"{self.names.processor_group}-records-changelog"

    def write_config(self) -> None:
        """(Re)write the config file from ``raw``; a worker started afterwards reads it."""
        self.cfg: SfsyncConfig = build_config(self.raw)
        self.config_path.write_text(yaml.safe_dump(self.raw))

    # ------------------------------------------------------------------ the worker

    def start(self) -> None:
        """Start the worker and wait until it answers ``/readyz`` (joined, assigned, tables recovered)."""
        self.roles.start(ROLE)
        # longer than the dev stack's kafka.join_timeout_ms: a stuck join is restarted, not failed
        self.roles.wait_ready(timeout=3 * HANG_GUARD_S, names=[ROLE])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the worker with ``sig``; its exit code."""
        self.roles.kill(ROLE, sig)
        return self.roles.procs[ROLE].returncode

    def alive(self) -> bool:
        return self.roles.alive(ROLE)

    def exit_code(self) -> int | None:
        return self.roles.procs[ROLE].poll()

    def log(self) -> str:
        path = self.roles.log_path(ROLE)
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    # ------------------------------------------------------------------ Kafka

    def produce(self, topic: str, change: ChangeEvent, key: bytes | None, partition: int = 0) -> int:
        """Write one change to ``partition``; its offset once acknowledged."""
        got: list[Message] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            got.append(msg)

        self._producer.produce(topic, self.serde.encode(change, topic), key=key, partition=partition,
                               on_delivery=delivered)
        assert self._producer.flush(30) == 0 and got
        offset = got[0].offset()
        assert offset is not None
        return offset

    def _consumer(self) -> Consumer:
        return Consumer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers, "group.id": f"reader-{uuid.uuid4()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})

    def read(self, topic: str, start: dict[int, int] | None = None) -> list[Message]:
        """Every message of ``topic`` up to its current end (from ``start[partition]``, else the beginning)."""
        consumer = self._consumer()
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            if metadata.error is not None:  # not created (yet)
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

    def commands(self, topic: str, start: dict[int, int] | None = None) -> list[ApplyCommand]:
        return [self.serde.decode(m.value() or b"", ApplyCommand, topic) for m in self.read(topic, start)]

    def committed(self, topic: str, partition: int) -> int | None:
        """The processor group's committed offset of ``topic[partition]`` (``None``: never committed)."""
        consumer = Consumer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers,
                             "group.id": self.names.processor_group, "enable.auto.commit": False})
        try:
            [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
            return tp.offset if tp.offset >= 0 else None
        finally:
            consumer.close()

    def forget_committed_offsets(self) -> None:
        """Delete the processor group with its committed offsets (no worker may run): a worker started
        afterwards reads every partition from its beginning (``auto.offset.reset=earliest``).

        Not a commit of an older offset: the embedded broker refuses commits from outside a group that had
        members (``UNKNOWN_MEMBER_ID``), and keeps the faust protocol so another client cannot join it.
        """
        admin = AdminClient({"bootstrap.servers": self.cfg.kafka.bootstrap_servers})
        group = self.names.processor_group
        for future in admin.delete_consumer_groups([group]).values():
            future.result(timeout=30)
        # start the next worker only once the broker no longer lists the group (it may answer the deletion
        # first; a restarted worker sometimes sat idle after "marking coordinator dead" right after this)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = admin.list_consumer_groups().result(timeout=30).valid
            if all(g.group_id != group for g in listed):
                return
            time.sleep(0.2)
        raise AssertionError(f"group {group} still listed 30 s after its deletion")

    def table_entries(self, changelog: str) -> dict[bytes, bytes | None]:
        """The latest value per key of a table's changelog (what a restarted worker recovers)."""
        return {m.key() or b"": m.value() for m in self.read(changelog)}

    def wait_until(self, predicate: Callable[[], T | None], what: str, timeout: float = HANG_GUARD_S,
                   interval: float = 0.2) -> T:
        """``predicate()``'s first truthy answer; fails (with the worker's log) when none comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = predicate()
            if answer:
                return answer
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s (hang guard) waiting for {what}\n{self.log()}")

    def close(self) -> None:
        self.roles.stop_all()


@pytest.fixture(scope="module")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory, docker_available: bool) -> Iterator[str]:
    """This module's own embedded broker (overrides the session's): the worker restarts here failed under
    load on the shared one (a restarted worker sat idle after "Error sending JoinGroupRequest ... marking
    coordinator dead", also after its group was deleted), never on an idle broker of their own."""
    with running_broker(tmp_path_factory, docker_available, "worker-broker") as bootstrap:
        yield bootstrap


@pytest.fixture
def processor_harness(tmp_path: Path, kafka_config: dict[str, Any]) -> Iterator[ProcessorHarness]:
    harness = ProcessorHarness(tmp_path, kafka_config)
    try:
        yield harness
    finally:
        harness.close()


def by_event(commands: list[ApplyCommand]) -> dict[str, ApplyCommand]:
    """The command sent for each source event; a replayed event's resends (one per version) merged into one."""
    out: dict[str, ApplyCommand] = {}
    for c in commands:
        before = out.get(c.source_event_id)
        out[c.source_event_id] = c if before is None else replace(c, values={**before.values, **c.values})
    return out


def row_change(local_key: str, row: dict[str, Any], changed: list[str],
               op: Operation = Operation.UPDATE) -> ChangeEvent:
    """A change exactly as the outbox relay writes it: the whole row image in ``values``, the columns the
    statement changed in ``changed_fields``."""
    return ChangeEvent(source=Source.POSTGRES, object="Contact", entity="contacts", operation=op,
                       local_key=local_key, changed_fields=changed, values=dict(row),
                       commit_ts=datetime.now(UTC), source_position=uuid.uuid4().hex)


def replay_after_crash(h: ProcessorHarness, changes: list[ChangeEvent]) -> dict[str, ApplyCommand]:
    """Process ``changes`` (all of record ``KEY``), then simulate a crash before any offset was committed and
    restart the worker; the commands the restarted worker sent, by source event id.

    The crash is simulated exactly: a worker processes the changes and stops, then the group's committed
    offsets are deleted, so they stand before the first change (what a kill -9 before the commit leaves:
    table changelog written, offsets not committed). Outputs of the first run count as lost; only the
    restart's are read.
    """
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    h.start()
    offsets = [h.produce(source, c, KEY) for c in changes]
    h.wait_until(lambda: {c.event_id for c in changes} <= set(by_event(h.commands(target))), "the first run's commands")
    h.wait_until(lambda: len(h.read(h.changelog_outbound)) >= len(changes), "the table's changelog")
    # The embedded broker reports a partition's end as its last record batch's base offset + 1, and faust
    # recovers a table only up to the reported end: a later change of another record (its own batch) makes
    # the restarted worker recover the whole state of the changes.
    other = outbound_change("8", Operation.CREATE, last_name="Other")
    h.produce(source, other, b"Contact:local:8")
    h.wait_until(lambda: b"Contact:local:8" in h.table_entries(h.changelog_outbound), "the other record's state")
    assert h.stop() == 0

    lost = h.ends(target)  # everything the first run sent counts as lost from here on
    assert offsets[0] == 0  # the first change is the partition's first record: "not committed" = no offset
    h.forget_committed_offsets()
    assert h.committed(source, 0) is None
    log_path = h.roles.log_path(ROLE)
    mark = log_path.stat().st_size
    h.start()
    if "marking coordinator dead" in log_path.read_bytes()[mark:].decode(errors="replace"):
        # The embedded broker sometimes closes the first JoinGroup connection after a group deletion, and
        # the worker then sits assigned and idle (docs/kafka.md). Deleting the group is this harness's way
        # to simulate the crash, not something sfsync does: restart the worker once, as a supervisor would
        # (SIGKILL: it processed nothing, so nothing is committed and the replay still starts at offset 0).
        h.stop(signal.SIGKILL)
        h.start()

    def resent() -> dict[str, ApplyCommand] | None:
        got = by_event(h.commands(target, lost))
        return got if other.event_id in got else None  # replayed after the changes (same partition, in order)

    return h.wait_until(resent, "the replay of the change after the replayed ones")


def test_changes_replayed_after_a_crash_are_resent_in_full(processor_harness: ProcessorHarness) -> None:
    """Several changes of one record were processed (the table holds their state) but the source offsets were
    not committed — a crash before the outputs were acknowledged. A restarted worker replays them: each must
    be sent again — sfsync's newest write of each of its fields (:mod:`processors.conflicts`, Redelivery) —
    none suppressed by the state it produced itself; after the replay, suppression works as before (state did
    not move backwards).

    The crash is simulated exactly (:func:`replay_after_crash`).

    Failed before the fix: the replayed first change went out with only Title (FirstName and LastName equal
    to the restored state, suppressed), and the last one not at all: the replayed first change had set the
    state back to its own values and id, so the third compared equal to it and was no longer "the change
    that set the state".
    """
    h = processor_harness
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    changes = [
        outbound_change("7", Operation.CREATE, first_name="Ada", last_name="Lovelace", title="T1"),
        outbound_change("7", title="T2"),
        outbound_change("7", phone="555"),
    ]
    got = replay_after_crash(h, changes)
    sent = {c.event_id: got[c.event_id].values if c.event_id in got else None for c in changes}
    # each replayed change sends sfsync's newest write of each of its fields (the winner): Title of the first
    # was won since by the second, so the first's replay carries T2
    assert sent == {
        changes[0].event_id: {"FirstName": "Ada", "LastName": "Lovelace", "Title": "T2"},
        changes[1].event_id: {"Title": "T2"},
        changes[2].event_id: {"Phone": "555"},
    }

    # The replay left the newest state: an unchanged value is suppressed, a new one sent alone.
    echo = outbound_change("7", title="T2", phone="555")
    newer = outbound_change("7", title="T3", phone="555")
    after = h.ends(target)
    h.produce(source, echo, KEY)
    h.produce(source, newer, KEY)
    later = h.wait_until(lambda: (got := by_event(h.commands(target, after))) and newer.event_id in got and got,
                         "the change after the replay")
    assert echo.event_id not in later
    assert later[newer.event_id].values == {"Title": "T3"}


def test_a_replayed_change_carries_only_the_columns_it_changed(processor_harness: ProcessorHarness) -> None:
    """The relay writes the whole row image with every change; a change replayed after a crash must carry only
    the columns its statement changed. The row image's other columns are what the row held at that commit:
    Salesforce may have changed them since (an inbound write lands in PostgreSQL without a capture), so
    sending them again would put an older value back in Salesforce.

    Failed before the fix (seed 399597807 of ``tests/e2e/test_kill_random.py``): the replayed update went out
    with the whole row (FirstName, LastName, Title, Phone), and Salesforce's newer Phone was overwritten by the
    row image's old one.
    """
    row = {"first_name": "Ada", "last_name": "Lovelace", "title": "T1", "phone": "100"}
    changes = [
        row_change("7", row, sorted(row), Operation.CREATE),
        row_change("7", {**row, "title": "T2"}, ["title"]),
        row_change("7", {**row, "title": "T2", "first_name": "Augusta"}, ["first_name"]),
    ]
    got = replay_after_crash(processor_harness, changes)
    assert {c.event_id: got[c.event_id].values if c.event_id in got else None for c in changes} == {
        changes[0].event_id: {"FirstName": "Augusta", "LastName": "Lovelace", "Title": "T2", "Phone": "100"},
        changes[1].event_id: {"Title": "T2"},
        changes[2].event_id: {"FirstName": "Augusta"},
    }


def _not_committed(h: ProcessorHarness, source: str, offset: int) -> None:
    assert (h.committed(source, 0) or 0) <= offset, (
        f"offset {offset} of {source} was committed: the change is lost\n{h.log()}")


def _stopped_or_committed_past(h: ProcessorHarness, source: str, offset: int) -> Any:
    return not h.alive() or (h.committed(source, 0) or 0) > offset


def test_a_failing_schema_registry_stops_the_worker_without_committing_the_change(
        processor_harness: ProcessorHarness) -> None:
    """The schema registry refuses connections (``kafka.schema_registry.url`` on a closed port): a change
    that cannot be encoded for that reason is not the record's fault. The worker stops without committing
    it and without recording it in the table; once the registry is fixed, a restarted worker sends it.

    Failed before the fix: the agent raised after the table was updated; faust restarted the agent, skipped
    the change and committed its offset — the worker kept running and the change was gone for good.
    """
    h = processor_harness
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    h.raw["kafka"]["schema_registry"] = {"url": f"http://127.0.0.1:{free_port()}"}
    h.write_config()
    h.start()
    change = outbound_change("7", Operation.CREATE, first_name="Ada", last_name="Lovelace")
    offset = h.produce(source, change, KEY)
    h.wait_until(lambda: _stopped_or_committed_past(h, source, offset), "the worker to stop or commit the change")
    _not_committed(h, source, offset)
    assert not h.alive() and h.exit_code() != 0
    assert KEY not in h.table_entries(h.changelog_outbound)  # the table records only what was sent

    del h.raw["kafka"]["schema_registry"]  # the operator fixes the registry
    h.write_config()
    h.start()
    got = h.wait_until(lambda: by_event(h.commands(target)).get(change.event_id), "the change after the restart")
    assert got.values == {"FirstName": "Ada", "LastName": "Lovelace"}


def test_a_worker_stalled_on_a_registry_that_never_answers_exits_for_a_restart_and_loses_nothing(
        processor_harness: ProcessorHarness) -> None:
    """The schema registry accepts the connection and never answers: the worker's first encode blocks its
    event loop for good, with the change read and not committed. Its health would go stale, but nothing in
    the worker ends it; the stall watchdog (:mod:`processors.stall`), a thread that asks the broker what
    waits on the worker's partitions, exits with 75 once no event was handled for
    ``processor.stall_timeout_s`` while a record waited. A worker started once the registry is fixed sends
    the change.

    Failed before the watchdog: the worker stayed alive, assigned and silent (the test timed out waiting for
    it to stop)."""
    h = processor_harness
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)  # the kernel accepts the connection; nobody ever reads or answers
        h.raw["kafka"]["schema_registry"] = {"url": f"http://127.0.0.1:{black_hole.getsockname()[1]}"}
        h.raw["processor"] = {**h.raw.get("processor", {}), "stall_timeout_s": 2}
        h.write_config()
        h.start()
        change = outbound_change("7", Operation.CREATE, first_name="Ada", last_name="Lovelace")
        offset = h.produce(source, change, KEY)
        h.wait_until(lambda: not h.alive(), "the stalled worker to exit")
        assert h.exit_code() == RESTART_EXIT_CODE, h.log()
        assert "no change handled for" in h.log() and "exiting with 75" in h.log()
        _not_committed(h, source, offset)

    del h.raw["kafka"]["schema_registry"]  # the operator fixes the registry
    h.write_config()
    h.start()
    got = h.wait_until(lambda: by_event(h.commands(target)).get(change.event_id), "the change after the restart")
    assert got.values == {"FirstName": "Ada", "LastName": "Lovelace"}


def test_a_failed_send_stops_the_worker_without_committing_the_change(processor_harness: ProcessorHarness) -> None:
    """The producer refuses the apply command (larger than its ``max_request_size``): the send fails. The DLQ
    would take the same producer and a change as large, so the worker stops without committing the change
    and without recording it in the table.

    Failed before the fix: the agent raised after the table was updated; faust restarted the agent, skipped
    the change and committed its offset — the worker kept running.
    """
    h = processor_harness
    source = h.names.changes_outbound
    h.start()
    big = outbound_change("7", title="x" * 1_100_000)
    offset = h.produce(source, big, KEY)
    h.wait_until(lambda: _stopped_or_committed_past(h, source, offset), "the worker to stop or commit the change")
    _not_committed(h, source, offset)
    assert not h.alive() and h.exit_code() != 0
    assert KEY not in h.table_entries(h.changelog_outbound)
    assert h.read(h.names.dlq("salesforce")) == []


def test_an_unexpected_error_while_deciding_dead_letters_the_change(processor_harness: ProcessorHarness) -> None:
    """A change the mapping accepts but the agent cannot key (no Kafka key, neither sfid nor local key) raises
    an unexpected ``ValueError``. It goes to the DLQ with that reason and its origin; the changes behind it
    flow.

    Failed before the fix: faust restarted the agent and skipped the change: nothing on the DLQ, no trace.
    """
    h = processor_harness
    source, target, dlq = h.names.changes_outbound, h.names.apply_salesforce, h.names.dlq("salesforce")
    h.start()
    poison = outbound_change(None, Operation.CREATE, first_name="Nobody")
    offset = h.produce(source, poison, None)
    after = outbound_change("8", Operation.CREATE, first_name="Next")
    h.produce(source, after, b"Contact:local:8")
    h.wait_until(lambda: by_event(h.commands(target)).get(after.event_id), "the change behind the poison")
    letters = [parse_failure_headers(m.headers()) for m in h.read(dlq)]
    assert [(i.error_class, i.kind, i.stage, i.origin) for i in letters] == [
        ("ValueError", "permanent", "processor", Origin(source, 0, offset))]
    assert "neither sfid nor local_key" in letters[0].message


def test_a_restarted_worker_recovers_the_whole_table(processor_harness: ProcessorHarness) -> None:
    """Failed before the fix: faust recovers a table only up to the changelog end that ListOffsets reports,
    and the embedded broker reports a partition's last record batch's base offset + 1 (docs/kafka.md). The
    three changes of the record were written to the changelog in one batch, so a restarted worker recovered
    the state of the first one (Title T1) and took a later change back to T1 for an echo: never sent."""
    h = processor_harness
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    changes = [outbound_change("7", Operation.CREATE, last_name="L", title="T1"),
               outbound_change("7", title="T2"), outbound_change("7", title="T3")]
    h.start()
    batched = Producer({"bootstrap.servers": h.cfg.kafka.bootstrap_servers, "linger.ms": 200})
    for change in changes:  # one record batch in, so the worker writes its table changes close together
        batched.produce(source, h.serde.encode(change, source), key=KEY, partition=0)
    assert batched.flush(30) == 0
    h.wait_until(lambda: {c.event_id for c in changes} <= set(by_event(h.commands(target))), "the three commands")
    h.wait_until(lambda: len(h.read(h.changelog_outbound)) >= 3, "the table's changelog")
    assert h.stop() == 0
    h.start()  # recovers the table from its changelog
    after = h.ends(target)
    back = outbound_change("7", title="T1")  # back to the first value: a real change, the state says T3
    h.produce(source, back, KEY)
    got = h.wait_until(lambda: by_event(h.commands(target, after)).get(back.event_id), "the change back to T1")
    assert got.values == {"Title": "T1"}


def test_a_hole_in_the_outbound_change_topic_is_never_committed_past(processor_harness: ProcessorHarness) -> None:
    """``changes.outbound`` is written by the relay alone (idempotent, not transactional): its offsets have no
    holes. faust takes a jump in offsets for records that do not exist and commits past it, so records a
    fetch did not return (the embedded broker can skip a batch, docs/kafka.md) were lost for good. Here the
    hole is a transaction marker (another producer wrote transactionally, which nothing in sfsync does):
    the worker must stop at the first record after the hole without committing past it.

    Failed before the guard: the worker went on, the record after the hole was processed and its offset,
    with the hole's, committed (found as a lost outbound change by seed 4093629515 of the kill test).
    Failed again in CI (stop 22, committed 4): the agent stopped at the record after the hole before holding
    it, and faust's stream acknowledged that record when the agent was cancelled; the consumer's stop then
    committed it. A race with the stop, not reproduced on an idle machine.
    """
    from confluent_kafka import Producer

    from sfsync.kafka.settings import producer_settings

    h = processor_harness
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    h.start()
    before = outbound_change("7", Operation.CREATE, last_name="Before")
    h.produce(source, before, KEY)
    tx = Producer({**producer_settings(h.cfg.kafka, "tx-test", f"tx-{uuid.uuid4().hex}"), "linger.ms": 0})
    tx.init_transactions(30)
    tx.begin_transaction()
    inside = outbound_change("7", title="inside")
    tx.produce(source, h.serde.encode(inside, source), key=KEY, partition=0)
    tx.commit_transaction(30)  # the commit marker takes the next offset: the hole
    after = outbound_change("7", title="after")
    offset = h.produce(source, after, KEY)
    h.wait_until(lambda: not h.alive(), "the worker to stop at the hole")
    assert h.exit_code() != 0
    _not_committed(h, source, offset - 1)  # nothing past the hole (the marker's offset) was committed
    sent = {c.source_event_id for c in h.commands(target)}
    assert before.event_id in sent and inside.event_id in sent and after.event_id not in sent
    assert "were not returned by the broker" in h.log()


def test_a_worker_killed_and_restarted_mid_stream_decides_every_change_in_order(
        processor_harness: ProcessorHarness) -> None:
    """Changes keep flowing while the worker is killed (``kill -9``) and started again. The dead member stays in
    the group until its session times out, so the new worker goes through a second rebalance while it
    processes; faust resumes fetching before it seeks back to the committed offsets (faust-streaming issues 216
    and 221) and hands the agent offsets past ones it dropped from its buffers. Every change must still be
    decided, in offset order: per record and field, the last command carrying the field has the last value.

    Failed before :mod:`processors.order` (seed 2028258776 of ``tests/e2e/test_kill_random.py``, at this
    scale): the worker took the jump for a hole and stopped itself again after each restart; without that
    guard, the dropped older changes came back after newer ones and were taken for replays — never decided.
    """
    h = processor_harness
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    fields = [("first_name", "FirstName"), ("title", "Title"), ("phone", "Phone")]
    records, rounds = 30, 12
    last: dict[tuple[str, str], str] = {}
    h.start()

    def write(round_: int) -> None:
        for r in range(records):
            column, name = fields[round_ % len(fields)]
            value = f"{name}-{r}-{round_}"
            op = Operation.CREATE if round_ == 0 else Operation.UPDATE
            extra = {"last_name": f"L{r}"} if round_ == 0 else {}
            h.produce(source, outbound_change(str(r), op, **{column: value}, **extra), f"Contact:local:{r}".encode(),
                      partition=r % 3)
            last[(str(r), name)] = value

    for round_ in range(rounds):
        write(round_)
        if round_ == 3:
            h.stop(signal.SIGKILL)
            h.roles.start(ROLE)  # not waiting for it: the changes keep coming while it joins
        time.sleep(0.3)
    h.roles.wait_ready(timeout=HANG_GUARD_S, names=[ROLE])

    def final() -> dict[tuple[str, str], str] | None:
        got: dict[tuple[str, str], str] = {}
        for c in h.commands(target):
            for name, value in c.values.items():
                if name != "LastName":
                    got[(c.local_key or "", name)] = str(value)
        return got if got == last or not h.alive() else None

    got = h.wait_until(final, "the last value of every field")
    assert h.alive(), h.log()
    assert got == last


def statuses(h: ProcessorHarness) -> dict[str, Any]:
    """The latest record status per key on the status topic."""
    from sfsync.records import RecordStatus

    return {(m.key() or b"").decode(): h.serde.decode(m.value() or b"", RecordStatus, h.names.status)
            for m in h.read(h.names.status) if m.value() is not None}


def status_keys(h: ProcessorHarness) -> list[tuple[str, bool]]:
    """Every message of the status topic as (key, is a tombstone), in offset order per partition."""
    return [((m.key() or b"").decode(), m.value() is None) for m in h.read(h.names.status)]


def test_a_filtered_change_is_visible_in_the_records_status(processor_harness: ProcessorHarness) -> None:
    """A record the object's filters keep out is never dropped without a trace: its status says Filtered
    and names the rule; a record the filters let through is sent as before."""
    from sfsync.records import SyncState

    h = processor_harness
    h.raw["objects"]["Contact"]["filters"] = {"exclude_ids": ["9"]}
    h.write_config()
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    h.start()
    kept = outbound_change("7", Operation.CREATE, last_name="Kept")
    h.produce(source, outbound_change("9", Operation.CREATE, last_name="Out"), b"Contact:local:9")
    h.produce(source, kept, KEY)
    h.wait_until(lambda: kept.event_id in by_event(h.commands(target)), "the kept record's command")
    status = h.wait_until(lambda: statuses(h).get("outbound:Contact:local:9"), "the filtered record's status")
    assert status.state is SyncState.FILTERED
    assert "objects.Contact.filters.exclude_ids" in (status.last_error or "")
    assert {c.local_key for c in h.commands(target)} == {"7"}


def test_a_change_that_loses_a_conflict_is_recorded_in_the_records_status(
        processor_harness: ProcessorHarness) -> None:
    """local_wins: Title set locally, then (before that write's echo) to another value in Salesforce. The
    Salesforce change loses; its status (inbound) says Conflict with both values and the policy, and the
    losing value goes nowhere (the local write, still on its way to Salesforce, lands after it)."""
    from sfsync.records import SyncState

    h = processor_harness
    h.raw["objects"]["Contact"]["conflict_policy"] = "local_wins"
    h.write_config()
    sfid = "003000000000001AAA"
    key = f"Contact:{sfid}".encode()
    h.start()
    local = ChangeEvent(source=Source.POSTGRES, object="Contact", entity="contacts", operation=Operation.UPDATE,
                        sfid=sfid, local_key="7", changed_fields=["title"], values={"title": "LOCAL"},
                        commit_ts=datetime.now(UTC), source_position=uuid.uuid4().hex)
    remote = ChangeEvent(source=Source.SALESFORCE, object="Contact", entity="Contact", operation=Operation.UPDATE,
                         sfid=sfid, changed_fields=["Title"], values={"Title": "REMOTE"},
                         commit_ts=datetime.now(UTC), source_position="1001")
    h.produce(h.names.changes_outbound, local, key)
    h.wait_until(lambda: local.event_id in by_event(h.commands(h.names.apply_salesforce)), "the local write")
    h.produce(h.names.changes_inbound, remote, key)
    status = h.wait_until(lambda: statuses(h).get(f"inbound:Contact:{sfid}"), "the losing change's status")
    assert status.state is SyncState.CONFLICT
    assert "'REMOTE' lost to 'LOCAL' (local_wins" in (status.last_error or ""), status.last_error
    assert all(c.values.get("title") != "REMOTE" for c in h.commands(h.names.apply_local))


def test_a_worker_whose_group_join_is_stuck_exits_for_its_supervisor_to_restart(
        processor_harness: ProcessorHarness) -> None:
    """A group join that never completes left the worker alive and silent: in full test runs a restarted
    worker logged aiokafka's "Error sending JoinGroupRequest ... marking coordinator dead" and then nothing,
    until the test's hang guard. Here the join is merely slow (the embedded broker holds a join for about
    half the session timeout: 10 s) and ``kafka.join_timeout_ms`` short (3 s): the worker exits with 75
    (``RESTART_EXIT_CODE``) naming the cause, for its supervisor to start a fresh one
    (:meth:`RoleSet.wait_ready` does: tests/devstack/test_roles.py). Measured here: the broker then holds
    the next join until the member that died mid-join is gone (about 40 s), so ``join_timeout_ms`` must
    exceed that or the restarts keep the group rebalancing (the dev stack uses 120 s).

    Failed before the fix: nothing timed the join; the worker waited as long as the group made it wait.
    """
    h = processor_harness
    h.raw["kafka"].update(session_timeout_ms=20_000, heartbeat_interval_ms=1_000, join_timeout_ms=3_000)
    h.write_config()
    h.roles.start(ROLE)
    assert h.roles.procs[ROLE].wait(HANG_GUARD_S) == RESTART_EXIT_CODE, h.log()
    assert "consumer-group join is stuck" in h.log() and "since start" in h.log()
    assert "kafka.join_timeout_ms is 3000" in h.log()



def test_a_change_that_ends_in_the_processor_clears_its_records_in_queue_state(
        processor_harness: ProcessorHarness) -> None:
    """Issue 12: the relay writes a record's In Queue state when it captures a change (key
    ``queued:<direction>:<record key>``); a sink's status replaces it once the command is written. A change that
    ends in the processor (skipped: no mapped column changed; unchanged: its value is the record's already)
    sends no command, so the processor removes the In Queue state itself with a tombstone. A change that
    sends a command sends nothing more."""
    h = processor_harness
    source, target = h.names.changes_outbound, h.names.apply_salesforce
    h.start()
    skipped = outbound_change("7", not_a_mapped_column="x")
    sent = outbound_change("8", Operation.CREATE, title="A")
    h.produce(source, skipped, KEY)
    h.produce(source, sent, b"Contact:local:8")
    h.wait_until(lambda: sent.event_id in by_event(h.commands(target)), "the command of the change that sends one")
    h.wait_until(lambda: ("queued:outbound:Contact:local:7", True) in status_keys(h), "the skipped change's tombstone")
    assert all(key != "queued:outbound:Contact:local:8" for key, _tombstone in status_keys(h))

    again = outbound_change("8", title="A")  # the value the record holds: nothing to send
    h.produce(source, again, b"Contact:local:8")
    h.wait_until(lambda: ("queued:outbound:Contact:local:8", True) in status_keys(h),
                 "the unchanged change's tombstone")
    assert [c.source_event_id for c in h.commands(target) if c.local_key == "8"] == [sent.event_id]
    queued = [(key, tombstone) for key, tombstone in status_keys(h) if key.startswith("queued:")]
    assert sorted(queued) == [("queued:outbound:Contact:local:7", True), ("queued:outbound:Contact:local:8", True)]


def test_a_dead_lettered_change_is_failed_in_the_records_status(processor_harness: ProcessorHarness) -> None:
    """A change the mapping cannot map (a Phone that is not the integer the column wants) goes to the DLQ, and
    the record's status (inbound) says Failed, once, with the reason: an operator sees it where the record's
    state is shown, not only in the DLQ."""
    from sfsync.records import SyncState

    h = processor_harness
    for f in h.raw["objects"]["Contact"]["fields"]:
        if f.get("column") == "phone":
            f["type"] = "integer"
    h.write_config()
    sfid = "003000000000002AAA"
    h.start()
    bad = ChangeEvent(source=Source.SALESFORCE, object="Contact", entity="Contact", operation=Operation.UPDATE,
                      sfid=sfid, changed_fields=["Phone"], values={"Phone": "not a number"},
                      commit_ts=datetime.now(UTC), source_position="2001")
    offset = h.produce(h.names.changes_inbound, bad, f"Contact:{sfid}".encode())
    status = h.wait_until(lambda: statuses(h).get(f"inbound:Contact:{sfid}"), "the failed record's status")
    assert (status.state, status.failure_count) == (SyncState.FAILED, 1)
    assert "cannot coerce" in (status.last_error or ""), status.last_error
    letters = [parse_failure_headers(m.headers()) for m in h.read(h.names.dlq("postgres"))]
    assert [(i.error_class, i.origin) for i in letters] == [("CoercionError", Origin(h.names.changes_inbound, 0,
                                                                                      offset))]


def test_the_workers_own_info_lines_reach_its_log(processor_harness: ProcessorHarness) -> None:
    """``sfsync run processor`` logs at the level it was given (info by default), as every other role does:
    the assignment, the periodic counts and the heap reclaim are info lines the runbook points to. Failed
    before: the faust worker set the process's logging to warn once it started, so none of them appeared."""
    h = processor_harness
    h.start()
    log = h.roles.log_path(ROLE).read_text(errors="replace")
    assert "rebalance complete: " in log and "assigned " in log, log[-3000:]


def test_a_change_whose_handover_never_comes_is_decided_without_it_on_a_quiet_partition(
        processor_harness: ProcessorHarness) -> None:
    """Two workers; the second is stopped (SIGSTOP) before any change comes, so a pull sent to its partitions
    is never answered. One change per partition, each under an sfid key whose local key lives on the next
    partition: the first worker holds at least one partition whose next one is the stopped worker's, so it
    parks that change and pulls. Nothing else arrives on that partition. Once ``processor.identity_wait_s``
    has passed with the links topic quiet, the change is decided without its state (logged, and its command
    sent), before the stopped worker's session runs out and a rebalance gives everything to the first.

    Failed before: a parked change was given up only after another event of its own partition was handled,
    so on a quiet partition it stayed parked until the rebalance (then re-read and moved in place: no
    give-up logged)."""
    h = processor_harness
    h.raw["processor"] = {**h.raw.get("processor", {}), "identity_wait_s": 0.5}
    h.write_config()
    h.roles.start(ROLE)
    h.roles.start(f"{ROLE}#2")
    h.roles.wait_ready(timeout=3 * HANG_GUARD_S, names=[ROLE, f"{ROLE}#2"])
    os.kill(h.roles.procs[f"{ROLE}#2"].pid, signal.SIGSTOP)  # alive, holding its partitions, answering nothing
    log_path = h.roles.log_path(ROLE)
    mark = len(log_path.read_text(errors="replace"))
    try:
        partitioner = DefaultPartitioner()
        n = h.cfg.kafka.partitions

        def key_on(partition: int, make: Callable[[int], str]) -> str:
            return next(k for i in range(10_000) if partitioner((k := make(i)).encode(), list(range(n)),
                                                                   list(range(n))) == partition)

        source, target = h.names.changes_outbound, h.names.apply_salesforce
        after = h.ends(target)
        sfids: dict[str, str] = {}
        for p in range(n):
            local = key_on((p + 1) % n, lambda i: f"Contact:local:{i}").rsplit(":", 1)[1]
            key = key_on(p, lambda i: f"Contact:003{i:015d}")
            sfid = key.split(":", 1)[1]
            change = replace(outbound_change(local, title=f"t-{p}"), sfid=sfid)
            h.produce(source, change, key.encode(), partition=p)
            sfids[sfid] = local

        def since_stop() -> str:
            return log_path.read_text(errors="replace")[mark:]

        def given_up() -> list[str]:
            return [sfid for sfid in sfids if f"Contact:{sfid}: no handover of its state" in since_stop()]

        gone = h.wait_until(given_up, "a parked change given up on its quiet partition")
        log = since_stop()
        first_give_up = min(log.index(f"Contact:{sfid}: no handover") for sfid in gone)
        assert "partitions revoked" not in log[:first_give_up], "decided only after a rebalance"
        h.wait_until(lambda: {c.sfid for c in h.commands(target, after)} >= set(gone) or None,
                     "the given-up changes' commands")
    finally:
        h.roles.kill(f"{ROLE}#2", signal.SIGKILL)
