"""Topic catalogue and ``topics apply`` against a real broker."""

from __future__ import annotations

from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.config import build_config
from sfsync.kafka.topics import TopicNames, TopicState, apply_topics, catalogue, inspect_topics


def test_catalogue_names_and_policies(kafka_config: dict[str, Any]) -> None:
    cfg = build_config({"kafka": kafka_config})
    specs = {s.name: s for s in catalogue(cfg)}
    names = TopicNames(cfg.kafka.topic_prefix)
    for compacted in (names.status, names.control, names.offsets, names.links):
        assert specs[compacted].config == {"cleanup.policy": "compact"}
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
