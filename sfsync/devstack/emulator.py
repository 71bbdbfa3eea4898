"""Emulator harness for tests, benchmarks and the dev stack: run the emulator as a child process and get
clients bound to it.

It lives in the dev stack, not in ``sfsync.emulator``: it needs both Salesforce client libraries, and the
emulator (a server plus its control SDK, ``sfsync.emulator.client``) must not.

``start_emulator(dir)`` runs ``python -m sfsync.emulator --port 0 --state-dir dir`` and returns an
:class:`EmulatorHandle` once the server printed its ready line (at most ~20 s). The handle makes
simple-salesforce clients (token fetched with the OAuth password grant, then "direct" mode with
``instance_url`` + ``session_id`` and a ``requests.Session`` trusting the emulator's CA) and aiosfstream-ng
streaming clients (see :func:`streaming_client`).
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from aiohttp import ClientSession
from aiosfstream_ng import Client
from aiosfstream_ng.auth import PasswordAuthenticator
from simple_salesforce import Salesforce

from sfsync.devstack.process import spawn, stop_process
from sfsync.emulator.client import EmulatorControl

USERNAME = "admin@example.com"
PASSWORD = "sfsync"
START_TIMEOUT = 20.0
READY_PREFIX = "ready https://"


@dataclass
class EmulatorHandle:
    """A running emulator subprocess and the credentials to use it."""

    url: str
    ca_path: Path
    process: subprocess.Popen[bytes]
    control: EmulatorControl
    state_dir: Path
    username: str = USERNAME
    password: str = PASSWORD
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.control.close()
        stop_process(self.process)

    def http_session(self) -> requests.Session:
        """A requests session that trusts the emulator's CA.

        ``trust_env`` is off: otherwise ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` in the environment
        override ``session.verify`` (and proxy variables could route loopback traffic).
        """
        session = requests.Session()
        session.verify = str(self.ca_path)
        session.trust_env = False
        return session

    def token_response(self, **form: str) -> dict[str, Any]:
        """POST the OAuth password grant (override any form field) and return the JSON answer."""
        data = {"grant_type": "password", "client_id": "sfsync-tests", "client_secret": "secret",
                "username": self.username, "password": self.password, **form}
        with self.http_session() as session:
            response = session.post(f"{self.url}/services/oauth2/token", data=data, timeout=30)
        response.raise_for_status()
        return response.json()

    def access_token(self) -> str:
        """A fresh access token (password grant)."""
        return str(self.token_response()["access_token"])

    def salesforce(self, **kw: Any) -> Salesforce:
        """A simple-salesforce client logged in with a fresh token; ``kw`` goes to ``Salesforce(...)``."""
        kw.setdefault("version", "59.0")
        session = kw.pop("session", None) or self.http_session()
        return Salesforce(instance_url=self.url, session_id=self.access_token(), session=session, **kw)

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting the emulator's CA (for aiohttp / aiosfstream-ng)."""
        return ssl.create_default_context(cafile=str(self.ca_path))


class EmulatorAuthenticator(PasswordAuthenticator):
    """aiosfstream-ng password authenticator that posts to the emulator's token URL over its private CA."""

    def __init__(self, token_url: str, ssl_context: ssl.SSLContext, username: str = USERNAME,
                 password: str = PASSWORD, consumer_key: str = "sfsync-tests", consumer_secret: str = "secret"
                 ) -> None:
        super().__init__(consumer_key=consumer_key, consumer_secret=consumer_secret, username=username,
                         password=password)
        self._emulator_token_url = token_url
        self._ssl_context = ssl_context

    @property
    def _token_url(self) -> str:
        return self._emulator_token_url

    async def _authenticate(self) -> tuple[int, dict[str, Any]]:
        data = {"grant_type": "password", "client_id": self.client_id, "client_secret": self.client_secret,
                "username": self.username, "password": self.password}
        async with ClientSession() as session:
            response = await session.post(self._token_url, data=data, ssl=self._ssl_context)
            body = await response.json(loads=self.json_loads)
            return response.status, body


def streaming_client(handle: EmulatorHandle, replay: Any = -1, **kw: Any) -> Client:
    """An aiosfstream-ng ``Client`` for the emulator (call inside a running event loop).

    ``replay`` is passed through (a ReplayOption, or a dict of channel -> ReplayMarker to resume).
    ``connection_timeout=0`` is forced: it keeps aiocometd-ng off its Python >= 3.10 ``wait_for(loop=)``
    bug path. The client's ``ssl`` attribute is set to trust the emulator's CA.
    """
    from aiosfstream_ng import ReplayOption

    context = handle.ssl_context()
    auth = EmulatorAuthenticator(f"{handle.url}/services/oauth2/token", context, handle.username, handle.password)
    if isinstance(replay, int) and not isinstance(replay, ReplayOption):
        replay = ReplayOption(replay)
    kw["connection_timeout"] = 0
    client = Client(auth, replay=replay, **kw)
    client.ssl = context
    return client


def start_emulator(state_dir: Path, schema_file: Path | None = None) -> EmulatorHandle:
    """Start ``python -m sfsync.emulator`` on a free port; return once it is ready (RuntimeError otherwise).

    The server's output (its ready line, then uvicorn's log) goes to ``state_dir/emulator.log``.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "sfsync.emulator", "--port", "0", "--state-dir", str(state_dir)]
    if schema_file is not None:
        cmd += ["--schema", str(schema_file)]
    root = str(Path(__file__).resolve().parents[2])
    pythonpath = root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    log_path = state_dir / "emulator.log"
    offset = log_path.stat().st_size if log_path.exists() else 0  # the log is appended to across starts
    # The emulator dies with whoever started it (tests, the dev stack), even on kill -9.
    process = spawn(cmd, log_path, env={"PYTHONPATH": pythonpath})
    line = read_ready_line(process, log_path, offset, START_TIMEOUT)
    if line is None:
        exited = process.poll()
        stop_process(process, signal.SIGKILL)
        tail = _read_from(log_path, offset).decode(errors="replace")[-2000:]
        why = f"exited with status {exited}" if exited is not None else f"was not ready within {START_TIMEOUT}s"
        raise RuntimeError(f"emulator {why}:\n{tail}")
    url = line.split(" ", 1)[1].strip()
    ca_path = state_dir / "ca.pem"
    return EmulatorHandle(url=url, ca_path=ca_path, process=process, control=EmulatorControl(url, ca_path),
                          state_dir=state_dir)


def read_ready_line(process: subprocess.Popen[bytes], log_path: Path, offset: int, timeout: float,
                    poll: float = 0.02) -> str | None:
    """The emulator's ``ready https://...`` line, once it appears in ``log_path`` after byte ``offset``.

    None when the process exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        exited = process.poll() is not None
        for raw in _read_from(log_path, offset).split(b"\n")[:-1]:  # complete lines only
            text = raw.decode(errors="replace").strip()
            if text.startswith(READY_PREFIX):
                return text
        if exited or time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""
