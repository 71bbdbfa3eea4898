"""A port picked for an embedded server can be taken before the server binds it (a parallel test worker
starting its own): the server then starts on another picked port, and what answers is checked to be it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from sfsync.devstack.broker import EmbeddedBroker
from sfsync.devstack.postgres import EmbeddedPostgres


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process holds: bound and listening, answering nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_a_broker_whose_picked_port_was_taken_starts_on_another(taken_port: int, tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker.log")
    broker.port = taken_port  # as if taken between the pick and the bind
    try:
        bootstrap = broker.start()
        assert broker.port != taken_port and bootstrap == f"127.0.0.1:{broker.port}"
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert [b.port for b in metadata.brokers.values()] == [broker.port]
    finally:
        broker.stop()


def test_a_broker_on_a_given_port_does_not_move(taken_port: int, tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker.log", port=taken_port)
    with pytest.raises(Exception, match="broker exited"):
        broker.start(timeout=20)
    assert broker.port == taken_port


def test_a_postgres_whose_picked_port_was_taken_starts_on_another(taken_port: int, tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data")
    server.port = taken_port
    try:
        dsn = server.start()
        assert server.port != taken_port
        with psycopg.connect(dsn) as conn:
            row = conn.execute("show data_directory").fetchone()
        assert row is not None and Path(row[0]).resolve() == (tmp_path / "data").resolve()
    finally:
        server.remove()
