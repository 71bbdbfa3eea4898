"""The emulated org: one object holding schema, records, sessions, CDC bus, faults, stats and config.

Everything the HTTP layer does goes through an :class:`Emulator`. ``reset()`` wipes records, events,
sessions, faults, validation rules, stats, query cursors and Bulk jobs but keeps the schema and the
configuration.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass
from decimal import Decimal
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
        self.store.automation.clear()
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


def number_text(value: Decimal) -> str:
    """A finite Decimal as a JSON number in plain notation (``123.450``, never ``1.2E+3``)."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a JSON number")
    return format(value, "f")


def dumps_json(body: Any) -> str:
    """Compact JSON; a ``Decimal`` is written as a JSON number with exactly its digits (Salesforce's JSON
    carries every stored digit; ``json`` alone would refuse a Decimal or, through float, lose digits).

    Each Decimal is first written as a string wrapped in a random per-call marker and then unquoted, so
    the C encoder does the work; no string value can carry the marker.
    """
    numbers: list[str] = []
    marker = secrets.token_hex(8)

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            numbers.append(number_text(value))
            return f"{marker}{len(numbers) - 1}{marker}"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    text = json.dumps(body, separators=(",", ":"), default=default)
    if not numbers:
        return text
    return re.sub(f'"{marker}(\\d+){marker}"', lambda m: numbers[int(m.group(1))], text)


def sf_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response with Salesforce's content type (Decimals exact, see :func:`dumps_json`)."""
    return Response(dumps_json(body), status_code=status, headers=headers, media_type=JSON_TYPE)


def parse_json(raw: bytes, *, exact: bool = True) -> Any:
    """Decode a request body; JSON_PARSER_ERROR (400) when it is not JSON. ``exact``: numbers with a
    fraction or exponent become ``Decimal`` (record values keep every digit), else ``float`` (settings)."""
    try:
        return json.loads(raw or b"null", parse_float=Decimal if exact else float)
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
