"""RoleSet as a supervisor: a role that exits with 75 ("restart me") is started again while waiting for
readiness; any other exit fails the wait, naming the role. The roles here are small real processes
serving the real health endpoints, so no broker is needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sfsync.devstack.process import spawn
from sfsync.devstack.roles import RoleNotReady, RoleSet
from sfsync.health import RESTART_EXIT_CODE

SERVE = """
import time
from pathlib import Path
from sfsync.files import write_atomically
from sfsync.health import Health, HealthServer
health = Health("processor", checks=("group",))
health.mark("group", True, "joined")
server = HealthServer(health, "127.0.0.1", 0).start()
write_atomically(Path({url_file!r}), server.url)
while True:
    health.beat()
    time.sleep(0.2)
"""


class ScriptedRoles(RoleSet):
    """Each start of a role runs the next of ``exits``: an exit code, or ``None`` for a healthy role."""

    def __init__(self, root: Path, exits: list[int | None]) -> None:
        super().__init__(root / "sfsync.yaml", root / "logs")
        self.exits = exits
        self.starts = 0

    def start(self, name: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        code, self.starts = self.exits[self.starts], self.starts + 1
        url_file = self.forget_health_url(name)
        script = SERVE.format(url_file=str(url_file)) if code is None else f"raise SystemExit({code})"
        self.procs[name] = spawn([sys.executable, "-c", script], self.log_path(name))
        return self.procs[name]


def test_a_role_that_asks_for_a_restart_is_started_again(tmp_path: Path) -> None:
    roles = ScriptedRoles(tmp_path, [RESTART_EXIT_CODE, RESTART_EXIT_CODE, None])
    roles.start("processor")
    try:
        reports = roles.wait_ready(timeout=60, names=["processor"])
        assert roles.starts == 3 and reports["processor"]["ready"] is True
    finally:
        roles.stop_all()


def test_any_other_exit_fails_the_wait_naming_the_role(tmp_path: Path) -> None:
    roles = ScriptedRoles(tmp_path, [1])
    roles.start("processor")
    roles.procs["processor"].wait(30)
    with pytest.raises(RoleNotReady, match="role processor exited with 1"):
        roles.wait_ready(timeout=60, names=["processor"])
    assert roles.starts == 1
