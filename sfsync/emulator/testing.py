"""Helpers for tests and benchmarks: start the emulator as a subprocess and get clients bound to it.

``start_emulator(dir)`` runs ``python -m sfsync.emulator --port 0 --state-dir dir`` and returns an
:class:`EmulatorHandle` once the server printed its ready line (at most ~20 s). The handle makes
simple-salesforce clients (token fetched with the OAuth password grant, then "direct" mode with
``instance_url`` + ``session_id`` and a ``requests.Session`` trusting the emulator's CA) and aiosfstream-ng
streaming clients (see :func:`streaming_client`).
"""

from __future__ import annotations

import os
import selectors
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

from sfsync.devstack.process import die_with_parent
from sfsync.emulator.client import EmulatorControl

USERNAME = "admin@example.com"
PASSWORD = "sfsync"
START_TIMEOUT = 20.0


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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

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

    The server's stderr goes to ``state_dir/emulator.log``.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "sfsync.emulator", "--port", "0", "--state-dir", str(state_dir)]
    if schema_file is not None:
        cmd += ["--schema", str(schema_file)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log = (state_dir / "emulator.log").open("ab")
    # The emulator dies with whoever started it (tests, the dev stack), even on kill -9.
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env,
                               preexec_fn=die_with_parent(signal.SIGTERM))
    log.close()
    assert process.stdout is not None
    line = _read_ready_line(process, START_TIMEOUT)
    if line is None:
        process.kill()
        process.wait(timeout=10)
        tail = (state_dir / "emulator.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"emulator did not become ready within {START_TIMEOUT}s:\n{tail}")
    url = line.split(" ", 1)[1].strip()
    ca_path = state_dir / "ca.pem"
    return EmulatorHandle(url=url, ca_path=ca_path, process=process, control=EmulatorControl(url, ca_path),
                          state_dir=state_dir)


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float) -> str | None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0.01)):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                return None
            buffer += chunk
            for raw in buffer.split(b"\n")[:-1]:
                text = raw.decode(errors="replace").strip()
                if text.startswith("ready https://"):
                    return text
    return None
