"""The alerts of issue 12 that the roles raise, through real components (broker, PostgreSQL, emulator).

- a sink whose target is unreachable for longer than the limit: one ``connection_down``, then "resolved"
  (a real network outage: a TCP proxy in front of PostgreSQL, cut and restored; the limit is shortened);
- the org's API usage past ``alerts.api_budget_warn_share``: one ``api_budget`` warning, "resolved" when the
  usage is read below it again (the emulator's daily usage set);
- a command older than what the target holds: status Superseded, not Success;
- a dead letter older than a day: the notifier raises one ``dlq_age`` alert and delivers it, then "resolved"
  once the letter is purged;
- a CDC replay gap: the ``replay_gap`` alert is resolved by the channel's next change event;
- the CDC producer unable to stream (the emulator drops every streaming connection): ``connection_down``, then
  "resolved" once it is subscribed again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from netproxy import TcpProxy

from consumers.postgres.sink import PostgresSink
from consumers.runner import SinkRunner
from consumers.salesforce.sink import SalesforceSink
from producers.salesforce import cdc
from sfsync import eventloop
from sfsync.config import SfsyncConfig, build_config
from sfsync.database.schema import init_schema
from sfsync.devstack.emulator import PASSWORD, USERNAME
from sfsync.devstack.stack import demo_config
from sfsync.failures import Failure, FailureKind, Origin, failure_headers
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.operations._read import read_all
from sfsync.operations.alerts import DownWatch, alert_cause, is_resolved, read_alerts
from sfsync.operations.dlq import DlqFilter, list_dead_letters, purge
from sfsync.operations.notify import Notifier
from sfsync.operations.status import read_statuses
from sfsync.records import Alert, AlertKind, ApplyCommand, ApplyOperation, ApplyTarget, Source, SyncState
from sfsync.serde import Serde

ARRIVE_S = 90.0


def wait_for(what: str, fn: Callable[[], Any], timeout: float = ARRIVE_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.1)


def states(cfg: SfsyncConfig, kind: AlertKind) -> list[tuple[str, str]]:
    return [(alert_cause(a), "resolved" if is_resolved(a) else "open") for a in read_alerts(cfg) if a.kind is kind]


class Running:
    """A role's loop in a thread; ``stop()`` joins it."""

    def __init__(self, run: Callable[[threading.Event], None]) -> None:
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture
def started() -> Iterator[Callable[[Callable[[threading.Event], None]], Running]]:
    runs: list[Running] = []

    def start(run: Callable[[threading.Event], None]) -> Running:
        runs.append(Running(run))
        return runs[-1]

    yield start
    for r in runs:
        if r.thread.is_alive():
            r.stop()


def config(kafka_config: dict[str, Any], dsn: str, schema: str, org: Any = None, **alerts: Any) -> SfsyncConfig:
    raw = demo_config()
    raw["kafka"] = kafka_config
    raw["postgres"] = {"dsn": dsn, "schema": schema}
    raw["sinks"] = {"postgres": {"batch_size": 10, "linger_ms": 10}, "salesforce": {"batch_size": 10, "linger_ms": 10}}
    if org is not None:
        raw["salesforce"] = {"login_url": org.url, "ca_bundle": str(org.ca_path),
                             "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME,
                                      "password": PASSWORD}}
    if alerts:
        raw["alerts"] = alerts
    cfg = build_config(raw)
    apply_topics(cfg)
    return cfg


def send(cfg: SfsyncConfig, topic: str, *commands: ApplyCommand) -> None:
    producer = make_producer(cfg.kafka, "test")
    serde = Serde.from_config(cfg.kafka)
    for c in commands:
        producer.produce(topic, serde.encode(c, topic), key=c.key)
    producer.flush(30)


def account(i: int, name: str, at: datetime, position: str) -> ApplyCommand:
    return ApplyCommand(target=ApplyTarget.LOCAL, object="Account", operation=ApplyOperation.UPSERT,
                        sfid=f"001{i:015d}", values={"name": name}, fields=["name"], source=Source.SALESFORCE,
                        source_event_id=f"e{position}", source_commit_ts=at, source_position=position)


