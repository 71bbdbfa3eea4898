"""deploy/ starts every role with the same command the tests use (``sfsync run <role>``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from sfsync.config import load_config
from sfsync.roles import ROLES

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_compose_and_kubernetes_run_every_role() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    compose_roles = {s["command"][1] for s in compose["services"].values()
                     if isinstance(s, dict) and s.get("command", [None])[0] == "run"}
    assert compose_roles == set(ROLES)
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "roles.yaml").read_text()))
    assert {d["spec"]["template"]["spec"]["containers"][0]["args"][1] for d in docs} == set(ROLES)
    assert all(d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "run" for d in docs)


def test_kubernetes_config_is_valid() -> None:
    assert load_config(DEPLOY / "k8s" / "sfsync.yaml").objects


def test_every_kubernetes_role_is_probed_on_its_health_port() -> None:
    cfg = load_config(DEPLOY / "k8s" / "sfsync.yaml")
    assert cfg.health.host == "0.0.0.0" and cfg.health.port is not None
    for doc in yaml.safe_load_all((DEPLOY / "k8s" / "roles.yaml").read_text()):
        container = doc["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"] == [{"name": "health", "containerPort": cfg.health.port}], container["name"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
