"""Field values as a mapping declares them: transforms and type coercion. Pure functions.

Both capture (``producers/postgres``, turning column values into field values)
and mapping (``processors``) need the same conversions, so they live in the
core beside the field-value types of :mod:`sfsync.records`.

Contract of :func:`coerce`: ``None`` stays ``None``; a value that cannot be
converted raises :class:`CoercionError` whose message names the field and the
value's type, never the value itself (it may be personal data).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from sfsync.config import FieldType, Transform
from sfsync.records import FieldPyValue


class CoercionError(ValueError):
    """A value cannot be converted to the mapped type; the message names field and value type."""


def apply_transforms(value: FieldPyValue, transforms: list[Transform]) -> FieldPyValue:
    for t in transforms:
        if isinstance(value, str):
            if t is Transform.STRIP:
                value = value.strip()
            elif t is Transform.LOWER:
                value = value.lower()
            elif t is Transform.UPPER:
                value = value.upper()
            elif t is Transform.EMPTY_AS_NULL and value == "":
                value = None
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "t", "1", "yes", "y"):
        return True
    if lowered in ("false", "f", "0", "no", "n"):
        return False
    raise ValueError(text)


def coerce(value: FieldPyValue, kind: FieldType | None, name: str) -> FieldPyValue:
    """Convert ``value`` to ``kind``; ``None`` stays ``None``. Raises :class:`CoercionError`."""
    if value is None or kind is None:
        return value
    try:
        match kind:
            case FieldType.STRING:
                return value if isinstance(value, str) else _text(value)
            case FieldType.INTEGER:
                if isinstance(value, bool):
                    return int(value)
                if isinstance(value, int):
                    return value
                if isinstance(value, float | Decimal):
                    if value != value or value in (math.inf, -math.inf) or value != int(value):
                        raise ValueError(value)
                    return int(value)
                if isinstance(value, str):
                    return int(value.strip())
            case FieldType.DECIMAL:
                if isinstance(value, bool):
                    raise ValueError(value)
                if isinstance(value, int | float | Decimal | str):
                    d = Decimal(str(value).strip())
                    if not d.is_finite():
                        raise ValueError(value)
                    return d
            case FieldType.FLOAT:
                if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
                    return float(value)
                if isinstance(value, str):
                    return float(value.strip())
            case FieldType.BOOLEAN:
                if isinstance(value, bool):
                    return value
                if isinstance(value, int) and value in (0, 1):
                    return bool(value)
                if isinstance(value, str):
                    return _parse_bool(value)
            case FieldType.DATE:
                if isinstance(value, datetime):
                    return value.date()
                if isinstance(value, date):
                    return value
                if isinstance(value, str):
                    return date.fromisoformat(value.strip()[:10])
            case FieldType.DATETIME:
                if isinstance(value, datetime):
                    return value if value.tzinfo else value.replace(tzinfo=UTC)
                if isinstance(value, int) and not isinstance(value, bool):  # epoch milliseconds
                    return datetime.fromtimestamp(value / 1000, UTC)
                if isinstance(value, str):
                    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
                    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, InvalidOperation, OverflowError, TypeError):
        pass
    raise CoercionError(f"{name}: cannot coerce a {type(value).__name__} value to {kind.value}")


def _text(value: FieldPyValue) -> str:
    if isinstance(value, bytes):
        raise ValueError("bytes")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
