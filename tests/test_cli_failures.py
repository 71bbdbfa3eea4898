"""The CLI fails clearly, tried as a new user would: one line naming what and where, no traceback, no raw
librdkafka lines. Real processes (``python -m sfsync``) against ports nothing listens on."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

import sfsync


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sfsync_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sfsync", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def config(tmp_path: Path) -> Path:
    path = tmp_path / "sfsync.yaml"
    path.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": f"127.0.0.1:{dead_port()}"},
        "postgres": {"dsn": f"postgresql://postgres@127.0.0.1:{dead_port()}/postgres"},
        "salesforce": {"login_url": f"https://127.0.0.1:{dead_port()}",
                       "auth": {"flow": "password", "username": "u@example.com", "password": "pw-secret"}},
        "objects": {"Contact": {"table": "contacts", "fields": [{"column": "email", "field": "Email"}]}},
    }))
    return path


def assert_one_clear_line(done: subprocess.CompletedProcess[str], code: int, *wanted: str) -> None:
    out = done.stdout + done.stderr
    assert done.returncode == code, out
    assert "Traceback" not in out and "%3|" not in out and "pw-secret" not in out, out
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line[:4].isdigit()]
    assert len(lines) == 1, out
    for text in wanted:
        assert text in lines[0], out


def test_a_role_without_a_config_file_names_the_file_and_exits_2(tmp_path: Path) -> None:
    done = sfsync_cli("run", "processor", cwd=tmp_path)
    assert_one_clear_line(done, 2, "no config file", "sfsync.yaml does not exist", "--config")


def test_a_role_against_a_broker_that_does_not_answer_names_it_and_exits_2(tmp_path: Path) -> None:
    path = config(tmp_path)
    broker = yaml.safe_load(path.read_text())["kafka"]["bootstrap_servers"]
    done = sfsync_cli("run", "processor", "--config", str(path), "--no-check-mapping", "--health-port", "0",
                      cwd=tmp_path)
    assert_one_clear_line(done, 2, "processor cannot start", f"cannot reach Kafka at {broker}")


def test_a_sink_whose_database_is_down_names_it_and_exits_2(tmp_path: Path) -> None:
    done = sfsync_cli("run", "postgres-sink", "--config", str(config(tmp_path)), "--health-port", "0", cwd=tmp_path)
    assert_one_clear_line(done, 2, "postgres-sink cannot start", "postgres:")


def test_a_salesforce_role_whose_org_is_unreachable_names_it_and_exits_2(tmp_path: Path) -> None:
    path = config(tmp_path)
    done = sfsync_cli("run", "salesforce-producer", "--config", str(path), "--health-port", "0", cwd=tmp_path)
    assert_one_clear_line(done, 2, "salesforce-producer cannot start", "salesforce:")


def test_a_command_against_a_dead_broker_prints_no_raw_librdkafka_lines(tmp_path: Path) -> None:
    done = sfsync_cli("topics", "list", "--config", str(config(tmp_path)), "--timeout", "3", cwd=tmp_path)
    assert_one_clear_line(done, 1, "cannot reach Kafka at 127.0.0.1:")


def test_version(tmp_path: Path) -> None:
    done = sfsync_cli("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"sfsync {sfsync.__version__}"
