"""The topic catalogue (every topic sfsync uses, built from config) and ``topics apply``.

Contract of :func:`apply_topics`: creates what is missing, reports — never
changes — existing topics whose partition count or managed configs differ,
never deletes anything. Running it twice is a no-op (the second run reports
every topic as ``ok``).

Managed configs (:func:`catalogue`): ``min.insync.replicas`` on every topic
(``kafka.min_insync_replicas``: with ``acks=all`` a record is acknowledged only
once that many replicas have it), ``cleanup.policy`` on every topic, and on the
delete-policy topics ``retention.ms`` (``kafka.retention_ms``; DLQ topics:
``kafka.dlq_retention_ms``, default -1, plus ``retention.bytes=-1``: dead letters
stay until an operator replays or purges them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from sfsync.config import SfsyncConfig
from sfsync.kafka.settings import admin_settings
from sfsync.records import Direction

SINKS = ("postgres", "salesforce")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as sfsync wants it."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Resolved topic and consumer-group names for one prefix; roles take names from here, never from literals."""

    prefix: str

    def _n(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def changes_inbound(self) -> str:
        return self._n("changes.inbound")

    @property
    def changes_outbound(self) -> str:
        return self._n("changes.outbound")

    @property
    def apply_local(self) -> str:
        return self._n("apply.local")

    @property
    def apply_salesforce(self) -> str:
        return self._n("apply.salesforce")

    @property
    def processor_group(self) -> str:
        """The processor's consumer group (also its faust app id)."""
        return f"{self.prefix}-processor"

    def sink_group(self, sink: str) -> str:
        return f"{self.prefix}-{sink}-sink"

    def changes(self, direction: Direction) -> str:
        """The change topic of one direction (inbound: from Salesforce; outbound: from PostgreSQL)."""
        return self.changes_inbound if direction is Direction.INBOUND else self.changes_outbound

    def apply(self, direction: Direction) -> str:
        """The apply topic of one direction (inbound: the PostgreSQL sink's; outbound: the Salesforce sink's)."""
        return self.apply_local if direction is Direction.INBOUND else self.apply_salesforce

    def retry(self, sink: str, tier: str) -> str:
        return self._n(f"retry.{sink}.{tier}")

    def retry_pattern(self, sink: str) -> str:
        """A librdkafka subscription regex matching every retry tier topic of ``sink``, configured or not
        (a renamed tier's topic still holds records that must not be stranded)."""
        return "^" + re.escape(f"{self.prefix}.retry.{sink}.") + r"[a-z0-9_]+$"

    def is_retry(self, topic: str, sink: str) -> bool:
        return re.fullmatch(self.retry_pattern(sink)[1:-1], topic) is not None

    def dlq(self, sink: str) -> str:
        return self._n(f"dlq.{sink}")

    @property
    def status(self) -> str:
        return self._n("status")

    @property
    def control(self) -> str:
        return self._n("control")

    @property
    def offsets(self) -> str:
        return self._n("offsets")

    @property
    def links(self) -> str:
        return self._n("links")

    @property
    def metrics(self) -> str:
        return self._n("metrics")

    @property
    def alerts(self) -> str:
        return self._n("alerts")


def catalogue(cfg: SfsyncConfig) -> list[TopicSpec]:
    """Every topic sfsync needs, in a stable order; each spec has its own config dict."""
    names = TopicNames(cfg.kafka.topic_prefix)
    p = cfg.kafka.partitions
    insync = {"min.insync.replicas": str(cfg.kafka.effective_min_insync_replicas)}

    def keep() -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(cfg.kafka.retention_ms), **insync}

    def dead_letters() -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(cfg.kafka.dlq_retention_ms),
                "retention.bytes": "-1", **insync}

    def compact() -> dict[str, str]:
        return {"cleanup.policy": "compact", **insync}

    specs = [
        TopicSpec(names.changes_inbound, p, keep(), "Salesforce CDC changes, one envelope per record"),
        TopicSpec(names.changes_outbound, p, keep(), "PostgreSQL outbox changes"),
        TopicSpec(names.apply_local, p, keep(), "commands for the PostgreSQL sink"),
        TopicSpec(names.apply_salesforce, p, keep(), "commands for the Salesforce sink"),
    ]
    for sink in SINKS:
        specs += [
            TopicSpec(names.retry(sink, t.name), p, keep(), f"{sink} sink retry after {t.delay_ms} ms")
            for t in cfg.retry.tiers
        ]
        specs.append(TopicSpec(names.dlq(sink), p, dead_letters(), f"{sink} sink dead letters"))
    specs += [
        TopicSpec(names.status, p, compact(), "latest sync state per record"),
        TopicSpec(names.links, p, compact(), "Salesforce id <-> local key links"),
        TopicSpec(names.control, 1, compact(), "direction pause/resume"),
        TopicSpec(names.offsets, 1, compact(), "CDC replay positions per channel"),
        TopicSpec(names.metrics, 1, keep(), "metric samples"),
        TopicSpec(names.alerts, 1, keep(), "alerts"),
    ]
    return specs


