"""Salesforce-shaped errors raised inside the emulator.

Every failure the emulator reports to a client is an :class:`SfError`; the HTTP layer renders it as
Salesforce does: a JSON array ``[{"message", "errorCode", "fields"}]`` for REST calls, or a per-record
``{"statusCode", "message", "fields"}`` entry inside sObject Collections results.
"""

from __future__ import annotations

from typing import Any


class SfError(Exception):
    """A Salesforce API error: ``code`` is the errorCode/statusCode, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = fields or []
        self.status = status

    def rest_body(self) -> list[dict[str, Any]]:
        """The body of a failed REST call: a one-element JSON array."""
        return [{"message": self.message, "errorCode": self.code, "fields": self.fields}]

    def record_error(self) -> dict[str, Any]:
        """One entry of a Collections result's ``errors`` list."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def not_found(message: str = "The requested resource does not exist") -> SfError:
    """404 NOT_FOUND with Salesforce's default message."""
    return SfError("NOT_FOUND", message, status=404)
