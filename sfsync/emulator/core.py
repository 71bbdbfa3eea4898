"""The emulated org: one object holding schema, records, sessions, CDC bus, faults, stats and config.

Everything the HTTP layer does goes through an :class:`Emulator`. ``reset()`` wipes records, events,
sessions, faults, validation rules, stats, query cursors and Bulk jobs but keeps the schema and the
configuration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.responses import Response

from sfsync.emulator.auth import Auth
from sfsync.emulator.cometd import CometdEndpoint, EventBus
from sfsync.emulator.errors import SfError
from sfsync.emulator.faults import Faults, Stats
from sfsync.emulator.schema import Schema
from sfsync.emulator.store import CallContext, Store

JSON_TYPE = "application/json;charset=UTF-8"
MIN_VERSION = 42.0
MAX_VERSION = 66.0


@dataclass
class EmulatorConfig:
    """Runtime knobs settable through ``PUT /__emulator/config``."""

    api_limit: int = 1_000_000
    event_retention_seconds: float = 72 * 3600
    connect_timeout_ms: int = 20_000
    max_events: int = 1_000_000
    cursor_limit: int = 1_000


class Emulator:
    """State and shared helpers of one emulated org."""

    def __init__(self, schema_file: Path | None = None) -> None:
        self.config = EmulatorConfig()
        self.schema = Schema(schema_file)
        self.stats = Stats()
        self.bus = EventBus(self.schema, self.config.event_retention_seconds, self.config.max_events,
                            on_emit=self.stats.count_events)
        self.store = Store(self.schema, self.bus.publish)
        self.auth = Auth(self.store.admin_id)
        self.faults = Faults()
        self.cometd = CometdEndpoint(self.bus, lambda: self.config.connect_timeout_ms)
        self.api_used = 0
        self.cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self.jobs: dict[str, Any] = {}

    def reset(self) -> None:
        """Wipe data, events, sessions, faults, validation rules and stats; keep schema and configuration."""
        self.store.validation.clear()
        self.store.reset()
        self.bus.reset()
        self.auth.reset(self.store.admin_id)
        self.faults.clear()
        self.stats.reset()
        self.api_used = 0
        self.cursors.clear()
        self.jobs.clear()

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply config changes (unknown keys raise KeyError); returns the full config."""
        for key, value in changes.items():
            if key in ("session_lifetime_seconds", "client_id", "client_secret", "security_token",
                       "jwt_certificate_pem", "password"):
                setattr(self.auth.config, key, value)
            elif hasattr(self.config, key):
                setattr(self.config, key, value)
            else:
                raise KeyError(key)
        self.bus.retention_seconds = self.config.event_retention_seconds
        self.bus.max_events = self.config.max_events
        self.bus.prune()
        return self.public_config()

    def public_config(self) -> dict[str, Any]:
        """The configuration as JSON (secrets included: this is a test tool)."""
        auth = self.auth.config
        return {**asdict(self.config), "session_lifetime_seconds": auth.session_lifetime_seconds,
                "client_id": auth.client_id, "client_secret": auth.client_secret,
                "security_token": auth.security_token, "username": auth.username, "password": auth.password,
                "jwt_certificate_pem": auth.jwt_certificate_pem}

    def context(self, state: dict[str, Any], api: str = "rest") -> CallContext:
        """The CDC context of a request: its user and ``changeOrigin``."""
        session = state.get("session")
        version = state.get("version", "59.0")
        client = state.get("client")
        origin = f"com/salesforce/api/{api}/{version}" + (f";client={client}" if client else "")
        return CallContext(user_id=session.user_id if session else self.store.admin_id, origin=origin)

    def limit_header(self) -> str:
        """The ``Sforce-Limit-Info`` value."""
        return f"api-usage={self.api_used}/{self.config.api_limit}"


def sf_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response with Salesforce's content type."""
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, headers=headers,
                    media_type=JSON_TYPE)


def parse_json(raw: bytes) -> Any:
    """Decode a request body; JSON_PARSER_ERROR (400) when it is not JSON."""
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SfError("JSON_PARSER_ERROR", f"Unexpected character: was expecting a JSON value ({exc})") from None


def check_version(version: str) -> str:
    """Validate a ``vXX.X`` API version (>= 42.0); 404 NOT_FOUND otherwise."""
    try:
        number = float(version)
    except ValueError:
        raise SfError("NOT_FOUND", "The requested resource does not exist", status=404) from None
    if not MIN_VERSION <= number <= MAX_VERSION or "." not in version:
        raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
    return version
