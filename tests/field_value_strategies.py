"""Shared by the record and serde tests: every kind of field value, and how to compare them.

On the test path through ``pythonpath = ["tests"]`` in pyproject.toml (pytest's own setting).
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from sfsync.records import INT64_MAX, INT64_MIN

#: Whole-second UTC offsets (what Python 3.11 can parse back from ISO text).
fixed_zones = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)).map(
    lambda d: timezone(timedelta(seconds=int(d.total_seconds())))
)

#: null, booleans, ints (incl. beyond int64), doubles (NaN, inf, -0.0, extremes), unicode incl. astral and NUL,
#: bytes, decimals, dates, aware datetimes, naive and aware times.
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 5e-324, 1.7976931348623157e308]),
    st.text(),
    st.text(st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF) | st.just("\x00")),
    st.binary(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.dates(),
    st.datetimes(timezones=fixed_zones),
    st.times(),
    st.times(timezones=fixed_zones),
)


def same_value(a: Any, b: Any) -> bool:
    """Equal value *and* type; NaN equals NaN; -0.0 keeps its sign; Decimal/time/datetime exact text."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, datetime | time):
        return a == b and a.isoformat() == b.isoformat()
    return bool(a == b)
