"""Topic catalogue and ``topics apply`` against a real broker."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.config import ConfigError, build_config
from sfsync.kafka.topics import (
    SINKS,
    TopicNames,
    TopicState,
    apply_topics,
    catalogue,
    compare_topic,
    inspect_topics,
)


def test_catalogue_names_and_policies(kafka_config: dict[str, Any]) -> None:
    cfg = build_config({"kafka": kafka_config})
    specs = {s.name: s for s in catalogue(cfg)}
    names = TopicNames(cfg.kafka.topic_prefix)
    for compacted in (names.status, names.control, names.offsets, names.links):
        assert specs[compacted].config == {"cleanup.policy": "compact", "min.insync.replicas": "1"}
    assert specs[names.changes_inbound].config["cleanup.policy"] == "delete"
    assert specs[names.changes_inbound].config["retention.ms"] == str(cfg.kafka.retention_ms)
    for tier in ("5s", "1m", "10m"):
        assert names.retry("salesforce", tier) in specs and names.retry("postgres", tier) in specs
    assert names.dlq("salesforce") in specs and names.dlq("postgres") in specs
    assert all(n.startswith(f"{cfg.kafka.topic_prefix}.") for n in specs)


def test_apply_twice_is_a_no_op(kafka_config: dict[str, Any]) -> None:
    cfg = build_config({"kafka": kafka_config})
    first = apply_topics(cfg)
    assert {r.state for r in first} == {TopicState.CREATED}
    second = apply_topics(cfg)
    assert {r.state for r in second} == {TopicState.OK}
    assert [(r.spec.name, r.actual_partitions) for r in second] == [
        (s.name, s.partitions) for s in catalogue(cfg)
    ]
    listed = {t for t in AdminClient({"bootstrap.servers": kafka_config["bootstrap_servers"]}).list_topics(
        timeout=10).topics if t.startswith(cfg.kafka.topic_prefix + ".")}
    assert listed == {s.name for s in catalogue(cfg)}


def test_mismatched_topic_is_reported_not_changed(kafka_config: dict[str, Any]) -> None:
    cfg = build_config({"kafka": kafka_config})
    names = TopicNames(cfg.kafka.topic_prefix)
    admin = AdminClient({"bootstrap.servers": kafka_config["bootstrap_servers"]})
    futures = admin.create_topics([
        NewTopic(names.changes_inbound, num_partitions=1, replication_factor=1),
        NewTopic(names.status, num_partitions=3, replication_factor=1, config={"cleanup.policy": "delete"}),
    ])
    for f in futures.values():
        f.result(10)
    reports = {r.spec.name: r for r in apply_topics(cfg)}
    inbound = reports[names.changes_inbound]
    assert inbound.state is TopicState.MISMATCH
    assert inbound.problems == ["partitions: broker has 1, catalogue wants 3"]
    status = reports[names.status]
    assert status.state is TopicState.MISMATCH
    assert "cleanup.policy: broker has delete, catalogue wants compact" in status.problems
    # nothing was altered: the broker still has one partition
    assert len(admin.list_topics(timeout=10).topics[names.changes_inbound].partitions) == 1
    again = {r.spec.name: r.state for r in inspect_topics(cfg)}
    assert again[names.changes_inbound] is TopicState.MISMATCH
    assert again[names.apply_local] is TopicState.OK


def test_topics_cli_apply_and_list(kafka_config: dict[str, Any], tmp_path: Any) -> None:
    import yaml

    path = tmp_path / "sfsync.yaml"
    path.write_text(yaml.safe_dump({"kafka": kafka_config}))
    runner = CliRunner()
    first = runner.invoke(app, ["topics", "apply", "--config", str(path)])
    assert first.exit_code == 0, first.output
    assert "created" in first.output
    listed = runner.invoke(app, ["topics", "list", "--config", str(path)])
    assert listed.exit_code == 0
    assert "missing" not in listed.output and "ok" in listed.output


def test_topics_apply_reports_unreachable_broker(tmp_path: Any) -> None:
    import yaml

    from sfsync.devstack.process import free_port

    path = tmp_path / "sfsync.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"}}))
    result = CliRunner().invoke(app, ["topics", "apply", "--config", str(path), "--timeout", "2"])
    assert result.exit_code == 1
    assert "cannot reach Kafka at 127.0.0.1:" in result.output


# --- min.insync.replicas and DLQ retention (issue 10, items 12 and 10) ---------------------------------


def _described(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    """The topic configs the broker reports (the embedded broker: only those set; Apache Kafka: all)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in names])
    return {res.name: {k: v.value for k, v in fut.result(10).items() if v.value is not None}
            for res, fut in futures.items()}


