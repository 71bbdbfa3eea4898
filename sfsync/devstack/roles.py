"""Run pipeline roles as separate processes — the way ``deploy/`` runs them — for the dev stack and tests.

Each role is ``python -m sfsync run <role> --config FILE`` with its output in
``log_dir/<role>.log``; each dies with its parent. Tests use :meth:`RoleSet.kill`
(SIGKILL mid-work) and :meth:`RoleSet.start` again to prove nothing is lost.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from sfsync.devstack.process import spawn, stop_process

log = logging.getLogger("sfsync.dev")


class RoleSet:
    """The role processes of one pipeline."""

    def __init__(self, config_path: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.log_dir = log_dir
        self.env = env or {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name.replace('#', '-')}.log"

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or restart) one role process. ``name`` is the role, or ``role#N`` for another replica."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        role = name.split("#", 1)[0]
        proc = spawn([sys.executable, "-m", "sfsync", "run", role, "--config", str(self.config_path)],
                     self.log_path(name), env=self.env)
        self.procs[name] = proc
        return proc

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
