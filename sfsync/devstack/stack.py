"""``sfsync dev``: the whole pipeline on one machine, with embedded services.

Contract: :meth:`DevStack.start` returns once every service answers and every
role answers ``/readyz`` (its consumer group joined with partitions assigned,
its target reachable), after writing ``state_dir/endpoints.json`` (where everything runs) and
``state_dir/sfsync.yaml`` (the effective config, usable with ``--config`` by
every other command). :meth:`DevStack.stop` stops every child; children also
die with this process (parent-death signal), so nothing is left behind on
Ctrl-C, SIGTERM or a crash.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sfsync.config import SfsyncConfig, build_config, read_yaml
from sfsync.devstack.broker import EmbeddedBroker
from sfsync.devstack.postgres import EmbeddedPostgres
from sfsync.devstack.roles import RoleSet
from sfsync.files import write_atomically
from sfsync.kafka.topics import TopicReport, apply_topics

# Dev/test tuning (NOTES.md): a consumer-group join waits ~half the session
# timeout, and this broker answers a fetch only when its max wait runs out.
DEV_KAFKA = {
    "replication_factor": 1,
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 500,
    "fetch_wait_max_ms": 100,
    # a join takes ~3 s with the session timeout above, but up to ~40 s after a member died mid-join
    # (faust's 60 s rebalance timeout); one stuck for 2 minutes is restarted (docs/kafka.md)
    "join_timeout_ms": 120_000,
}


# Processes per role in the dev stack: one each. More processor workers share the partitions (they do on
# real Kafka), but then several producers write to the same apply partition, and the embedded broker
# can hide a record batch from a consumer tailing such a partition (docs/kafka.md): records lost.
DEV_REPLICAS: dict[str, int] = {}


@dataclass
class Endpoints:
    """What ``endpoints.json`` holds; later services add their keys."""

    kafka: str
    postgres: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kafka": self.kafka, "postgres": self.postgres, **self.extra}


def demo_config() -> dict[str, Any]:
    """The example config (Account, Contact, Case on the demo tables): what ``sfsync dev`` runs by default."""
    for candidate in (Path(__file__).resolve().parents[2] / "sfsync.example.yaml",
                      Path(sys.prefix) / "share" / "sfsync" / "sfsync.example.yaml"):
        if candidate.exists():
            return read_yaml(candidate)
    raise FileNotFoundError("sfsync.example.yaml not found next to the package or in <prefix>/share/sfsync")


def effective_config(base: dict[str, Any], endpoints: Endpoints) -> dict[str, Any]:
    """The user's raw config with the dev stack's addresses and dev tuning laid over it."""
    data = json.loads(json.dumps(base))  # deep copy of plain YAML data
    kafka = data.setdefault("kafka", {})
    kafka.update(DEV_KAFKA)
    kafka["bootstrap_servers"] = endpoints.kafka
    kafka.setdefault("partitions", 3)
    data.setdefault("postgres", {})["dsn"] = endpoints.postgres
    sf = endpoints.extra.get("salesforce")
    if sf:
        salesforce = data.setdefault("salesforce", {})
        salesforce.update({"login_url": sf["url"], "ca_bundle": sf["ca"], "instance_url": None})
        # Every retained event of the emulator is new to this stack: replay them all on first start, so a
        # change made while the stack starts (before the CDC subscriber is up) is synced too.
        salesforce.setdefault("cdc_start", "all")
        salesforce["auth"] = {"flow": "password", "client_id": "sfsync-dev", "username": sf["username"],
                              "password": sf["password"]}
    return data


class DevStack:
    """The embedded broker, PostgreSQL and Salesforce emulator, and every role as its own process.

    ``roles=False`` starts only the services (tests that run roles themselves).
    """

    def __init__(self, state_dir: Path, base_config: dict[str, Any] | None = None, roles: bool = True,
                 replicas: dict[str, int] | None = None, ready_timeout_s: float = 120.0) -> None:
        # Absolute, so the written config (CA path, ...) works from any working directory.
        self.state_dir = state_dir.resolve()
        self.demo = not (base_config or {}).get("objects")
        self.base_config = {**demo_config(), **(base_config or {})} if self.demo else dict(base_config or {})
        if self.demo:  # see effective_config: replay every retained event of the fresh emulator
            self.base_config["salesforce"] = {**self.base_config.get("salesforce", {}), "cdc_start": "all"}
        self.with_roles = roles
        self.replicas = {**DEV_REPLICAS, **(replicas or {})}
        self.broker = EmbeddedBroker(log_path=self.state_dir / "broker.log")
        self.postgres = EmbeddedPostgres(self.state_dir / "pgdata")
        self.emulator: Any = None
        self.config: SfsyncConfig | None = None
        self.topic_reports: list[TopicReport] = []
        self.endpoints: Endpoints | None = None
        self.roles = RoleSet(self.config_path, self.state_dir / "logs")
        self.ready_timeout_s = ready_timeout_s
        self.readiness: dict[str, dict[str, Any]] = {}

    @property
    def config_path(self) -> Path:
        return self.state_dir / "sfsync.yaml"

    def start(self) -> Endpoints:
        from sfsync.devstack.emulator import PASSWORD, USERNAME, start_emulator

        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            kafka = self.broker.start()
            dsn = self.postgres.start()
            self.emulator = start_emulator(self.state_dir / "emulator")
            endpoints = Endpoints(kafka=kafka, postgres=dsn, extra={"salesforce": {
                "url": self.emulator.url, "ca": str(self.emulator.ca_path), "username": USERNAME,
                "password": PASSWORD}})
            raw = effective_config(self.base_config, endpoints)
            # the processor's RocksDB files live here, and start empty like the embedded broker: state of an
            # earlier run would describe records this run's changelog never had
            processor_dir = self.state_dir / "processor"
            shutil.rmtree(processor_dir, ignore_errors=True)
            raw["processor"] = {**raw.get("processor", {}), "data_dir": str(processor_dir)}
            self.config = build_config(raw, "dev stack config")
            self.topic_reports = apply_topics(self.config)
            write_atomically(self.config_path, yaml.safe_dump(raw, sort_keys=False))
            if self.with_roles:
                from sfsync.database.schema import init_schema

                init_schema(self.config, demo=self.demo)
                from sfsync.roles import START_ORDER

                for role in START_ORDER:
                    for n in range(self.replicas.get(role, 1)):
                        self.roles.start(role if n == 0 else f"{role}#{n + 1}")
                # "ready" means ready: every group joined and assigned, every target reachable (/readyz)
                self.readiness = self.roles.wait_ready(self.ready_timeout_s)
                endpoints.extra["roles"] = {name: proc.pid for name, proc in self.roles.procs.items()}
                endpoints.extra["health"] = dict(self.roles.health)
            write_atomically(self.state_dir / "endpoints.json", json.dumps(endpoints.to_json(), indent=2))
        except BaseException:
            self.stop()
            raise
        self.endpoints = endpoints
        return endpoints

    def stop(self) -> None:
        self.roles.stop_all()
        if self.emulator is not None:
            self.emulator.stop()
        self.postgres.stop()
        self.broker.stop()
        (self.state_dir / "endpoints.json").unlink(missing_ok=True)
