"""The outbox relay's ``connection_down`` alert, through a real network outage (issue 12).

A TCP proxy (``tests/netproxy.py``) stands between the relay and PostgreSQL; cutting it refuses new
connections and closes the open ones. The outage limit is shortened to 1 s (``RelaySettings.down_after_s``):
PostgreSQL unreachable from the start, then cut mid-run with a change waiting, each raises one
``connection_down`` alert (cause ``connection_down:postgres-producer:postgres``), then one "resolved" once the
relay connects again; the waiting change is relayed after the outage. The pure decision
(:class:`sfsync.operations.alerts.DownWatch`) is tested in ``tests/operations/test_alerts.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from netproxy import TcpProxy

from producers.postgres.relay import OutboxRelay, RelaySettings, connection_failure
from sfsync.config import SfsyncConfig
from sfsync.database import init_schema
from sfsync.database.testing import drop_schema_cascade, make_config, new_schema_name
from sfsync.kafka.topics import apply_topics
from sfsync.operations.alerts import alert_cause, is_resolved, read_alerts
from sfsync.records import AlertKind

GUARD = 90.0
CAUSE = "connection_down:postgres-producer:postgres"
SETTINGS = RelaySettings(batch_size=100, poll_interval_s=0.2, standby_check_s=0.1, backoff_s=0.1, max_backoff_s=0.3,
                         flush_timeout_s=10, down_after_s=1.0)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = GUARD) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.1)


def states(cfg: SfsyncConfig) -> list[tuple[str, str]]:
    return [(alert_cause(a), "resolved" if is_resolved(a) else "open") for a in read_alerts(cfg)
            if a.kind is AlertKind.CONNECTION_DOWN]


@pytest.fixture
def proxy(postgres_dsn: str) -> Iterator[TcpProxy]:
    url = urlsplit(postgres_dsn)
    p = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    yield p
    p.close()


@pytest.fixture
def cfg(postgres_dsn: str, kafka_config: dict[str, Any], proxy: TcpProxy) -> Iterator[SfsyncConfig]:
    schema = new_schema_name()
    config = make_config(proxy.route(postgres_dsn), schema, kafka=kafka_config)
    init_schema(config, demo=True)
    apply_topics(config)
    yield config
    drop_schema_cascade(postgres_dsn, schema)


def outbox_rows(dsn: str, cfg: SfsyncConfig) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {cfg.postgres.schema_name}.{cfg.postgres.outbox_table}").fetchone()
        return int(row[0]) if row else -1


def test_connection_failure_is_what_makes_postgres_unreachable() -> None:
    assert connection_failure(None, True)  # refused, timed out, closed by the server's end
    assert connection_failure("08006", True) and connection_failure("57P01", True)
    assert connection_failure("53300", True)  # too many connections
    assert not connection_failure(None, False)
    assert not connection_failure("28P01", True)  # refused credentials: their own alert
    assert not connection_failure("42P01", False) and not connection_failure("57014", True)  # statement errors


def test_the_relay_cut_off_postgres_for_longer_than_the_limit_alerts_once_then_resolves(
        cfg: SfsyncConfig, postgres_dsn: str, proxy: TcpProxy) -> None:
    proxy.cut()  # unreachable from the start
    relay = OutboxRelay(cfg, SETTINGS)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for("the connection_down alert", lambda: (CAUSE, "open") in states(cfg))
        time.sleep(1.0)  # more failed attempts: no second alert for the same outage
        assert states(cfg) == [(CAUSE, "open")]
        alert = next(a for a in read_alerts(cfg) if a.kind is AlertKind.CONNECTION_DOWN)
        assert alert.details["role"] == "postgres-producer" and alert.details["direction"] == "outbound"
        assert int(alert.details["down_s"]) >= 1 and "PostgreSQL" in alert.message
        assert cfg.postgres.dsn.get_secret_value() not in alert.message
        proxy.restore()
        wait_for("its resolution", lambda: (CAUSE, "resolved") in states(cfg))
        wait_for("the relay active", lambda: relay.status.state == "active")

        # cut mid-run with a change waiting: the same once-then-resolved, and the change goes out after it
        proxy.cut()
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {cfg.postgres.schema_name}.contacts (last_name) VALUES ('waits')")
        wait_for("a second outage alert", lambda: states(cfg).count((CAUSE, "open")) == 2)
        assert outbox_rows(postgres_dsn, cfg) == 1
        proxy.restore()
        wait_for("the change relayed", lambda: outbox_rows(postgres_dsn, cfg) == 0)
        wait_for("its resolution", lambda: states(cfg).count((CAUSE, "resolved")) == 2)
        assert states(cfg) == [(CAUSE, "open"), (CAUSE, "resolved")] * 2
        assert relay.status.relayed == 1
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
