"""``sfsync pause`` / ``resume`` return once every running sink of the direction took the change.

Real runner and PostgreSQL sink in a thread of the test process, the real broker and PostgreSQL, the real CLI.
Before acknowledgements, ``sfsync pause`` returned as soon as the broker had the control record, and the sink
took the pause a fetch wait later: a change made right after the command could still be written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from netproxy import TcpProxy
from sink_member import SinkMember, account_upsert
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.config import SfsyncConfig, build_config
from sfsync.database.schema import init_schema
from sfsync.devstack.stack import demo_config
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.operations.acks import ack_key
from sfsync.operations.control import ControlScope, read_control, suspended_fields
from sfsync.operations.status import direction_summaries
from sfsync.records import Direction, SinkAck, utcnow
from sfsync.serde import Serde

ARRIVE_S = 120.0
#: once paused, the chance a sink that ignored the pause gets to show it (it writes within a linger)
PAUSE_PROOF_S = 1.0


def configure(kafka_config: dict[str, Any], dsn: str, schema: str, tmp_path: Path) -> tuple[SfsyncConfig, Path]:
    raw = demo_config()
    raw["kafka"] = {**kafka_config, "partitions": 1}
    raw["postgres"] = {"dsn": dsn, "schema": schema}
    raw["sinks"] = {"postgres": {"batch_size": 50, "linger_ms": 10}}
    path = tmp_path / "sfsync.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = build_config(raw)
    apply_topics(cfg)
    init_schema(cfg, demo=True)
    return cfg, path


@pytest.fixture
def setup(kafka_config: dict[str, Any], postgres_dsn: str, schema: str, tmp_path: Path
          ) -> tuple[SfsyncConfig, Path]:
    return configure(kafka_config, postgres_dsn, schema, tmp_path)


@pytest.fixture
def member(setup: tuple[SfsyncConfig, Path]) -> Iterator[SinkMember]:
    m = SinkMember(setup[0])
    yield m
    if m.thread.is_alive():
        m.leave()


def cli(path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--config", str(path)], env={"COLUMNS": "300"})


def send(cfg: SfsyncConfig, numbers: range) -> None:
    topic = TopicNames(cfg.kafka.topic_prefix).apply_local
    producer = make_producer(cfg.kafka, "test")
    serde = Serde.from_config(cfg.kafka)
    for i in numbers:
        command = account_upsert(i)
        producer.produce(topic, serde.encode(command, topic), key=command.key)
    producer.flush(30)


def landed(cfg: SfsyncConfig, dsn: str | None = None) -> set[str]:
    with psycopg.connect(dsn or cfg.postgres.dsn.get_secret_value()) as conn:
        return {r[0] for r in conn.execute(f'SELECT name FROM "{cfg.postgres.schema_name}".accounts')}


def wait_for(what: str, fn: Any) -> Any:
    deadline = time.monotonic() + ARRIVE_S
    while not (got := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)
    return got


def put_ack(cfg: SfsyncConfig, ack: SinkAck) -> None:
    """An acknowledgement as another sink instance would write it."""
    topic = TopicNames(cfg.kafka.topic_prefix).control
    producer = make_producer(cfg.kafka, "test")
    producer.produce(topic, Serde().encode(ack, topic), key=ack_key(ack.direction, ack.instance))
    producer.flush(30)


def test_pause_returns_once_the_running_sink_took_it_and_nothing_made_after_is_written(
        setup: tuple[SfsyncConfig, Path], member: SinkMember) -> None:
    """Failed before acknowledgements: right after ``sfsync pause`` returned the running sink still held the
    state without the pause (it follows the control topic a fetch wait later)."""
    cfg, path = setup
    send(cfg, range(1))
    wait_for("the sink writes", lambda: landed(cfg) == {"n0"})

    out = cli(path, "pause", "inbound")
    assert member.runner.control.state.direction_paused(Direction.INBOUND)  # taken before the command returned
    assert out.exit_code == 0, out.output
    assert out.output.startswith("inbound: paused by ")
    assert f"acknowledged by 1 running postgres sink: {member.runner.instance}" in out.output

    send(cfg, range(1, 21))  # at once, as an operator would
    time.sleep(PAUSE_PROOF_S)
    assert landed(cfg) == {"n0"}

    out = cli(path, "resume", "inbound")
    assert out.exit_code == 0, out.output
    assert f"acknowledged by 1 running postgres sink: {member.runner.instance}" in out.output
    wait_for("every change after the resume", lambda: len(landed(cfg)) == 21)

    member.leave()  # a clean stop takes its acknowledgement away: nothing is left to wait for
    out = cli(path, "pause", "inbound")
    assert out.exit_code == 0, out.output
    assert "no running inbound sink" in out.output


def test_pause_with_no_sink_running_says_so_and_ignores_stale_instances(setup: tuple[SfsyncConfig, Path]) -> None:
    cfg, path = setup
    # a sink killed an hour ago left its last acknowledgement behind (no tombstone)
    put_ack(cfg, SinkAck(direction=Direction.OUTBOUND, sink="salesforce", instance="gone-1", applied={},
                         beat_ms=10_000, ts=utcnow() - timedelta(hours=1)))
    out = cli(path, "pause", "outbound")
    assert out.exit_code == 0, out.output
    assert "no running outbound sink" in out.output and "gone-1" in out.output  # named as stale, not waited for
    assert read_control(cfg).direction_paused(Direction.OUTBOUND)


def test_a_live_instance_that_does_not_acknowledge_fails_the_command(setup: tuple[SfsyncConfig, Path]) -> None:
    cfg, path = setup
    put_ack(cfg, SinkAck(direction=Direction.INBOUND, sink="postgres", instance="stuck-7", applied={},
                         beat_ms=10_000, ts=utcnow()))
    out = cli(path, "pause", "inbound", "--wait", "1")
    assert out.exit_code == 1, out.output
    assert "stuck-7" in out.output and "did not acknowledge" in out.output
    assert read_control(cfg).direction_paused(Direction.INBOUND)  # the pause itself is in force
    out = cli(path, "resume", "inbound", "--wait", "0")  # 0: do not wait, as before
    assert out.exit_code == 0 and "stuck-7" not in out.output, out.output


def test_readers_of_the_control_topic_ignore_acknowledgements(setup: tuple[SfsyncConfig, Path]) -> None:
    cfg, path = setup
    assert cli(path, "pause", "outbound", "--object", "Contact", "--wait", "0").exit_code == 0
    put_ack(cfg, SinkAck(direction=Direction.OUTBOUND, sink="salesforce", instance="h-1", applied={"0": 1},
                         beat_ms=10_000, ts=utcnow()))
    put_ack(cfg, SinkAck(direction=Direction.INBOUND, sink="postgres", instance="h-2", applied={"0": 2},
                         beat_ms=10_000, ts=utcnow()))
    state = read_control(cfg)
    assert set(state.entries) == {ControlScope(Direction.OUTBOUND, "Contact")}
    assert suspended_fields(cfg, Direction.OUTBOUND) == frozenset()
    summaries = {s.direction: s for s in direction_summaries(cfg, statuses=[])}
    assert not summaries[Direction.INBOUND].paused and not summaries[Direction.OUTBOUND].paused
    assert summaries[Direction.OUTBOUND].paused_objects == ("Contact",)  # what `sfsync status` shows


def test_a_batch_held_through_an_outage_meets_an_object_pause_made_meanwhile(
        kafka_config: dict[str, Any], postgres_dsn: str, schema: str, tmp_path: Path) -> None:
    """Failed before the write was screened again: the sink acknowledged the object's pause while it waited
    out the outage, then wrote the batch it had read before the pause once PostgreSQL was back."""
    url = urlsplit(postgres_dsn)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    through = proxy.route(postgres_dsn)
    cfg, path = configure(kafka_config, through, schema, tmp_path)
    member = SinkMember(cfg)
    try:
        send(cfg, range(1))
        wait_for("the sink writes", lambda: landed(cfg, postgres_dsn) == {"n0"})
        proxy.cut()
        send(cfg, range(1, 6))
        wait_for("the sink waits out the outage", lambda: member.runner.stats.unavailable > 0)
        batches = member.runner.stats.batches
        out = cli(path, "pause", "inbound", "--object", "Account")
        assert out.exit_code == 0 and member.runner.instance in out.output, out.output  # taken mid-outage
        proxy.restore()
        wait_for("the held batch is handled", lambda: member.runner.stats.batches > batches)
        assert landed(cfg, postgres_dsn) == {"n0"}
        assert cli(path, "resume", "inbound", "--object", "Account").exit_code == 0
        wait_for("the object's changes after its resume", lambda: len(landed(cfg, postgres_dsn)) == 6)
    finally:
        proxy.restore()
        member.leave()
        proxy.close()
