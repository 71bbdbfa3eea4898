"""``EmulatorControl``: a small httpx client for the emulator's ``/__emulator/`` control endpoints.

Every method raises ``httpx.HTTPStatusError`` when the emulator refuses the request and returns the
decoded JSON answer otherwise.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx


class EmulatorControl:
    """Control client bound to one emulator (``base_url`` like ``https://127.0.0.1:P``)."""

    def __init__(self, base_url: str, ca_path: Path | str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url + "/__emulator",
                                  verify=ssl.create_default_context(cafile=str(ca_path)) if ca_path else True,
                                  timeout=timeout)

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=json, params=params)
        response.raise_for_status()
        return response.json()

    # ------------------------------------------------------------------ state
    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return self._call("GET", "/health")

    def reset(self) -> None:
        """Wipe records, events, sessions, faults, validation rules and stats (schema and config kept)."""
        self._call("POST", "/reset")

    def config(self, **changes: Any) -> dict[str, Any]:
        """Read the configuration, or change some keys (e.g. ``session_lifetime_seconds=5``)."""
        if changes:
            return self._call("PUT", "/config", json=changes)
        return self._call("GET", "/config")

    def set_limits(self, max: int | None = None, used: int | None = None) -> dict[str, Any]:
        """Set the daily API allowance and/or the calls already used."""
        return self._call("PUT", "/limits", json={"max": max, "used": used})

    # ------------------------------------------------------------------ faults
    def add_fault(self, **rule: Any) -> dict[str, Any]:
        """Add a fault rule: method, path (regex), sobject, status, error_code, message, latency_ms,
        drop_connection, probability, count. Returns the rule with its ``id``."""
        return self._call("POST", "/faults", json=rule)

    def faults(self) -> list[dict[str, Any]]:
        """The active rules with their ``fired`` counts."""
        return self._call("GET", "/faults")

    def remove_fault(self, rule_id: int) -> None:
        """Remove one rule."""
        self._call("DELETE", f"/faults/{rule_id}")

    def clear_faults(self) -> None:
        """Remove every rule."""
        self._call("DELETE", "/faults")

    # ------------------------------------------------------------------ validation rules
    def add_validation_rule(self, **rule: Any) -> dict[str, Any]:
        """Add a validation rule: object, field, equals or regex, error_code, message, fields. Returns the
        rule with its ``id``."""
        return self._call("POST", "/validation-rules", json=rule)

    def add_field_update(self, **update: Any) -> dict[str, Any]:
        """Add a field update (automation): object, when_field, regex, set. Returns it with its id."""
        return self._call("POST", "/field-updates", json=update)

    def field_updates(self) -> list[dict[str, Any]]:
        """The active field updates with their ``fired`` counts."""
        return self._call("GET", "/field-updates")

    def clear_field_updates(self) -> None:
        """Remove every field update."""
        self._call("DELETE", "/field-updates")

    def validation_rules(self) -> list[dict[str, Any]]:
        """The active validation rules with their ``fired`` counts."""
        return self._call("GET", "/validation-rules")

    def remove_validation_rule(self, rule_id: int) -> None:
        """Remove one validation rule."""
        self._call("DELETE", f"/validation-rules/{rule_id}")

    def clear_validation_rules(self) -> None:
        """Remove every validation rule."""
        self._call("DELETE", "/validation-rules")

    # ------------------------------------------------------------------ schema changes
    def add_field(self, object: str, name: str, type: str, **attributes: Any) -> dict[str, Any]:
        """Add (or replace) a custom field now (``attributes``: the ``--schema`` YAML keys, e.g.
        ``length=80``); returns its describe entry."""
        return self._call("POST", "/fields", json={"object": object, "name": name, "type": type,
                                                    "attributes": attributes})

    def delete_field(self, object: str, name: str) -> dict[str, Any]:
        """Delete a custom field now (its values go with it): later calls naming it get ``INVALID_FIELD``."""
        return self._call("DELETE", f"/fields/{object}/{name}")

    # ------------------------------------------------------------------ sessions
    def expire_sessions(self, token: str | None = None) -> int:
        """Expire one session (or all); returns how many were live."""
        return int(self._call("POST", "/sessions/expire", json={"token": token})["expired"])

    def age_sessions(self, seconds: float, token: str | None = None) -> dict[str, int]:
        """Make one session (or all) ``seconds`` older, as if that much time had passed for it: a session ends
        once its age reaches ``session_lifetime_seconds`` (as configured when it was issued). Returns
        ``{"aged": n, "expired": m}``: sessions aged, and how many of those this ended."""
        body = self._call("POST", "/sessions/age", json={"seconds": seconds, "token": token})
        return {"aged": int(body["aged"]), "expired": int(body["expired"])}

    def refresh_token(self) -> str:
        """Mint a refresh token usable with the ``refresh_token`` grant."""
        return str(self._call("POST", "/refresh-token")["refresh_token"])

    # ------------------------------------------------------------------ events
    def emit_gap(self, object: str, change_type: str, record_ids: list[str] | None = None) -> int:
        """Emit GAP_CREATE/GAP_UPDATE/GAP_DELETE/GAP_UNDELETE/GAP_OVERFLOW; returns its replay id."""
        body = {"object": object, "change_type": change_type, "record_ids": record_ids or []}
        return int(self._call("POST", "/events/gap", json=body)["replay_id"])

    def emit_raw_event(self, channel: str, payload: Any) -> int:
        """Deliver a CDC event with exactly ``payload`` (unchecked) on ``channel``; returns its replay id."""
        return int(self._call("POST", "/events/raw", json={"channel": channel, "payload": payload})["replay_id"])

    def truncate_events(self, up_to: int) -> dict[str, Any]:
        """Age out retained events with replay id <= ``up_to``."""
        return self._call("POST", "/events/truncate", json={"up_to": up_to})

    def events(self, after: int = -1, limit: int = 1000) -> dict[str, Any]:
        """Retained events after a replay id: ``{"last_replay_id", "events": [...]}``."""
        return self._call("GET", "/events", params={"after": after, "limit": limit})

    # ------------------------------------------------------------------ data
    def seed(self, object: str, count: int, fields: dict[str, Any] | None = None, emit_events: bool = True,
             start: int = 0) -> list[str]:
        """Create ``count`` records fast (``{i}`` in string values = index); returns their ids."""
        body = {"object": object, "count": count, "fields": fields or {}, "emit_events": emit_events,
                "start": start}
        return list(self._call("POST", "/seed", json=body)["ids"])

    def undelete(self, ids: list[str]) -> list[dict[str, Any]]:
        """Restore records from the recycle bin; per-id results like sObject Collections."""
        return self._call("POST", "/undelete", json={"ids": ids})

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """API calls per endpoint, records per collection call, events emitted, faults injected."""
        return self._call("GET", "/stats")

    def reset_stats(self) -> dict[str, Any]:
        """Zero the counters (returns the zeroed stats)."""
        return self._call("POST", "/stats/reset")
