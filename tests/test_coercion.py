"""Type coercion and transforms of field values (core, used by capture and mapping)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from sfsync.coercion import CoercionError, apply_transforms, coerce
from sfsync.config import FieldType, Transform


@pytest.mark.parametrize(("value", "kind", "expected"), [
    ("12", FieldType.INTEGER, 12), (12.0, FieldType.INTEGER, 12), ("1.50", FieldType.DECIMAL, Decimal("1.50")),
    ("true", FieldType.BOOLEAN, True), (0, FieldType.BOOLEAN, False), ("2024-02-29", FieldType.DATE, date(2024, 2, 29)),
    ("2024-02-29T10:00:00.000Z", FieldType.DATETIME, datetime(2024, 2, 29, 10, tzinfo=UTC)),
    (1700000000000, FieldType.DATETIME, datetime.fromtimestamp(1700000000, UTC)), (5, FieldType.STRING, "5"),
    (None, FieldType.INTEGER, None),
])
def test_coerce(value: Any, kind: FieldType, expected: Any) -> None:
    assert coerce(value, kind, "f") == expected


@pytest.mark.parametrize(("value", "kind"), [
    ("x", FieldType.INTEGER), (1.5, FieldType.INTEGER), ("maybe", FieldType.BOOLEAN), ("NaN", FieldType.DECIMAL),
    ("2024-13-01", FieldType.DATE), (b"\x00", FieldType.STRING), (True, FieldType.DECIMAL),
])
def test_coerce_rejects(value: Any, kind: FieldType) -> None:
    with pytest.raises(CoercionError, match=f"f: cannot coerce a {type(value).__name__} value to {kind.value}"):
        coerce(value, kind, "f")


def test_transforms_apply_in_order_to_strings_only() -> None:
    assert apply_transforms("  A@X.org ", [Transform.STRIP, Transform.LOWER]) == "a@x.org"
    assert apply_transforms("", [Transform.EMPTY_AS_NULL]) is None
    assert apply_transforms(5, [Transform.UPPER]) == 5