def test_a_sink_cut_off_its_target_for_longer_than_the_limit_alerts_once_then_resolves(
        kafka_config: dict[str, Any], postgres_dsn: str, schema: str, started: Any) -> None:
    proxy = TcpProxy(*(lambda u: (u.hostname or "127.0.0.1", u.port or 5432))(urlsplit(postgres_dsn)))
    try:
        cfg = config(kafka_config, proxy.route(postgres_dsn), schema)
        init_schema(cfg, demo=True)
        proxy.cut()  # PostgreSQL unreachable from the start: the sink keeps probing
        runner = SinkRunner(cfg, PostgresSink(cfg, retry_after=0.2, connect_timeout=1), down_after_s=1.0)
        started(runner.run)
        cause = "connection_down:postgres-sink:postgres"
        wait_for("the connection_down alert", lambda: (cause, "open") in states(cfg, AlertKind.CONNECTION_DOWN))
        proxy.restore()
        wait_for("its resolution", lambda: (cause, "resolved") in states(cfg, AlertKind.CONNECTION_DOWN))
        # cut mid-run, with a batch waiting: the same once-then-resolved
        proxy.cut()
        send(cfg, TopicNames(cfg.kafka.topic_prefix).apply_local, account(1, "a", datetime.now(UTC), "1"))
        wait_for("a second outage alert",
                 lambda: states(cfg, AlertKind.CONNECTION_DOWN).count((cause, "open")) == 2)
        proxy.restore()
        wait_for("the record written", lambda: runner.stats.written == 1)
        wait_for("its resolution", lambda: states(cfg, AlertKind.CONNECTION_DOWN).count((cause, "resolved")) == 2)
        assert states(cfg, AlertKind.CONNECTION_DOWN) == [(cause, "open"), (cause, "resolved")] * 2
        alert = next(a for a in read_alerts(cfg) if a.kind is AlertKind.CONNECTION_DOWN)
        assert alert.details["sink"] == "postgres" and alert.details["direction"] == "inbound"
        assert int(alert.details["down_s"]) >= 1
    finally:
        proxy.close()


def test_a_superseded_command_is_not_written_and_its_status_says_superseded(
        kafka_config: dict[str, Any], postgres_dsn: str, schema: str, started: Any) -> None:
    cfg = config(kafka_config, postgres_dsn, schema)
    init_schema(cfg, demo=True)
    runner = SinkRunner(cfg, PostgresSink(cfg, retry_after=0.2))
    started(runner.run)
    topic = TopicNames(cfg.kafka.topic_prefix).apply_local
    now = datetime.now(UTC)
    send(cfg, topic, account(7, "newer", now, "20"))
    wait_for("the newer command written", lambda: runner.stats.written == 1)
    send(cfg, topic, account(7, "older", now - timedelta(seconds=5), "10"))  # e.g. a late retry or a replay
    wait_for("the older command screened", lambda: runner.stats.superseded == 1)

    def superseded() -> Any:
        return [s for s in read_statuses(cfg) if s.state is SyncState.SUPERSEDED]

    found = wait_for("the Superseded status", superseded)
    sfid = "001000000000000007"
    assert [(s.key, s.sfid, s.failure_count) for s in found] == [(f"Account:{sfid}", sfid, 0)]
    assert "newer version" in (found[0].last_error or "")
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute(f'SELECT name FROM "{schema}".accounts').fetchall() == [("newer",)]


def test_api_usage_past_the_warn_share_warns_once_and_a_new_day_resolves(
        kafka_config: dict[str, Any], postgres_dsn: str, schema: str, org: Any, started: Any) -> None:
    cfg = config(kafka_config, postgres_dsn, schema, org, api_budget_warn_share=0.3)
    init_schema(cfg, demo=True)
    org.control.set_limits(max=1000, used=350)
    runner = SinkRunner(cfg, SalesforceSink(cfg))
    started(runner.run)
    topic = TopicNames(cfg.kafka.topic_prefix).apply_salesforce

    def contact(i: int) -> ApplyCommand:
        return ApplyCommand(target=ApplyTarget.SALESFORCE, object="Contact", operation=ApplyOperation.UPSERT,
                            local_key=str(900 + i), values={"LastName": f"B{i}"}, fields=["LastName"],
                            source=Source.POSTGRES, source_event_id=f"e{i}", source_commit_ts=datetime.now(UTC),
                            source_position=str(i))

    cause = "api_budget_warn:salesforce"
    send(cfg, topic, contact(1))
    wait_for("the warning", lambda: (cause, "open") in states(cfg, AlertKind.API_BUDGET))
    send(cfg, topic, contact(2))  # still above: nothing new
    wait_for("the second write", lambda: runner.stats.written == 2)
    org.control.set_limits(used=10)  # a new day
    send(cfg, topic, contact(3))
    wait_for("the resolution", lambda: (cause, "resolved") in states(cfg, AlertKind.API_BUDGET))
    assert states(cfg, AlertKind.API_BUDGET) == [(cause, "open"), (cause, "resolved")]
    warning = next(a for a in read_alerts(cfg) if a.kind is AlertKind.API_BUDGET)
    assert warning.severity.value == "warning" and warning.details["limit"] == "1000"
    assert int(warning.details["used"]) >= 350 and warning.details["warn_share"] == "0.3"


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.sent.append(alert)