class TopicState(StrEnum):
    OK = "ok"
    CREATED = "created"
    MISMATCH = "mismatch"
    MISSING = "missing"
    FAILED = "failed"


@dataclass(slots=True)
class TopicReport:
    """What ``topics apply``/``topics list`` found for one catalogue entry."""

    spec: TopicSpec
    state: TopicState
    actual_partitions: int | None = None
    problems: list[str] = field(default_factory=list)


def _admin(cfg: SfsyncConfig) -> AdminClient:
    return AdminClient(admin_settings(cfg.kafka))


def _existing_partitions(admin: AdminClient, timeout: float) -> dict[str, int]:
    md = admin.list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def _describe(admin: AdminClient, names: Iterable[str], timeout: float) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    if not resources:
        return {}
    out: dict[str, dict[str, str]] = {}
    for res, fut in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = fut.result(timeout=timeout)
        except KafkaException:
            out[res.name] = {}
            continue
        out[res.name] = {k: v.value for k, v in entries.items() if v.value is not None}
    return out


def compare_topic(spec: TopicSpec, partitions: int, configs: dict[str, str]) -> list[str]:
    """What differs between ``spec`` and an existing topic; empty when it matches.

    ``configs`` is what DescribeConfigs returned for the topic. Only the keys ``spec`` manages are
    compared, so it works both where every config comes back with its effective value, defaults
    included (Apache Kafka: a topic without its own ``min.insync.replicas`` shows the broker's, e.g.
    ``1``), and where only the configs set at creation come back (the embedded broker): a managed key
    that is absent is not known, so it is not reported.
    """
    problems: list[str] = []
    if partitions != spec.partitions:
        problems.append(f"partitions: broker has {partitions}, catalogue wants {spec.partitions}")
    for key, want in spec.config.items():
        have = configs.get(key)
        if have is not None and have != want:
            problems.append(f"{key}: broker has {have}, catalogue wants {want}")
    return problems


def inspect_topics(cfg: SfsyncConfig, timeout: float = 10.0) -> list[TopicReport]:
    """Compare the catalogue with the broker without changing anything."""
    admin = _admin(cfg)
    existing = _existing_partitions(admin, timeout)
    specs = catalogue(cfg)
    configs = _describe(admin, [s.name for s in specs if s.name in existing], timeout)
    reports: list[TopicReport] = []
    for spec in specs:
        if spec.name not in existing:
            reports.append(TopicReport(spec, TopicState.MISSING))
            continue
        problems = compare_topic(spec, existing[spec.name], configs.get(spec.name, {}))
        state = TopicState.MISMATCH if problems else TopicState.OK
        reports.append(TopicReport(spec, state, existing[spec.name], problems))
    return reports


def apply_topics(cfg: SfsyncConfig, timeout: float = 30.0) -> list[TopicReport]:
    """Create missing topics; report mismatched ones; never delete or alter."""
    reports = inspect_topics(cfg, timeout)
    missing = [r for r in reports if r.state is TopicState.MISSING]
    if missing:
        admin = _admin(cfg)
        new = [
            NewTopic(
                r.spec.name,
                num_partitions=r.spec.partitions,
                replication_factor=cfg.kafka.replication_factor,
                config=dict(r.spec.config),
            )
            for r in missing
        ]
        futures = admin.create_topics(new, request_timeout=timeout)
        for r in missing:
            try:
                futures[r.spec.name].result(timeout=timeout)
                r.state, r.actual_partitions = TopicState.CREATED, r.spec.partitions
            except KafkaException as e:
                err = e.args[0]
                if err.name() == "TOPIC_ALREADY_EXISTS":  # raced with another replica: fine
                    r.state, r.actual_partitions = TopicState.OK, r.spec.partitions
                else:
                    r.state = TopicState.FAILED
                    r.problems.append(f"create failed: {err.str()}")
    return reports