@pytest.mark.parametrize(("replication", "explicit", "effective"), [
    (3, None, 2), (2, None, 1), (1, None, 1), (5, None, 4), (3, 3, 3), (3, 1, 1), (1, 1, 1),
])
def test_min_insync_replicas_defaults_to_one_less_than_replication(
    replication: int, explicit: int | None, effective: int
) -> None:
    """Failed before the fix: there was no ``kafka.min_insync_replicas`` (an unknown key) and no effective value."""
    kafka: dict[str, Any] = {"replication_factor": replication}
    if explicit is not None:
        kafka["min_insync_replicas"] = explicit
    cfg = build_config({"kafka": kafka})
    assert cfg.kafka.effective_min_insync_replicas == effective
    assert {s.config["min.insync.replicas"] for s in catalogue(cfg)} == {str(effective)}


@pytest.mark.parametrize("value", [0, -1, 4])
def test_min_insync_replicas_outside_1_to_replication_factor_is_rejected(value: int) -> None:
    """Failed before the fix: the key did not exist, so the error named it as unknown, not out of range."""
    with pytest.raises(ConfigError) as info:
        build_config({"kafka": {"replication_factor": 3, "min_insync_replicas": value}})
    assert [str(p) for p in info.value.problems] == [
        "kafka.min_insync_replicas: must be between 1 and replication_factor (3)"
    ]


def test_created_topics_carry_min_insync_replicas(kafka_config: dict[str, Any]) -> None:
    """Failed before the fix: topics were created without ``min.insync.replicas``.

    With the broker default of 1 the leader alone satisfies ``acks=all``, and the relay deletes outbox rows
    after an ack that a leader fail-over loses. Every catalogue topic must carry the configured value.
    """
    cfg = build_config({"kafka": kafka_config})
    assert cfg.kafka.replication_factor == 1  # so the catalogue wants max(1, 1 - 1) = 1
    assert {r.state for r in apply_topics(cfg)} == {TopicState.CREATED}
    want = "1"
    described = _described(kafka_config["bootstrap_servers"], [s.name for s in catalogue(cfg)])
    assert {name: c.get("min.insync.replicas") for name, c in described.items()} == {
        s.name: want for s in catalogue(cfg)
    }
    assert {r.state for r in inspect_topics(cfg)} == {TopicState.OK}


def test_existing_topic_with_other_min_insync_replicas_is_reported_not_changed(
    kafka_config: dict[str, Any],
) -> None:
    """Failed before the fix: ``min.insync.replicas`` was not compared, so such a topic was reported ``ok``."""
    cfg = build_config({"kafka": {**kafka_config, "replication_factor": 1}})
    names = TopicNames(cfg.kafka.topic_prefix)
    admin = AdminClient({"bootstrap.servers": kafka_config["bootstrap_servers"]})
    wrong = {"cleanup.policy": "delete", "retention.ms": str(cfg.kafka.retention_ms), "min.insync.replicas": "2"}
    for f in admin.create_topics([NewTopic(names.changes_outbound, num_partitions=3, replication_factor=1,
                                           config=wrong)]).values():
        f.result(10)
    reports = {r.spec.name: r for r in apply_topics(cfg)}
    assert reports[names.changes_outbound].state is TopicState.MISMATCH
    assert reports[names.changes_outbound].problems == ["min.insync.replicas: broker has 2, catalogue wants 1"]
    assert reports[names.changes_inbound].state is TopicState.CREATED
    # reported, never altered
    assert _described(kafka_config["bootstrap_servers"], [names.changes_outbound])[names.changes_outbound][
        "min.insync.replicas"] == "2"
    listed = {r.spec.name: r for r in inspect_topics(cfg)}
    assert listed[names.changes_outbound].problems == ["min.insync.replicas: broker has 2, catalogue wants 1"]
    assert listed[names.changes_inbound].state is TopicState.OK