def test_a_dead_letter_older_than_a_day_is_alerted_by_the_notifier_once_then_resolved_when_purged(
        kafka_config: dict[str, Any], postgres_dsn: str, schema: str, started: Any) -> None:
    cfg = config(kafka_config, postgres_dsn, schema)
    names = TopicNames(cfg.kafka.topic_prefix)
    dlq = names.dlq("postgres")
    serde = Serde.from_config(cfg.kafka)
    producer = make_producer(cfg.kafka, "test")
    now = datetime.now(UTC)
    for i, age in ((1, timedelta(days=2)), (2, timedelta(hours=2))):
        command = account(i, "x", now - age, str(i))
        headers = failure_headers(Failure(FailureKind.PERMANENT, "SQLSTATE 23502", "null value"),
                                  stage="postgres-sink", attempt=1, origin=Origin(names.apply_local, 0, i))
        producer.producer.produce(dlq, serde.encode(command, dlq), key=command.key, headers=list(headers),
                                  timestamp=int((now - age).timestamp() * 1000))  # when it entered the DLQ
    producer.flush(30)
    channel = Recording()
    first = started(Notifier(cfg, channels=[channel], dlq_check_s=0.5).run)

    def delivered() -> list[tuple[str, str]]:
        return [(alert_cause(a), "resolved" if is_resolved(a) else "open") for a in channel.sent
                if a.kind is AlertKind.DLQ_AGE]

    cause = f"dlq_age:{dlq}"
    wait_for("the dlq_age alert delivered", lambda: (cause, "open") in delivered())
    opened = next(a for a in channel.sent if a.kind is AlertKind.DLQ_AGE)
    assert opened.details["count"] == "1" and opened.details["dlq"] == dlq
    old = [x for x in list_dead_letters(cfg, DlqFilter(sink="postgres")) if now - x.written > timedelta(days=1)]
    assert len(old) == 1 and opened.details["ids"] == old[0].id
    time.sleep(1.5)  # a few more scans: the open cause is not raised again
    first.stop()
    notifier = Notifier(cfg, channels=[channel], dlq_check_s=0.5)  # a restart rebuilds what is open
    started(notifier.run)
    wait_for("the restarted notifier knows the open cause", lambda: notifier.dlq_watch.open == {dlq})
    time.sleep(1.5)
    assert delivered() == [(cause, "open")] and states(cfg, AlertKind.DLQ_AGE) == [(cause, "open")]
    assert purge(cfg, old, requested_by="test") == 1
    wait_for("the resolution delivered", lambda: (cause, "resolved") in delivered())
    assert delivered() == [(cause, "open"), (cause, "resolved")]
    assert states(cfg, AlertKind.DLQ_AGE) == [(cause, "open"), (cause, "resolved")]


def _cdc_config(org: Any, kafka_config: dict[str, Any]) -> SfsyncConfig:
    cfg = build_config({
        "kafka": kafka_config,
        "salesforce": {"login_url": org.url, "ca_bundle": str(org.ca_path),
                       "auth": {"flow": "password", "client_id": "sfsync", "client_secret": "secret",
                                "username": org.username, "password": org.password}},
        "objects": {"Account": {"table": "accounts", "fields": [{"column": "name", "field": "Name"}]}},
    })
    apply_topics(cfg)
    return cfg


def test_a_replay_gap_is_resolved_by_the_channels_next_change_event(
        org: Any, kafka_config: dict[str, Any], started: Any) -> None:
    org.control.config(connect_timeout_ms=2000)
    cfg = _cdc_config(org, kafka_config)
    started(lambda stop: cdc.run(cfg, stop, start="all"))
    sf = org.salesforce()
    sf.Account.create({"Name": "before"})
    wait_for("subscribed", lambda: org.control.stats().get("cometd_clients", 0) >= 1)
    org.control.emit_gap("Account", "GAP_OVERFLOW")
    cause = "replay_gap:/data/AccountChangeEvent"
    wait_for("the replay_gap alert", lambda: (cause, "open") in states(cfg, AlertKind.REPLAY_GAP))
    assert states(cfg, AlertKind.REPLAY_GAP) == [(cause, "open")]
    sf.Account.create({"Name": "after"})
    wait_for("its resolution", lambda: (cause, "resolved") in states(cfg, AlertKind.REPLAY_GAP))
    assert states(cfg, AlertKind.REPLAY_GAP) == [(cause, "open"), (cause, "resolved")]


def test_the_cdc_producer_cut_off_salesforce_for_longer_than_the_limit_alerts_once_then_resolves(
        org: Any, kafka_config: dict[str, Any], started: Any) -> None:
    org.control.config(connect_timeout_ms=2000)
    cfg = _cdc_config(org, kafka_config)
    org.control.add_fault(path="^/cometd/", drop_connection=True)  # the streaming API unreachable
    producer = cdc.CdcProducer(cfg, threading.Event(), start="all")
    producer.down = DownWatch(1.0)

    def run(stop: threading.Event) -> None:
        producer.stop = stop
        eventloop.run(producer.run())

    started(run)
    cause = "connection_down:salesforce-producer:salesforce"
    try:
        wait_for("the connection_down alert", lambda: (cause, "open") in states(cfg, AlertKind.CONNECTION_DOWN))
    finally:
        org.control.clear_faults()
    wait_for("its resolution", lambda: (cause, "resolved") in states(cfg, AlertKind.CONNECTION_DOWN))
    assert states(cfg, AlertKind.CONNECTION_DOWN) == [(cause, "open"), (cause, "resolved")]
    sf = org.salesforce()
    sf.Account.create({"Name": "flows"})  # and the stream flows
    inbound = TopicNames(cfg.kafka.topic_prefix).changes_inbound
    wait_for("the change captured", lambda: any(m.value() for m in read_all(cfg.kafka, [inbound], timeout=10)))
