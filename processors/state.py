"""Small pieces of the processor's record state shared by its modules. Pure, no I/O.

:class:`SourcePosition` says where a change was read; the Table entry itself (a record's conflict state and
ids) is :mod:`processors.entry`, the decision over it :mod:`processors.conflicts`.

JSON tagging of the values the entry stores that JSON has no type for: bytes and datetimes, so every
``FieldPyValue`` survives the changelog (:func:`json_default`, :func:`json_object_hook`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True, order=True)
class SourcePosition:
    """Where a change was read: partition and offset in its change topic."""

    partition: int
    offset: int


def json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return {"__bytes__": base64.b64encode(o).decode()}
    if isinstance(o, datetime):
        return {"__datetime__": o.isoformat()}
    raise TypeError(type(o).__name__)


def json_object_hook(d: dict[str, Any]) -> Any:
    if "__bytes__" in d and len(d) == 1:
        return base64.b64decode(d["__bytes__"])
    if "__datetime__" in d and len(d) == 1:
        return datetime.fromisoformat(d["__datetime__"])
    return d