def test_comparison_on_a_broker_that_returns_every_config() -> None:
    """Apache Kafka's DescribeConfigs returns every topic config, defaults included (not only those set).

    Failed before the fix: a topic created before min.insync.replicas was managed reports the broker
    default 1 there, and that was not compared. Keys the catalogue does not manage are ignored.
    """
    cfg = build_config({"kafka": {"replication_factor": 3}})
    spec = next(s for s in catalogue(cfg) if s.name == TopicNames("sfsync").changes_outbound)
    everything = {
        "cleanup.policy": "delete", "retention.ms": "604800000", "retention.bytes": "-1",
        "min.insync.replicas": "1", "segment.bytes": "1073741824", "compression.type": "producer",
        "unclean.leader.election.enable": "false", "max.message.bytes": "1048588",
    }
    assert compare_topic(spec, 6, everything) == ["min.insync.replicas: broker has 1, catalogue wants 2"]
    assert compare_topic(spec, 6, {**everything, "min.insync.replicas": "2"}) == []
    dlq = next(s for s in catalogue(cfg) if s.name == TopicNames("sfsync").dlq("salesforce"))
    assert compare_topic(dlq, 6, {**everything, "min.insync.replicas": "2"}) == [
        "retention.ms: broker has 604800000, catalogue wants -1"
    ]
    assert compare_topic(dlq, 6, {**everything, "min.insync.replicas": "2", "retention.ms": "-1"}) == []


def test_dlq_topics_keep_dead_letters_forever_by_default(kafka_config: dict[str, Any]) -> None:
    """Failed before the fix: DLQ topics had ``kafka.retention_ms`` (7 days), so unreplayed dead letters expired.

    Dead letters are kept until an operator replays or purges them: ``retention.ms=-1`` and
    ``retention.bytes=-1`` on DLQ topics; the other delete-policy topics keep ``kafka.retention_ms``.
    """
    cfg = build_config({"kafka": kafka_config})
    names = TopicNames(cfg.kafka.topic_prefix)
    specs = {s.name: s for s in catalogue(cfg)}
    for sink in SINKS:
        assert specs[names.dlq(sink)].config["retention.ms"] == "-1"
        assert specs[names.dlq(sink)].config["retention.bytes"] == "-1"
        assert specs[names.retry(sink, "5s")].config["retention.ms"] == str(cfg.kafka.retention_ms)
    assert specs[names.changes_inbound].config["retention.ms"] == str(cfg.kafka.retention_ms)
    assert cfg.kafka.dlq_retention_ms == -1
    apply_topics(cfg)
    dlqs = [names.dlq(sink) for sink in SINKS]
    for name, config in _described(kafka_config["bootstrap_servers"], dlqs).items():
        assert (config["retention.ms"], config["retention.bytes"]) == ("-1", "-1"), name


def test_dlq_retention_is_configurable() -> None:
    """Failed before the fix: ``kafka.dlq_retention_ms`` was an unknown key."""
    cfg = build_config({"kafka": {"dlq_retention_ms": 30 * 24 * 3600 * 1000}})
    dlq = next(s for s in catalogue(cfg) if s.name == TopicNames("sfsync").dlq("postgres"))
    assert dlq.config["retention.ms"] == "2592000000"
    assert dlq.config["retention.bytes"] == "-1"


@pytest.mark.parametrize("value", [0, -2, 59_999])
def test_dlq_retention_below_one_minute_is_rejected(value: int) -> None:
    """Failed before the fix: the key did not exist."""
    with pytest.raises(ConfigError) as info:
        build_config({"kafka": {"dlq_retention_ms": value}})
    assert [str(p) for p in info.value.problems] == [
        "kafka.dlq_retention_ms: must be -1 (keep forever) or at least 60000"
    ]


def test_the_retry_pattern_matches_every_tier_of_one_sink_only() -> None:
    names = TopicNames("my.prefix")
    assert names.is_retry("my.prefix.retry.postgres.5s", "postgres")
    assert names.is_retry("my.prefix.retry.postgres.renamed_tier", "postgres")
    assert not names.is_retry("my.prefix.retry.salesforce.5s", "postgres")
    assert not names.is_retry("myXprefix.retry.postgres.5s", "postgres")  # the prefix's dots are literal
    assert not names.is_retry("my.prefix.dlq.postgres", "postgres")
    assert names.retry_pattern("postgres").startswith("^")  # librdkafka: a regex subscription
