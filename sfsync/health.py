"""Liveness and readiness of one role: ``/healthz`` and ``/readyz`` on the role's own port.

Contract:

- ``/healthz`` answers 200 while the role's loop turns: the role calls
  :meth:`Health.beat` from its main loop; no beat for ``stale_after_s``
  answers 503. A Kubernetes liveness probe
  restarts such a process.
- ``/readyz`` answers 200 only when the role is alive AND every readiness
  check it declared holds: for a consumer, its group joined and partitions
  assigned; for every role, its target reachable (PostgreSQL, Salesforce, the
  broker). Until then 503. ``sfsync dev`` reports "ready" only when every role
  answers 200 here, so the first change after "ready" meets consumers that
  already own their partitions.
- Both answer JSON ``{"role", "alive"|"ready", "checks": {name: {"ok", "detail"}}}``,
  never a secret (details are short texts the roles write, not exception dumps).

The server is a daemon thread (stdlib ``http.server``), so it serves the same
way beside a thread-based role and beside the faust worker's event loop.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("sfsync.health")

#: Exit code of a role that stops itself so that its supervisor starts it again (``EX_TEMPFAIL``): the
#: cause is transient and a fresh process clears it (a consumer-group join that never completes). Such a
#: role exits without committing anything it had not acknowledged, exactly as after ``kill -9``.
#: ``sfsync dev`` and :class:`sfsync.devstack.roles.RoleSet` restart it; Kubernetes restarts any exit.
RESTART_EXIT_CODE = 75


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


class Health:
    """What one role reports about itself; thread-safe, cheap to update from a hot loop."""

    def __init__(self, role: str, checks: Iterable[str] = (), stale_after_s: float = 60.0) -> None:
        self.role = role
        self.stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {name: Check(False, "not yet") for name in checks}
        self._beat = time.monotonic()

    def beat(self) -> None:
        """The role's loop turned."""
        self._beat = time.monotonic()

    def mark(self, name: str, ok: bool, detail: str = "") -> None:
        """Set one readiness check (declaring it if new)."""
        with self._lock:
            self._checks[name] = Check(ok, detail)

    def alive(self) -> tuple[bool, str]:
        quiet = time.monotonic() - self._beat
        if quiet > self.stale_after_s:
            return False, f"loop silent for {quiet:.0f} s"
        return True, "loop turning"

    def ready(self) -> bool:
        with self._lock:
            checks = list(self._checks.values())
        return self.alive()[0] and all(c.ok for c in checks)

    def report(self) -> dict[str, Any]:
        alive, why = self.alive()
        with self._lock:
            checks = {name: {"ok": c.ok, "detail": c.detail} for name, c in self._checks.items()}
        return {"role": self.role, "alive": alive, "alive_detail": why,
                "ready": alive and all(c["ok"] for c in checks.values()), "checks": checks}


class HealthServer:
    """Serves one :class:`Health` on ``host:port`` (port 0: any free port; see :attr:`url`)."""

    def __init__(self, health: Health, host: str = "127.0.0.1", port: int = 0) -> None:
        self.health = health
        handler = _handler(health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"health-{health.role}",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health of %s on %s (/healthz, /readyz)", self.health.role, self.url)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            report = health.report()
            if self.path.split("?")[0] == "/healthz":
                ok = report["alive"]
            elif self.path.split("?")[0] == "/readyz":
                ok = report["ready"]
            else:
                self._send(404, {"error": f"no such path {self.path.split('?')[0]!r}; try /healthz or /readyz"})
                return
            self._send(200 if ok else 503, report)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # probes every second: keep logs quiet
            return

    return Handler


@dataclass
class JoinWatch:
    """How long a consumer has been without a partition assignment, and whether that is too long.

    A group member is *joining* from its start and from every revocation until the group assigns it
    partitions (possibly none: an idle standby is joined). A join that never completes leaves the member
    alive and silent: seen with faust/aiokafka against the embedded broker after a restart ("Error sending
    JoinGroupRequest ... marking coordinator dead", then nothing). Nothing else recovers it, so past
    ``timeout_s`` the role exits (:func:`watch_join`) and its supervisor starts a fresh one.
    Thread-safe: the consumer's callbacks mark, a watchdog thread reads. ``clock`` is injectable for tests.
    """

    timeout_s: float
    clock: Callable[[], float] = time.monotonic
    _since: float | None = field(default=None, init=False)
    _cause: str = field(default="start", init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._since = self.clock()

    def joining(self, cause: str) -> None:
        """The member lost its assignment (``cause``: e.g. ``"revocation"``) and is joining again."""
        with self._lock:
            if self._since is None:
                self._since, self._cause = self.clock(), cause

    def joined(self) -> None:
        """The group assigned this member its partitions (any number, zero included)."""
        with self._lock:
            self._since = None

    def overdue(self) -> str | None:
        """``None`` while joined or within the timeout; else why the member must restart."""
        with self._lock:
            since, cause = self._since, self._cause
        if since is None:
            return None
        waited = self.clock() - since
        if waited <= self.timeout_s:
            return None
        return (f"no partition assignment for {waited:.0f} s since {cause} (kafka.join_timeout_ms is "
                f"{self.timeout_s * 1000:.0f}): the consumer-group join is stuck; exiting with "
                f"{RESTART_EXIT_CODE} so the supervisor starts a fresh worker (nothing unacknowledged was "
                f"committed)")


def exit_unless_gone(after_s: float, code: int, why: str, exit: Callable[[int], object] = os._exit
                     ) -> threading.Thread:
    """Start a daemon thread that ends the process with ``code`` if it is still running ``after_s`` from now.

    For a role that decided to stop without committing (the processor after an environment failure): the
    stop must happen even when the orderly shutdown hangs (seen: a crashed faust worker alive for minutes,
    its consumer leaving the group). Exiting hard is safe at that point: nothing unacknowledged is
    committed, exactly as after ``kill -9``."""

    def wait_then_exit() -> None:
        time.sleep(after_s)
        log.error("still running %.0f s after deciding to stop (%s): exiting with %d", after_s, why, code)
        for handler in logging.getLogger().handlers:
            handler.flush()
        exit(code)

    thread = threading.Thread(target=wait_then_exit, name="exit-unless-gone", daemon=True)
    thread.start()
    return thread


def watch_join(watch: JoinWatch, role: str, interval_s: float = 1.0,
               exit: Callable[[int], object] = os._exit) -> threading.Thread:
    """Start a daemon thread that ends the process with :data:`RESTART_EXIT_CODE` once ``watch`` is
    overdue. A thread, not a task of the role's event loop: a stuck join may happen before that loop
    runs timers, and the exit must not wait for the loop (``os._exit``: no cleanup that could block)."""

    def loop() -> None:
        while True:
            why = watch.overdue()
            if why is not None:
                log.error("%s: %s", role, why)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                exit(RESTART_EXIT_CODE)
                return
            time.sleep(interval_s)

    thread = threading.Thread(target=loop, name=f"join-watch-{role}", daemon=True)
    thread.start()
    return thread
