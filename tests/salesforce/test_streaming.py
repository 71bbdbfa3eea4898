"""The streaming client authenticates through sfsync's OAuth module with every flow (real emulator)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiocometd_ng.constants import TransportState
from aiocometd_ng.exceptions import TransportError as CometdTransportError
from aiosfstream_ng.exceptions import TransportError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from netproxy import TcpProxy

from sfsync.config import SalesforceConfig
from sfsync.devstack.emulator import EmulatorHandle
from sfsync.salesforce.streaming import (
    SfsyncAuthenticator,
    close_client,
    loads_cometd,
    make_streaming_client,
    stream_lost,
    transport_state,
)


def _key_and_cert(tmp: Path) -> tuple[Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sfsync")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp / "key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("flow", ["password", "refresh_token", "client_credentials", "jwt_bearer"])
async def test_every_flow_streams(org: EmulatorHandle, tmp_path: Path, flow: str) -> None:
    emulator = org
    emulator.control.config(connect_timeout_ms=1000)
    auth: dict[str, Any] = {"flow": flow, "client_id": "sfsync", "client_secret": "secret"}
    if flow == "password":
        auth |= {"username": emulator.username, "password": emulator.password}
    elif flow == "refresh_token":
        auth["refresh_token"] = emulator.control.refresh_token()
    elif flow == "jwt_bearer":
        key_path, cert = _key_and_cert(tmp_path)
        emulator.control.config(jwt_certificate_pem=cert)
        auth |= {"username": emulator.username, "private_key_file": str(key_path)}
    cfg = SalesforceConfig.model_validate({"login_url": emulator.url, "ca_bundle": str(emulator.ca_path),
                                           "auth": auth})
    client = make_streaming_client(cfg, {})
    await client.open()
    try:
        await client.subscribe("/data/AccountChangeEvent")
        await asyncio.to_thread(lambda: emulator.salesforce().Account.create({"Name": flow}))
        message = await asyncio.wait_for(client.receive(), 10)
        assert message["data"]["payload"]["Name"] == flow
    finally:
        await client.close()
    assert "secret" not in repr(client.auth) and flow in repr(client.auth)


async def test_refused_credentials_surface_without_secrets(org: EmulatorHandle) -> None:
    emulator = org
    cfg = SalesforceConfig.model_validate({"login_url": emulator.url, "ca_bundle": str(emulator.ca_path), "auth": {
        "flow": "password", "username": emulator.username, "password": "very-secret-wrong"}})
    auth = SfsyncAuthenticator(cfg)
    status, body = await auth._authenticate()
    assert status == 400 and body["error"] == "invalid_grant"
    assert auth.last_error is not None and "very-secret-wrong" not in auth.last_error


async def test_a_rest_style_error_body_from_the_streaming_endpoint_is_a_transport_error(org: EmulatorHandle) -> None:
    """A 503 whose body is a REST-style error array (``[{"message", "errorCode", "fields"}]``: what Salesforce's
    front ends answer while an instance is unavailable) is no CometD answer. The client raises the library's
    ``TransportError`` (an ``AiosfstreamException``, what a caller handles as "the stream failed"), naming the
    error code, at ``open()`` and at ``subscribe()``.

    Failed before the fix: aiocometd-ng read the array as CometD messages and raised ``KeyError('channel')``."""
    emulator = org
    cfg = SalesforceConfig.model_validate({"login_url": emulator.url, "ca_bundle": str(emulator.ca_path), "auth": {
        "flow": "password", "client_id": "sfsync", "client_secret": "secret", "username": emulator.username,
        "password": emulator.password}})
    emulator.control.add_fault(path="^/cometd/", status=503, error_code="SERVER_UNAVAILABLE",
                               message="the instance is down for maintenance")
    client = make_streaming_client(cfg, {})
    with pytest.raises(TransportError, match="SERVER_UNAVAILABLE"):
        await client.open()
    await client.close()
    emulator.control.clear_faults()
    client = make_streaming_client(cfg, {})
    await client.open()
    try:
        emulator.control.add_fault(path="^/cometd/", status=503)
        with pytest.raises(TransportError, match="UNKNOWN_EXCEPTION"):
            await client.subscribe("/data/AccountChangeEvent")
    finally:
        emulator.control.clear_faults()
        await client.close()


@pytest.mark.parametrize("body", [
    [{"message": "down", "errorCode": "SERVER_UNAVAILABLE", "fields": []}],
    {"error": "not a list"},
    ["text"],
    [{"channel": "/meta/connect", "successful": True}, {"errorCode": "X"}],
])
def test_loads_cometd_refuses_what_is_no_cometd_payload(body: Any) -> None:
    with pytest.raises(CometdTransportError, match="no CometD"):
        loads_cometd(json.dumps(body))


def test_loads_cometd_keeps_numbers_exact() -> None:
    payload = loads_cometd('[{"channel": "/data/X", "data": {"payload": {"Amount": 12.30, "N": 7}}}]')
    assert payload == [{"channel": "/data/X", "data": {"payload": {"Amount": Decimal("12.30"), "N": 7}}}]
    assert isinstance(payload[0]["data"]["payload"]["Amount"], Decimal)
    assert loads_cometd("[]") == []


async def _until(what: str, check: Callable[[], bool], guard: float = 30.0) -> None:
    """Wait for ``check`` (a hang guard only, never a bound asserted)."""
    deadline = time.monotonic() + guard
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def test_the_transport_state_tells_a_broken_stream_from_a_quiet_one(
        org: EmulatorHandle, caplog: pytest.LogCaptureFixture) -> None:
    """An open, subscribed client reaching the emulator through a TCP proxy: quiet (long-polls answered
    without events) it is not lost; the proxy cut, its connect requests fail and ``stream_lost`` says so
    (``receive()`` would only wait: ``connection_timeout=0``); restored, aiocometd-ng's own retry is answered
    and it is not lost any more. ``close_client`` while a connect is pending logs no asyncio ERROR
    (``client.close()`` does: ``Exception in callback TransportBase._connect_done``)."""
    org.control.config(connect_timeout_ms=300)
    url = urlsplit(org.url)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 443)
    cfg = SalesforceConfig.model_validate({
        "login_url": f"https://127.0.0.1:{proxy.port}", "ca_bundle": str(org.ca_path),
        "auth": {"flow": "password", "client_id": "sfsync", "client_secret": "secret",
                 "username": org.username, "password": org.password}})
    client = make_streaming_client(cfg, {})
    assert transport_state(client) is None and not stream_lost(None)
    try:
        await client.open()
        await client.subscribe("/data/AccountChangeEvent")
        await asyncio.sleep(1.5)  # several long-polls end without an event: silence
        assert transport_state(client) is TransportState.CONNECTED and not stream_lost(transport_state(client))

        proxy.cut()
        await _until("the lost stream seen", lambda: stream_lost(transport_state(client)))
        proxy.restore()
        await _until("the stream back", lambda: transport_state(client) is TransportState.CONNECTED)

        proxy.cut()
        await _until("lost again", lambda: stream_lost(transport_state(client)))
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            await close_client(client)
        assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
        assert client.closed
    finally:
        if not client.closed:
            await client.close()
        proxy.close()


@pytest.mark.parametrize("state", list(TransportState))
def test_only_a_failed_connect_means_the_stream_is_lost(state: TransportState) -> None:
    assert stream_lost(state) is (state is TransportState.CONNECTING)
