"""Control endpoints under ``/__emulator/``: reset, config, limits, faults, validation rules, custom fields
(add / delete at run time: schema drift), sessions (expire, age), CDC gaps and raw events, seeding, undelete,
stats. They need no Salesforce session and are never counted
as API calls.

Bodies are JSON with snake_case keys, validated by the pydantic models below; a bad body answers 422
``{"error": "...", "details": [...]}``. See docs/emulator.md for examples.
"""

from __future__ import annotations

import time
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sfsync.emulator.cometd import GAP_TYPES
from sfsync.emulator.core import Emulator, dumps_json, parse_json
from sfsync.emulator.errors import SfError
from sfsync.emulator.rest import emulator
from sfsync.emulator.schema import _field_from_yaml
from sfsync.emulator.store import CallContext
from sfsync.emulator.validation import DEFAULT_CODE, RuleSpecError

M = TypeVar("M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultSpec(_Model):
    """A fault rule to add (see sfsync.emulator.faults.FaultRule)."""

    method: str | None = None
    path: str | None = None
    sobject: str | None = None
    status: int | None = Field(default=None, ge=100, le=599)
    error_code: str | None = None
    message: str | None = None
    latency_ms: int = Field(default=0, ge=0)
    drop_connection: bool = False
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1)


class ValidationRuleSpec(_Model):
    """A validation rule to add (see sfsync.emulator.validation); exactly one of ``equals``/``regex``."""

    object: str
    field: str
    equals: Any = None
    regex: str | None = None
    error_code: str = Field(default=DEFAULT_CODE, min_length=1)
    message: str | None = None
    fields: list[str] | None = None


class FieldUpdateSpec(_Model):
    """A field update to add (see sfsync.emulator.automation)."""

    object: str
    when_field: str
    regex: str
    set: dict[str, Any]


class FieldSpec(_Model):
    """A custom field to add at run time: ``attributes`` are the keys of the ``--schema`` YAML file
    (``length``, ``externalId``, ``picklistValues``, ``referenceTo``, ...)."""

    object: str
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*__c$")
    type: str
    attributes: dict[str, Any] = Field(default_factory=dict)


class ExpireSpec(_Model):
    """Expire one session (``token``) or all of them."""

    token: str | None = None


class AgeSpec(_Model):
    """Make one session (``token``) or all of them ``seconds`` older."""

    seconds: float = Field(gt=0)
    token: str | None = None


class GapSpec(_Model):
    """A gap event to emit."""

    object: str
    change_type: Literal["GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"]
    record_ids: list[str] = Field(default_factory=list)


class RawEventSpec(_Model):
    """A CDC event to deliver as given on an object's channel (the payload is not checked)."""

    channel: str
    payload: Any


class TruncateSpec(_Model):
    """Age out every retained event with replay id <= up_to."""

    up_to: int


class LimitsSpec(_Model):
    """Daily API allowance and current usage."""

    max: int | None = Field(default=None, ge=0)
    used: int | None = Field(default=None, ge=0)


class SeedSpec(_Model):
    """Create ``count`` records of ``object``; ``{i}`` in string field values becomes the record's index."""

    object: str
    count: int = Field(ge=1, le=1_000_000)
    fields: dict[str, Any] = Field(default_factory=dict)
    emit_events: bool = True
    start: int = 0


class IdsSpec(_Model):
    """A list of record ids."""

    ids: list[str]


def _ok(body: Any, status: int = 200) -> Response:
    return Response(dumps_json(body), status_code=status, media_type="application/json")


async def _body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        return model.model_validate(parse_json(raw) if raw else {})
    except SfError as err:
        raise BadBody(err.message, []) from None
    except ValidationError as exc:
        raise BadBody("invalid body", [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]) from None


