"""aiosfstream-ng wired to sfsync's OAuth flows and TLS trust.

:class:`SfsyncAuthenticator` is the library's extension point (an ``AuthenticatorBase`` subclass): every
(re-)authentication — at ``open()`` and whenever the Streaming API answers ``401``/``403`` — runs
:func:`sfsync.salesforce.auth.fetch_token` with the configured flow (password, JWT bearer, refresh
token, client credentials) against ``salesforce.login_url``. Its ``repr`` and errors never contain a
secret or a token.

:func:`make_streaming_client` builds the ``Client`` (``connection_timeout=0``: keeps aiocometd-ng off its
Python >= 3.10 ``wait_for(loop=)`` bug path, so network loss means "keep reconnecting"), with its ``ssl``
attribute trusting ``salesforce.ca_bundle`` when set, and its JSON loader :func:`loads_cometd`: numbers kept
exact (a CDC payload's fractions arrive as ``Decimal``, never through float), and a body that is no CometD
payload (a JSON array of message objects, each with a ``channel``) refused with aiocometd-ng's
``TransportError``. Why: a 503 from Salesforce's front end carries a REST-style error array
(``[{"message", "errorCode"}]``), which aiocometd-ng would read as messages and fail on with a ``KeyError``
(its ``open()`` / ``subscribe()`` raising something no caller expects, the connect loop retrying blind); as
a ``TransportError`` it is a stream failure like a lost connection: the client's methods raise the
library's ``TransportError`` (an ``AiosfstreamException``), the connect loop retries. Call it inside a
running event loop.

A stream that breaks AFTER ``open()`` never reaches the caller through ``receive()``: with
``connection_timeout=0`` aiocometd-ng retries its ``/meta/connect`` forever and ``receive()`` just waits.
The library's own record of that is its transport's state: ``CONNECTING`` once an open transport's connect
(or re-handshake) request has FAILED (a network error, a timeout, a body that is no CometD answer), back to
``CONNECTED`` once a request is answered; silence (a quiet org, a held long-poll) never changes it.
:func:`transport_state` reads it (aiocometd-ng has no public accessor: ``Client._transport``) and
:func:`stream_lost` (pure) says whether it means the stream is down; the caller raises
:class:`StreamLost` and reconnects from its committed positions.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import MutableMapping
from typing import Any

from aiocometd_ng.constants import TransportState
from aiocometd_ng.exceptions import TransportError
from aiosfstream_ng import Client, ReplayMarker, ReplayMarkerStoragePolicy
from aiosfstream_ng.auth import AuthenticatorBase
from aiosfstream_ng.exceptions import TransportError as StreamTransportError

from sfsync.config import SalesforceConfig
from sfsync.salesforce.auth import AuthenticationFailed, fetch_token
from sfsync.salesforce.values import loads_exact


class SfsyncAuthenticator(AuthenticatorBase):
    """Authenticates the streaming client through sfsync's own OAuth module."""

    def __init__(self, cfg: SalesforceConfig) -> None:
        super().__init__()
        self._cfg = cfg
        self.auth_count = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"SfsyncAuthenticator({self._cfg.login_url!r}, flow={self._cfg.auth.flow.value})"

    async def _authenticate(self) -> tuple[int, dict[str, Any]]:
        try:
            token = await asyncio.to_thread(fetch_token, self._cfg)
        except AuthenticationFailed as e:
            self.last_error = f"{e.error}: {e.description}"
            return e.status or 503, {"error": e.error, "error_description": e.description}
        self.auth_count += 1
        self.last_error = None
        return 200, {
            "access_token": token.access_token,
            "instance_url": token.instance_url,
            "token_type": token.token_type or "Bearer",
            "id": str(token.raw.get("id", "")),
            "issued_at": str(token.raw.get("issued_at", "")),
            "signature": str(token.raw.get("signature", "")),
        }


#: how much of a refused body's error message is quoted
_QUOTE = 200


