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
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("sfsync.health")


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