class BadBody(Exception):
    """A control request body that failed validation (answered with 422)."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def bad_body_handler(request: Request, exc: Exception) -> Response:
    """422 for control bodies that fail validation."""
    assert isinstance(exc, BadBody)
    return _ok({"error": exc.message, "details": exc.details}, status=422)


async def health(request: Request) -> Response:
    """GET /__emulator/health."""
    return _ok({"ok": True})


async def reset(request: Request) -> Response:
    """POST /__emulator/reset: wipe records, events, sessions, faults, validation rules and stats (schema and
    config kept)."""
    emulator(request).reset()
    return _ok({"reset": True})


async def config(request: Request) -> Response:
    """GET /__emulator/config; PUT with any subset of its keys."""
    emu = emulator(request)
    if request.method == "PUT":
        raw = await request.body()
        changes = parse_json(raw, exact=False) if raw else {}
        if not isinstance(changes, dict):
            raise BadBody("body must be an object", [])
        try:
            return _ok(emu.configure(changes))
        except KeyError as exc:
            raise BadBody(f"unknown config key {exc.args[0]!r}", []) from None
    return _ok(emu.public_config())


async def limits(request: Request) -> Response:
    """PUT /__emulator/limits {"max", "used"}: set the daily allowance and/or usage."""
    emu = emulator(request)
    spec = await _body(request, LimitsSpec)
    if spec.max is not None:
        emu.config.api_limit = spec.max
    if spec.used is not None:
        emu.api_used = spec.used
    return _ok({"max": emu.config.api_limit, "used": emu.api_used})


async def faults(request: Request) -> Response:
    """POST (add a rule), GET (list), DELETE (clear all) /__emulator/faults."""
    emu = emulator(request)
    if request.method == "POST":
        spec = await _body(request, FaultSpec)
        try:
            rule = emu.faults.add(**spec.model_dump())
        except Exception as exc:  # bad regex
            raise BadBody(str(exc), []) from None
        return _ok(rule.public(), status=201)
    if request.method == "DELETE":
        emu.faults.clear()
        return _ok({"cleared": True})
    return _ok([rule.public() for rule in emu.faults.rules])


async def fault(request: Request) -> Response:
    """DELETE /__emulator/faults/{id}."""
    removed = emulator(request).faults.remove(int(request.path_params["rule_id"]))
    return _ok({"removed": removed}, status=200 if removed else 404)


async def validation_rules(request: Request) -> Response:
    """POST (add a rule), GET (list with ``fired`` counts), DELETE (clear all) /__emulator/validation-rules."""
    rules = emulator(request).store.validation
    if request.method == "POST":
        spec = await _body(request, ValidationRuleSpec)
        kwargs = spec.model_dump(exclude={"equals"})
        if "equals" in spec.model_fields_set:
            kwargs["equals"] = spec.equals
        try:
            rule = rules.add(**kwargs)
        except RuleSpecError as exc:
            raise BadBody(str(exc), []) from None
        return _ok(rule.public(), status=201)
    if request.method == "DELETE":
        rules.clear()
        return _ok({"cleared": True})
    return _ok([rule.public() for rule in rules.rules])


async def validation_rule(request: Request) -> Response:
    """DELETE /__emulator/validation-rules/{id}."""
    removed = emulator(request).store.validation.remove(int(request.path_params["rule_id"]))
    return _ok({"removed": removed}, status=200 if removed else 404)


async def field_updates(request: Request) -> Response:
    """POST (add), GET (list with ``fired`` counts), DELETE (clear all) /__emulator/field-updates."""
    updates = emulator(request).store.automation
    if request.method == "POST":
        spec = await _body(request, FieldUpdateSpec)
        try:
            update = updates.add(spec.object, spec.when_field, spec.regex, spec.set)
        except RuleSpecError as exc:
            raise BadBody(str(exc), []) from None
        return _ok(update.public(), status=201)
    if request.method == "DELETE":
        updates.clear()
        return _ok({"cleared": True})
    return _ok([u.public() for u in updates.updates])


async def custom_fields(request: Request) -> Response:
    """POST /__emulator/fields {"object", "name", "type", "attributes"}: add (or replace) a custom field now;
    the describe, REST, Collections, SOQL and CDC know it at once. 201 with its describe entry."""
    emu = emulator(request)
    spec = await _body(request, FieldSpec)
    obj = emu.schema.get(spec.object)
    if obj is None:
        raise BadBody(f"unknown object {spec.object!r}", [])
    try:
        fdef = _field_from_yaml(obj.name, spec.name, {"type": spec.type, **spec.attributes})
        fdef.describe()
    except (ValueError, TypeError) as exc:
        raise BadBody(str(exc), []) from None
    emu.store.add_field(obj, fdef)
    return _ok(fdef.describe(), status=201)


async def custom_field(request: Request) -> Response:
    """DELETE /__emulator/fields/{object}/{field}: delete a custom field now (its values go with it), as an
    admin deleting it in Setup: every later call naming it gets ``INVALID_FIELD``."""
    emu = emulator(request)
    obj = emu.schema.get(request.path_params["object"])
    if obj is None:
        return _ok({"error": f"unknown object {request.path_params['object']!r}"}, status=404)
    try:
        name = emu.store.remove_field(obj, request.path_params["field"])
    except SfError as err:
        return _ok({"error": err.code, "message": err.message}, status=404 if err.code == "INVALID_FIELD" else 422)
    return _ok({"deleted": f"{obj.name}.{name}"})


async def expire_sessions(request: Request) -> Response:
    """POST /__emulator/sessions/expire {"token"?}: expire one or all sessions now."""
    spec = await _body(request, ExpireSpec)
    return _ok({"expired": emulator(request).auth.expire(spec.token)})


async def age_sessions(request: Request) -> Response:
    """POST /__emulator/sessions/age {"seconds", "token"?}: make sessions ``seconds`` older, as if that much time
    had passed for them (a session ends once its age reaches the lifetime it was issued with). Answers
    ``{"aged": n, "expired": m}``: how many sessions were aged, and how many of those this ended."""
    spec = await _body(request, AgeSpec)
    now = time.time()
    aged = expired = 0
    for session in emulator(request).auth.sessions.values():
        if spec.token is None or session.token == spec.token:
            was_valid = session.valid(now)
            session.issued_at -= spec.seconds
            session.expires_at -= spec.seconds
            aged += 1
            if was_valid and not session.valid(now):
                expired += 1
    return _ok({"aged": aged, "expired": expired})


async def refresh_token(request: Request) -> Response:
    """POST /__emulator/refresh-token: mint a refresh token for the refresh_token grant."""
    return _ok({"refresh_token": emulator(request).auth.new_refresh_token()})


async def gap(request: Request) -> Response:
    """POST /__emulator/events/gap: emit a GAP_* or GAP_OVERFLOW event."""
    emu = emulator(request)
    spec = await _body(request, GapSpec)
    obj = emu.schema.get(spec.object)
    if obj is None or spec.change_type not in GAP_TYPES:
        raise BadBody(f"unknown object {spec.object!r}", [])
    event = emu.bus.emit_gap(obj.name, spec.change_type, spec.record_ids, emu.store.admin_id)
    return _ok({"replay_id": event.replay_id}, status=201)


async def raw_event(request: Request) -> Response:
    """POST /__emulator/events/raw {"channel", "payload"}: deliver an event with exactly that payload."""
    emu = emulator(request)
    spec = await _body(request, RawEventSpec)
    try:
        event = emu.bus.emit_raw(spec.channel, spec.payload)
    except ValueError as e:
        raise BadBody(str(e), []) from None
    return _ok({"replay_id": event.replay_id}, status=201)


async def truncate(request: Request) -> Response:
    """POST /__emulator/events/truncate {"up_to"}: age out events (replays from before become invalid)."""
    emu = emulator(request)
    spec = await _body(request, TruncateSpec)
    return _ok({"dropped": emu.bus.truncate(spec.up_to), "oldest_valid_replay_id": emu.bus.dropped_upto})


async def events(request: Request) -> Response:
    """GET /__emulator/events?after=N&limit=M: retained events (for debugging and tests)."""
    emu = emulator(request)
    after = int(request.query_params.get("after", "-1"))
    limit = int(request.query_params.get("limit", "1000"))
    out = [{"replay_id": ev.replay_id, "channel": ev.channel, "payload": ev.data["payload"]}
           for ev in emu.bus.events if ev.replay_id > after][:limit]
    return _ok({"last_replay_id": emu.bus.last_replay_id, "events": out})


async def seed(request: Request) -> Response:
    """POST /__emulator/seed: create ``count`` records in one transaction; returns their ids."""
    emu = emulator(request)
    spec = await _body(request, SeedSpec)
    obj = emu.schema.get(spec.object)
    if obj is None:
        raise BadBody(f"unknown object {spec.object!r}", [])
    ctx = CallContext(user_id=emu.store.admin_id, origin="", emit_events=spec.emit_events)
    tx = emu.store.begin(ctx)
    ids = []
    try:
        for n in range(spec.start, spec.start + spec.count):
            values = {k: v.replace("{i}", str(n)) if isinstance(v, str) else v for k, v in spec.fields.items()}
            ids.append(emu.store.create(tx, obj, values))
    except SfError as err:
        emu.store.rollback(tx)
        return _ok({"error": err.code, "message": err.message}, status=400)
    emu.store.commit(tx)
    return _ok({"ids": ids}, status=201)


async def undelete(request: Request) -> Response:
    """POST /__emulator/undelete {"ids"}: restore records from the recycle bin (UNDELETE events)."""
    emu = emulator(request)
    spec = await _body(request, IdsSpec)
    results = []
    tx = emu.store.begin(emu.context({}, api="rest"))
    for record_id in spec.ids:
        mark = len(tx.undo)
        try:
            results.append({"id": emu.store.undelete(tx, record_id), "success": True, "errors": []})
        except SfError as err:
            del tx.undo[mark:]
            results.append({"id": record_id, "success": False, "errors": [err.record_error()]})
    emu.store.commit(tx)
    return _ok(results)


async def stats(request: Request) -> Response:
    """GET /__emulator/stats; POST /__emulator/stats/reset zeroes the counters."""
    emu = emulator(request)
    if request.method == "POST":
        emu.stats.reset()
    body = emu.stats.snapshot()
    body["api_usage"] = {"used": emu.api_used, "max": emu.config.api_limit}
    body["cometd_clients"] = len(emu.bus.clients)
    return _ok(body)


def routes(prefix: str = "/__emulator") -> list[Route]:
    """The control routes."""
    return [
        Route(f"{prefix}/health", health, methods=["GET"]),
        Route(f"{prefix}/reset", reset, methods=["POST"]),
        Route(f"{prefix}/config", config, methods=["GET", "PUT"]),
        Route(f"{prefix}/limits", limits, methods=["PUT"]),
        Route(f"{prefix}/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route(f"{prefix}/faults/{{rule_id:int}}", fault, methods=["DELETE"]),
        Route(f"{prefix}/validation-rules", validation_rules, methods=["GET", "POST", "DELETE"]),
        Route(f"{prefix}/validation-rules/{{rule_id:int}}", validation_rule, methods=["DELETE"]),
        Route(f"{prefix}/field-updates", field_updates, methods=["GET", "POST", "DELETE"]),
        Route(f"{prefix}/fields", custom_fields, methods=["POST"]),
        Route(f"{prefix}/fields/{{object}}/{{field}}", custom_field, methods=["DELETE"]),
        Route(f"{prefix}/sessions/expire", expire_sessions, methods=["POST"]),
        Route(f"{prefix}/sessions/age", age_sessions, methods=["POST"]),
        Route(f"{prefix}/refresh-token", refresh_token, methods=["POST"]),
        Route(f"{prefix}/events", events, methods=["GET"]),
        Route(f"{prefix}/events/gap", gap, methods=["POST"]),
        Route(f"{prefix}/events/raw", raw_event, methods=["POST"]),
        Route(f"{prefix}/events/truncate", truncate, methods=["POST"]),
        Route(f"{prefix}/seed", seed, methods=["POST"]),
        Route(f"{prefix}/undelete", undelete, methods=["POST"]),
        Route(f"{prefix}/stats", stats, methods=["GET"]),
        Route(f"{prefix}/stats/reset", stats, methods=["POST"]),
    ]


__all__ = ["BadBody", "Emulator", "bad_body_handler", "routes"]
