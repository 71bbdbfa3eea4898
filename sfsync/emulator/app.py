"""The Starlette application: routing, plus one raw-ASGI middleware for the cross-cutting Salesforce
behaviour of every API call.

For each request under ``/services/data/vXX.X/`` the middleware, in order: validates the version
(>= 42.0, else 404 NOT_FOUND); checks the bearer token (401 INVALID_SESSION_ID); checks the daily
allowance (403 REQUEST_LIMIT_EXCEEDED) and counts the call; records ``Sforce-Call-Options: client=``;
applies the first matching fault rule; and adds ``Sforce-Limit-Info: api-usage=N/M`` to the response.
OAuth and CometD requests are counted separately (they do not use the allowance) and can be faulted too.
``/__emulator/`` requests bypass all of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sfsync.emulator import bulk2, collections, control, rest
from sfsync.emulator.auth import OAuthError
from sfsync.emulator.core import Emulator, check_version, parse_json, sf_json
from sfsync.emulator.errors import SfError
from sfsync.emulator.faults import FaultRule

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOG = logging.getLogger(__name__)
DATA_PREFIX = "/services/data/v"
SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
_RECORD_WORDS = {"describe", "updated", "deleted"}


def endpoint_key(method: str, segments: list[str]) -> tuple[str, str | None]:
    """A stats key like ``GET sobjects/{type}/{id}`` and the sObject named in the path (if any)."""
    if not segments:
        return f"{method} /", None
    head = segments[0]
    sobject = None
    template = head
    if head == "sobjects" and len(segments) > 1:
        sobject = segments[1]
        if len(segments) == 2:
            template = "sobjects/{type}"
        elif len(segments) == 3:
            template = f"sobjects/{{type}}/{segments[2] if segments[2] in _RECORD_WORDS else '{id}'}"
        else:
            template = "sobjects/{type}/{field}/{value}"
    elif head == "composite" and len(segments) > 1 and segments[1] == "sobjects":
        sobject = segments[2] if len(segments) > 2 else None
        template = "/".join(["composite/sobjects", "{type}", "{field}"][: max(len(segments) - 1, 1)])
    elif head in ("query", "queryAll"):
        template = head if len(segments) == 1 else f"{head}/{{locator}}"
    elif head == "jobs":
        template = "/".join(segments[:2]) + ("/{id}" if len(segments) > 2 else "")
        template += "/" + "/".join(segments[3:]) if len(segments) > 3 else ""
    return f"{method} {template}", sobject


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _call_options_client(value: str | None) -> str | None:
    if not value:
        return None
    for part in value.replace(";", ",").split(","):
        key, _, val = part.strip().partition("=")
        if key.strip().lower() == "client" and val.strip():
            return val.strip()
    return None


async def _send_json(send: Send, status: int, body: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json;charset=UTF-8"),
               (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class SalesforceMiddleware:
    """Auth, limits, call options, faults, stats and the limit header (see module docstring)."""

    def __init__(self, app: ASGIApp, emu: Emulator) -> None:
        self.app = app
        self.emu = emu
        self.emulator = emu

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/__emulator"):
            await self.app(scope, receive, send)
            return
        emu = self.emu
        method = scope["method"]
        state = scope.setdefault("state", {})
        if path.startswith(DATA_PREFIX):
            version, _, rest_path = path[len(DATA_PREFIX):].partition("/")
            segments = [s for s in rest_path.split("/") if s]
            endpoint, sobject = endpoint_key(method, segments)
            try:
                check_version(version)
            except SfError as err:
                await _send_json(send, err.status, err.rest_body())
                return
            session = emu.auth.session_for(_header(scope, b"authorization"))
            if session is None:
                emu.stats.count_other("unauthenticated")
                await _send_json(send, 401, SESSION_EXPIRED)
                return
            if emu.api_used >= emu.config.api_limit:
                await _send_json(send, 403, [{"message": "TotalRequests Limit exceeded.",
                                              "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                                 [(b"sforce-limit-info", emu.limit_header().encode())])
                return
            emu.api_used += 1
            emu.stats.count_api(endpoint)
            state.update(session=session, version=version,
                         client=_call_options_client(_header(scope, b"sforce-call-options")))
            if emu.faults.rules and await self._fault(emu.faults.pick(method, path, sobject), send):
                return
            limit = emu.limit_header().encode()

            async def send_with_limits(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"sforce-limit-info", limit)]
                await send(message)

            await self.app(scope, receive, send_with_limits)
            return
        if path.startswith(("/cometd/", "/services/oauth2/")):
            emu.stats.count_other(f"{method} {path.split('/')[1] if path.startswith('/cometd') else path[10:]}")
            if emu.faults.rules and await self._fault(emu.faults.pick(method, path, None), send):
                return
        await self.app(scope, receive, send)

    async def _fault(self, rule: FaultRule | None, send: Send) -> bool:
        """Apply a fault; True when the request was answered (or dropped) by it."""
        if rule is None:
            return False
        self.emu.stats.faults_injected += 1
        if rule.latency_ms:
            await asyncio.sleep(rule.latency_ms / 1000)
        if rule.drop_connection:
            cycle = getattr(send, "__self__", None)  # uvicorn's request/response cycle
            transport = getattr(cycle, "transport", None)
            if transport is not None:
                transport.abort()
                cycle.disconnected = True  # type: ignore[union-attr]  # so uvicorn logs no "returned without response"
                return True
            await _send_json(send, 500, [{"message": "connection dropped", "errorCode": "UNKNOWN_EXCEPTION"}])
            return True
        if rule.status:
            await _send_json(send, rule.status, rule.error_body(),
                             [(b"sforce-limit-info", self.emu.limit_header().encode())])
            return True
        return False


async def oauth_token(request: Request) -> Response:
    """POST /services/oauth2/token (form-encoded)."""
    emu = rest.emulator(request)
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    basic = None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            basic = (user, secret)
        except ValueError:
            basic = None
    host = request.headers.get("host", request.url.netloc)
    try:
        body = emu.auth.token(form, basic, f"https://{host}")
    except OAuthError as err:
        return sf_json(err.body(), status=err.status)
    return sf_json(body)


async def cometd(request: Request) -> Response:
    """POST /cometd/{version}: a Bayeux message batch."""
    emu = rest.emulator(request)
    try:
        messages = parse_json(await request.body())
    except SfError:
        return sf_json([{"successful": False, "error": "400::Invalid JSON"}], status=400)
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return sf_json([{"successful": False, "error": "400::Invalid message"}], status=400)
    if emu.auth.session_for(request.headers.get("authorization")) is None:
        return sf_json(emu.cometd.auth_failure(messages))
    return sf_json(await emu.cometd.handle(messages))


def _both(path: str, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str]) -> list[BaseRoute]:
    """Routes for ``path`` with and without a trailing slash (Salesforce accepts both)."""
    return [Route(path, endpoint, methods=methods), Route(path + "/", endpoint, methods=methods)]


def build_routes() -> list[BaseRoute]:
    """Every route of the emulator."""
    v = "/services/data/v{version}"
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/services/data", rest.versions, ["GET"]),
        (v, rest.resources, ["GET"]),
        (f"{v}/limits", rest.limits, ["GET"]),
        (f"{v}/sobjects", rest.describe_global, ["GET"]),
        (f"{v}/sobjects/{{sobject}}", rest.sobject_root, ["GET", "POST"]),
        (f"{v}/sobjects/{{sobject}}/describe", rest.describe, ["GET"]),
        (f"{v}/sobjects/{{sobject}}/updated", rest.updated, ["GET"]),
        (f"{v}/sobjects/{{sobject}}/deleted", rest.deleted, ["GET"]),
        (f"{v}/sobjects/{{sobject}}/{{record_id}}", rest.record, ["GET", "PATCH", "DELETE", "POST"]),
        (f"{v}/sobjects/{{sobject}}/{{field}}/{{value}}", rest.by_external_id, ["GET", "PATCH", "DELETE"]),
        (f"{v}/query", rest.query, ["GET"]),
        (f"{v}/queryAll", rest.query, ["GET"]),
        (f"{v}/query/{{locator}}", rest.query, ["GET"]),
        (f"{v}/queryAll/{{locator}}", rest.query, ["GET"]),
        (f"{v}/composite/sobjects", collections.collection, ["POST", "PATCH", "DELETE"]),
        (f"{v}/composite/sobjects/{{sobject}}", collections.retrieve, ["GET", "POST"]),
        (f"{v}/composite/sobjects/{{sobject}}/{{field}}", collections.upsert, ["PATCH"]),
        (f"{v}/jobs/query", bulk2.query_jobs, ["GET", "POST"]),
        (f"{v}/jobs/query/{{job_id}}", bulk2.query_job, ["GET", "PATCH", "DELETE"]),
        (f"{v}/jobs/query/{{job_id}}/results", bulk2.query_results, ["GET"]),
        ("/services/oauth2/token", oauth_token, ["POST"]),
        ("/cometd/{version}", cometd, ["POST"]),
    ]
    routes: list[BaseRoute] = []
    for path, endpoint, methods in table:
        routes.extend(_both(path, endpoint, methods))
    routes.extend(control.routes())
    return routes


async def _sf_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SfError)
    return sf_json(exc.rest_body(), status=exc.status)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        return sf_json([{"message": f"HTTP Method '{request.method}' not allowed.", "errorCode": "METHOD_NOT_ALLOWED"}],
                       status=405)
    return sf_json([{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}], status=404)


async def _crash(request: Request, exc: Exception) -> Response:
    LOG.exception("emulator error on %s %s", request.method, request.url.path)
    return sf_json([{"message": f"An unexpected error occurred: {exc}", "errorCode": "UNKNOWN_EXCEPTION"}],
                   status=500)


def build_app(schema_file: Path | None = None, emu: Emulator | None = None) -> SalesforceMiddleware:
    """The ASGI app: Starlette wrapped in :class:`SalesforceMiddleware` (outermost, so that it sees the
    server's own ``send`` and can drop connections). ``app.emulator`` is the org."""
    emu = emu or Emulator(schema_file)
    inner = Starlette(
        routes=build_routes(),
        exception_handlers={SfError: _sf_error, 404: _not_found, 405: _not_found,
                            control.BadBody: control.bad_body_handler, Exception: _crash},
    )
    inner.state.emulator = emu
    return SalesforceMiddleware(inner, emu)
