"""Run the emulator: HTTPS with uvicorn, one ``ready https://127.0.0.1:P`` line once it accepts connections."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

import uvicorn

from sfsync.emulator.app import build_app
from sfsync.emulator.tls import make_certificates


class _Server(uvicorn.Server):
    """uvicorn server that announces readiness and releases long polls before shutting down."""

    def __init__(self, config: uvicorn.Config, ready_line: str, release: object) -> None:
        super().__init__(config)
        self.ready_line = ready_line
        self.release = release

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.ready_line, flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        release = getattr(self.release, "release_all", None)
        if release is not None:
            release()
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if (cycle is None or cycle.response_complete) and transport is not None:
                transport.abort()  # idle keep-alive TLS connection: skip the close_notify wait
        await super().shutdown(sockets)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the signal it caught after its graceful shutdown; end with status 0 then."""
    raise SystemExit(0)


def serve(port: int, state_dir: Path, schema_file: Path | None = None, host: str = "127.0.0.1") -> None:
    """Serve the emulator over HTTPS until SIGINT/SIGTERM (blocking).

    Creates the CA and server certificate, writes ``state_dir/ca.pem``, binds ``host:port`` (0 picks a
    free port) and prints exactly one line ``ready https://127.0.0.1:P`` (flushed) once connections are
    accepted.
    """
    state_dir = Path(state_dir)
    certs = make_certificates(state_dir)
    app = build_app(schema_file)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto is TCP, and
    # without it a response written as headers + body stalls ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    real_port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("127.0.0.1", "0.0.0.0") else host
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, ssl_certfile=str(certs.cert), ssl_keyfile=str(certs.key),
        timeout_graceful_shutdown=2, lifespan="off", timeout_keep_alive=120,
    )
    server = _Server(config, f"ready https://{shown}:{real_port}", app.emulator.bus)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # SIGINT: uvicorn already shut down gracefully
    finally:
        sock.close()
    sys.stdout.flush()
