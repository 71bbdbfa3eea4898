"""Run pipeline roles as separate processes — the way ``deploy/`` runs them — for the dev stack and tests.

Each role is ``python -m sfsync run <role> --config FILE --health-port 0`` with
its output in ``log_dir/<role>.log``; each dies with its parent and serves its
``/healthz`` and ``/readyz`` on a port its own bind picked, which it writes to
``log_dir/<role>.health-url`` (:attr:`RoleSet.health` once read). Not a port
picked here and handed over: between that pick and the role's bind another
process (a parallel test worker) could take it.
:meth:`RoleSet.wait_ready` returns once every role answers ``/readyz`` (groups
joined, partitions assigned, targets reachable). Tests use :meth:`RoleSet.kill`
(SIGKILL mid-work) and :meth:`RoleSet.start` again to prove nothing is lost.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from sfsync.devstack.process import spawn, stop_process
from sfsync.health import RESTART_EXIT_CODE

log = logging.getLogger("sfsync.dev")


class RoleNotReady(Exception):
    """A role did not answer ``/readyz`` in time, or exited first."""


class RoleSet:
    """The role processes of one pipeline."""

    def __init__(self, config_path: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.log_dir = log_dir
        self.env = env or {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: role name -> base URL of its health server
        self.health: dict[str, str] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name.replace('#', '-')}.log"

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or restart) one role process. ``name`` is the role, or ``role#N`` for another replica."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        role = name.split("#", 1)[0]
        url_file = self.forget_health_url(name)
        proc = spawn([sys.executable, "-m", "sfsync", "run", role, "--config", str(self.config_path),
                      "--health-port", "0", "--health-url-file", str(url_file)], self.log_path(name), env=self.env)
        self.procs[name] = proc
        return proc

    def health_url_file(self, name: str) -> Path:
        return self.log_dir / f"{name.replace('#', '-')}.health-url"

    def forget_health_url(self, name: str) -> Path:
        """Before (re)starting ``name``: drop its old health URL; the file its new process writes the URL to."""
        url_file = self.health_url_file(name)
        url_file.unlink(missing_ok=True)
        self.health.pop(name, None)
        return url_file

    def health_url(self, name: str) -> str | None:
        """The role's health server URL, once the role wrote it (its server listens)."""
        url = self.health.get(name)
        if url is None:
            try:
                url = self.health[name] = self.health_url_file(name).read_text().strip()
            except FileNotFoundError:
                return None
        return url

    def readiness(self, name: str) -> dict[str, Any] | None:
        """The role's ``/readyz`` report when it answers 200, else ``None``."""
        url = self.health_url(name)
        if url is None:
            return None
        try:
            answer = requests.get(url + "/readyz", timeout=2)
        except requests.RequestException:
            return None
        return answer.json() if answer.status_code == 200 else None

    def wait_ready(self, timeout: float = 120.0, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Wait until every role (or ``names``) answers ``/readyz``; their reports. Raises naming the laggards
        (and a role that exited, with its log) when ``timeout`` passes first. A role that stopped itself
        asking for a restart (exit :data:`~sfsync.health.RESTART_EXIT_CODE`) is started again, as its
        supervisor would."""
        pending = list(names or self.procs)
        reports: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for name in list(pending):
                if self.procs[name].poll() == RESTART_EXIT_CODE:
                    log.warning("role %s asked for a restart (exit %d); restarting (log: %s)", name,
                                RESTART_EXIT_CODE, self.log_path(name))
                    self.start(name)
                    continue
                if self.procs[name].poll() is not None:
                    raise RoleNotReady(f"role {name} exited with {self.procs[name].returncode} before it was "
                                       f"ready; log: {self.log_path(name)}")
                report = self.readiness(name)
                if report is not None:
                    reports[name] = report
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                raise RoleNotReady(f"not ready after {timeout:.0f} s: {', '.join(pending)} (logs in {self.log_dir})")
            if pending:
                time.sleep(0.1)
        return reports

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[role]
        proc.send_signal(sig)
        proc.wait(30)

    def alive(self, role: str) -> bool:
        proc = self.procs.get(role)
        return proc is not None and proc.poll() is None

    def restart_dead(self) -> list[str]:
        """Restart roles that exited; returns their names."""
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        for name in dead:
            log.warning("role %s exited with %s; restarting (log: %s)", name, self.procs[name].returncode,
                        self.log_path(name))
            self.start(name)
        return dead

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM every role at once, then wait (SIGKILL after ``timeout``)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            stop_process(proc, timeout=max(0.1, deadline - time.monotonic()))
