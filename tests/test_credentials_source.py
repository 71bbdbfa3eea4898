"""Where a role's credentials come from on renewal (:mod:`sfsync.config.credentials`): the config file it
was started with, env overrides applied, credentials only; other changes ignored and named in the log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from sfsync.config import load_config
from sfsync.config.credentials import (
    CredentialSource,
    ignored_changes,
    postgres_credentials_refused,
    reload_credentials,
)

BASE: dict[str, Any] = {
    "salesforce": {"login_url": "https://login.example.com",
                   "auth": {"flow": "password", "username": "u@example.com", "password": "first"}},
    "postgres": {"dsn": "postgresql://sfsync:first@db:5432/app", "schema": "public"},
    "objects": {"Contact": {"table": "contacts", "fields": [{"column": "last_name", "field": "LastName"}]}},
}


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    tmp.replace(path)  # a new inode, as a mounted secret is swapped


def _edited(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return data


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("SFSYNC_CONFIG", "SFSYNC_SALESFORCE__AUTH__PASSWORD", "SFSYNC_POSTGRES__DSN"):
        monkeypatch.delenv(key, raising=False)
    path = tmp_path / "sfsync.yaml"
    _write(path, BASE)
    return path


def test_reload_takes_the_credentials_of_the_file_and_env_overrides_win(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(config_file, _edited(salesforce__auth__password="second", postgres__dsn="postgresql://sfsync:x@db/app"))
    auth, pg = reload_credentials(config_file)
    assert auth.password is not None and auth.password.get_secret_value() == "second"
    assert pg.dsn.get_secret_value() == "postgresql://sfsync:x@db/app"
    assert "second" not in repr(auth) and "x@db" not in repr(pg)

    monkeypatch.setenv("SFSYNC_SALESFORCE__AUTH__PASSWORD", "from-env")
    auth, _ = reload_credentials(config_file)
    assert auth.password is not None and auth.password.get_secret_value() == "from-env"


def test_renew_applies_only_the_failed_side_in_place_and_names_ignored_changes(
        config_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(config_file)
    salesforce_section = cfg.salesforce
    source = CredentialSource(config_file)
    assert not source.changed()
    assert source.renew(cfg, "salesforce") is False  # nothing new

    changed = _edited(salesforce__auth__password="second", postgres__dsn="postgresql://sfsync:second@db/app",
                      salesforce__api_budget_share=0.2)
    changed["objects"]["Contact"]["table"] = "people"
    _write(config_file, changed)
    assert source.changed()
    with caplog.at_level(logging.INFO, logger="sfsync.config.credentials"):
        assert source.renew(cfg, "salesforce") is True
    assert not source.changed()
    assert cfg.salesforce is salesforce_section  # in place: every holder of the section sees it
    assert cfg.salesforce.auth.password is not None and cfg.salesforce.auth.password.get_secret_value() == "second"
    assert cfg.postgres.dsn.get_secret_value() == "postgresql://sfsync:first@db:5432/app"  # not the failed side
    assert cfg.salesforce.api_budget_share == 0.5 and cfg.objects["Contact"].table == "contacts"
    assert "changed objects, salesforce too: ignored until a restart" in caplog.text
    assert "second" not in caplog.text and "people" not in caplog.text

    assert source.renew(cfg, "postgres") is True
    assert cfg.postgres.dsn.get_secret_value() == "postgresql://sfsync:second@db/app"


def test_an_invalid_file_keeps_the_credentials_in_force(config_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(config_file)
    source = CredentialSource(config_file)
    bad = _edited(salesforce__auth__password="second")
    bad["postgres"]["relay_batch_size"] = 0
    _write(config_file, bad)
    assert source.renew(cfg, "salesforce") is False
    assert cfg.salesforce.auth.password is not None and cfg.salesforce.auth.password.get_secret_value() == "first"
    assert "postgres.relay_batch_size" in caplog.text and "second" not in caplog.text
    config_file.unlink()
    assert source.changed() and source.renew(cfg, "salesforce") is False


def test_ignored_changes_leave_out_credentials() -> None:
    from sfsync.config import build_config

    a = build_config(BASE)
    b = build_config(_edited(salesforce__auth__password="second", postgres__dsn="postgresql://other@db/app"))
    assert ignored_changes(a, b) == []
    c = build_config(_edited(postgres__schema="other"))
    assert ignored_changes(a, c) == ["postgres"]


@pytest.mark.parametrize(("sqlstate", "message", "refused"), [
    ("28P01", "password authentication failed for user \"sfsync\"", True),
    ("28000", "role \"nobody\" does not exist", True),
    (None, 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password '
           'authentication failed for user "sfsync"', True),
    (None, 'connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "sfsync"', True),
    (None, "connection failed: fe_sendauth: no password supplied", True),
    (None, 'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused', False),
    ("57P01", "terminating connection due to administrator command", False),
    ("08006", "password authentication failed", False),  # a SQLSTATE, when there is one, decides
])
def test_postgres_credentials_refused(sqlstate: str | None, message: str, refused: bool) -> None:
    assert postgres_credentials_refused(sqlstate, message) is refused