def loads_cometd(text: str | bytes | bytearray) -> Any:
    """A CometD response body (numbers exact, :func:`~sfsync.salesforce.values.loads_exact`), or
    ``TransportError`` when it is no CometD payload (see the module doc), naming the error code and message
    it carries (a REST-style error array: Salesforce's error texts hold no secret)."""
    payload = loads_exact(text)
    if isinstance(payload, list) and all(isinstance(m, dict) and isinstance(m.get("channel"), str) for m in payload):
        return payload
    first = payload[0] if isinstance(payload, list) and payload else payload
    if isinstance(first, dict) and ("errorCode" in first or "message" in first):
        what = f"{first.get('errorCode')}: {str(first.get('message'))[:_QUOTE]}"
    else:
        what = f"a JSON {type(payload).__name__}"
    raise TransportError(f"the streaming endpoint answered no CometD messages ({what})")


def ssl_context(cfg: SalesforceConfig) -> ssl.SSLContext | None:
    """An SSL context trusting ``ca_bundle`` (None: the library default, the system store)."""
    return ssl.create_default_context(cafile=str(cfg.ca_bundle)) if cfg.ca_bundle else None


def make_streaming_client(cfg: SalesforceConfig, replay: MutableMapping[str, ReplayMarker],
                          max_pending_count: int = 1000) -> Client:
    """A streaming client resuming from ``replay`` (channel -> marker; the client updates it as events are
    received: ``AUTOMATIC`` policy)."""
    client = Client(
        SfsyncAuthenticator(cfg),
        replay=replay,
        replay_storage_policy=ReplayMarkerStoragePolicy.AUTOMATIC,
        connection_timeout=0,
        max_pending_count=max_pending_count,
        json_loads=loads_cometd,
    )
    context = ssl_context(cfg)
    if context is not None:
        client.ssl = context
    return client


class StreamLost(StreamTransportError):
    """The open stream's connect requests fail (:func:`stream_lost`): raised by the consumer of an open client,
    an ``AiosfstreamException`` like every other stream failure, so it takes the same reconnect path."""


def transport_state(client: Client) -> TransportState | None:
    """The state of the client's transport; ``None`` before ``open()`` (no transport yet).

    A thin adapter over a private attribute (``Client._transport``, set by ``open()``): aiocometd-ng keeps its
    connect loop's outcome there and nowhere public."""
    transport = getattr(client, "_transport", None)
    state = getattr(transport, "state", None)
    return state if isinstance(state, TransportState) else None


def stream_lost(state: TransportState | None) -> bool:
    """Whether an OPEN client's transport state says its stream is down: ``CONNECTING`` is only entered after
    a failed connect or handshake request (aiocometd-ng ``TransportBase._connect_done``) and left when a request
    is answered. Never true for silence: a long-poll held open without events stays ``CONNECTED``.
    ``SERVER_DISCONNECTED`` is not counted here: ``receive()`` raises ``ServerError`` for it already."""
    return state is TransportState.CONNECTING


async def close_client(client: Client) -> None:
    """Close the client without aiocometd-ng's ``Exception in callback TransportBase._connect_done`` ERROR.

    Why: closing cancels the transport's pending connect task, whose done-callback then calls ``result()`` on
    the cancelled task and lets the ``CancelledError`` escape into asyncio's exception handler (a traceback
    logged at ERROR on every close: each reconnect after a lost stream, each stop). Detached first, the
    callback cannot run; at close it has nothing to do anyway (``disconnect()`` sets ``DISCONNECTING``,
    for which it schedules nothing). Thin adapter over private attributes, each looked up defensively."""
    transport = getattr(client, "_transport", None)
    task = getattr(transport, "_connect_task", None)
    done = getattr(transport, "_connect_done", None)
    if isinstance(task, asyncio.Future) and done is not None and not task.done():
        task.remove_done_callback(done)
    await client.close()
