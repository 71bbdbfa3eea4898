"""The one table that classifies Salesforce errors as transient (retry) or permanent (dead-letter).

Contract: :func:`classify` looks the ``errorCode`` / ``statusCode`` up in :data:`TRANSIENT_CODES` and
:data:`PERMANENT_CODES`; a code in neither table is transient when the HTTP status is 5xx (or unknown
transport trouble) and permanent otherwise. Decisions are never made by matching message text.
"""

from __future__ import annotations

from sfsync.failures import FailureKind

#: Codes worth retrying: the same request may succeed later.
TRANSIENT_CODES: frozenset[str] = frozenset({
    "UNABLE_TO_LOCK_ROW",
    "SERVER_UNAVAILABLE",
    "REQUEST_LIMIT_EXCEEDED",
    "UNKNOWN_EXCEPTION",
    "QUERY_TIMEOUT",
    "REQUEST_RUNNING_TOO_LONG",
    "API_CURRENTLY_DISABLED",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "TIMEOUT",
    "CONNECTION_ERROR",
    "HTTP_5XX",
    "REFERENCE_NOT_SYNCED",
})

#: Codes that will fail again unchanged: the record (or the mapping) must be fixed first.
PERMANENT_CODES: frozenset[str] = frozenset({
    "INVALID_FIELD",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
    "REQUIRED_FIELD_MISSING",
    "STRING_TOO_LONG",
    "DUPLICATE_VALUE",
    "DUPLICATES_DETECTED",
    "DUPLICATE_EXTERNAL_ID",
    "MALFORMED_ID",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "INVALID_EMAIL_ADDRESS",
    "INVALID_TYPE_ON_FIELD_IN_RECORD",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    "INVALID_CROSS_REFERENCE_KEY",
    "FIELD_INTEGRITY_EXCEPTION",
    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
    "ENTITY_IS_DELETED",
    "ENTITY_IS_LOCKED",
    "NOT_FOUND",
    "INVALID_TYPE",
    "INVALID_ID_FIELD",
    "JSON_PARSER_ERROR",
    "MISSING_ARGUMENT",
    "MISSING_KEY",
    "EXCEEDED_MAX_SIZE_REQUEST",
    "INSUFFICIENT_ACCESS",
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
    "INSUFFICIENT_ACCESS_OR_READONLY",
    "METHOD_NOT_ALLOWED",
    "NUMBER_OUTSIDE_VALID_RANGE",
    "UNSUPPORTED_VALUE",
})


def classify(code: str | None, http_status: int | None = None) -> FailureKind:
    """Transient or permanent for a Salesforce error code (see module contract)."""
    if code in TRANSIENT_CODES:
        return FailureKind.TRANSIENT
    if code in PERMANENT_CODES:
        return FailureKind.PERMANENT
    if http_status is None or http_status >= 500 or http_status in (408, 429):
        return FailureKind.TRANSIENT
    return FailureKind.PERMANENT
