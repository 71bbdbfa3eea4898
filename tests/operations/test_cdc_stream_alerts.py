"""The CDC producer's stream broken AFTER it subscribed (issue 12, "a connection broken for over a minute").

Real emulator, broker and libraries: the producer reaches the emulator (OAuth, REST and CometD: the emulator
names its instance after the ``Host`` it is called on) through a TCP proxy (:mod:`netproxy`) that the test cuts
mid-run, while the producer is long-polling. The outage limit is shortened to 1 s the way the other CDC alert
tests do it (``producer.down = DownWatch(1.0)``).

Before the fix the outage was retried inside aiocometd-ng's own connect loop and never reached the producer:
no ``connection_down`` alert, however long the streaming endpoint stayed unreachable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from netproxy import TcpProxy

from producers.salesforce import cdc
from sfsync import eventloop
from sfsync.config import SfsyncConfig, build_config
from sfsync.devstack.emulator import EmulatorHandle
from sfsync.kafka.topics import TopicNames, apply_topics
from sfsync.operations._read import read_all
from sfsync.operations.alerts import DownWatch, alert_cause, is_resolved, read_alerts
from sfsync.records import AlertKind, ChangeEvent
from sfsync.serde import Serde

#: Hang guard for what the test waits for (far beyond any delivery time; never a bound asserted).
GUARD = 90.0
CAUSE = "connection_down:salesforce-producer:salesforce"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = GUARD) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.2)


def states(cfg: SfsyncConfig) -> list[tuple[str, str]]:
    return [(alert_cause(a), "resolved" if is_resolved(a) else "open")
            for a in read_alerts(cfg, timeout=5) if a.kind is AlertKind.CONNECTION_DOWN]


def names_arrived(cfg: SfsyncConfig) -> list[str]:
    """The ``Name`` of every Account change on ``changes.inbound`` (read_committed), in arrival order per key."""
    topic = TopicNames(cfg.kafka.topic_prefix).changes_inbound
    serde = Serde.from_config(cfg.kafka)
    out = []
    for msg in read_all(cfg.kafka, [topic], timeout=5):
        event = serde.decode(msg.value() or b"", ChangeEvent, topic)
        out.append(str(event.values.get("Name")))
    return out


@pytest.fixture
def proxy(org: EmulatorHandle) -> Iterator[TcpProxy]:
    url = urlsplit(org.url)
    p = TcpProxy(url.hostname or "127.0.0.1", url.port or 443)
    yield p
    p.close()


def _config(org: EmulatorHandle, kafka_config: dict[str, Any], proxy: TcpProxy) -> SfsyncConfig:
    cfg = build_config({
        "kafka": kafka_config,
        "salesforce": {"login_url": f"https://127.0.0.1:{proxy.port}", "ca_bundle": str(org.ca_path),
                       "auth": {"flow": "password", "client_id": "sfsync", "client_secret": "secret",
                                "username": org.username, "password": org.password}},
        "objects": {"Account": {"table": "accounts", "fields": [{"column": "name", "field": "Name"}]}},
    })
    apply_topics(cfg)
    return cfg


def test_a_stream_cut_after_subscribing_alerts_once_then_resolves_and_loses_nothing(
        org: EmulatorHandle, kafka_config: dict[str, Any], proxy: TcpProxy) -> None:
    org.control.config(connect_timeout_ms=2000)  # a short long-poll: the cut lands on a held /meta/connect
    cfg = _config(org, kafka_config, proxy)
    producer = cdc.CdcProducer(cfg, threading.Event(), start="all")
    producer.down = DownWatch(1.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            eventloop.run(producer.run())
        except BaseException as e:  # the test asserts there is none
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    sf = org.salesforce()  # the test's own REST calls go straight to the emulator, not through the proxy
    try:
        sf.Account.create({"Name": "before"})
        wait_for("the change before the cut", lambda: "before" in names_arrived(cfg))
        time.sleep(3.0)  # quiet: longer than the limit and than a long-poll (answered without events)
        assert states(cfg) == [] and producer.down.since is None  # silence is no outage

        proxy.cut()  # the stream breaks mid-run, after subscribing
        wait_for("the connection_down alert", lambda: (CAUSE, "open") in states(cfg) or errors)
        assert errors == [] and thread.is_alive(), f"the producer died: {errors!r}"
        sf.Account.create({"Name": "during"})  # made while the producer cannot stream
        time.sleep(2.0)  # still cut: the failures go on, and must not raise a second alert
        assert states(cfg) == [(CAUSE, "open")]
        alert = next(a for a in read_alerts(cfg) if a.kind is AlertKind.CONNECTION_DOWN)
        assert alert.severity.value == "critical"
        assert alert.details["role"] == "salesforce-producer" and alert.details["target"] == "salesforce"
        assert alert.details["direction"] == "inbound" and int(alert.details["down_s"]) >= 1
        assert "cannot stream from Salesforce" in alert.message and "password" not in alert.message.lower()

        proxy.restore()
        wait_for("its resolution", lambda: (CAUSE, "resolved") in states(cfg) or errors)
        sf.Account.create({"Name": "after"})
        arrived = wait_for("the changes during and after the outage",
                           lambda: (lambda n: n if {"during", "after"} <= set(n) else None)(names_arrived(cfg)))
        assert errors == [] and thread.is_alive()
        assert states(cfg) == [(CAUSE, "open"), (CAUSE, "resolved")]
        assert sorted(arrived) == ["after", "before", "during"]  # each once: resumed from the committed position
    finally:
        producer.stop.set()
        thread.join(60)
    assert not thread.is_alive() and errors == []
