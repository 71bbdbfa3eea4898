"""The processor's per-record state and the decision it drives. Pure functions, no I/O.

A record's entry in a processor Table is its last synced values and the id of
the change that set them. The agent loads it, asks :func:`next_output` what to
send for the change in hand, and stores what that returns — nothing else.

Contract of :func:`next_output`: values equal to the last synced ones are
dropped (an echo or a replay becomes a no-op), except when the change in hand
is the very change that produced the stored state (``event_id`` equal): faust
commits a source offset only after the outputs were acknowledged, so such a
redelivery may have lost its output in a crash and is sent in full.

Encoding: JSON of sfsync's typed value encoding (:func:`sfsync.records.encode_values`),
with bytes and datetimes tagged, so every ``FieldPyValue`` survives the changelog.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from processors.mapping import suppress_unchanged
from sfsync.records import ApplyCommand, FieldPyValue, decode_values, encode_values


@dataclass(frozen=True, slots=True)
class SyncedState:
    """What the processor knows of one record: its last synced values and the change that set them."""

    values: dict[str, FieldPyValue] = field(default_factory=dict)
    event_id: str | None = None


def dump_state(state: SyncedState) -> bytes:
    """The Table value for ``state``."""
    entry = {"v": encode_values(state.values), "e": state.event_id}
    return json.dumps(entry, default=_json_default, allow_nan=True).encode()


def load_state(raw: bytes | None) -> SyncedState | None:
    """The state a Table value holds; ``None`` for a record never seen."""
    if raw is None:
        return None
    entry = json.loads(raw, object_hook=_json_object_hook)
    return SyncedState(decode_values(entry["v"]), entry["e"])


def is_redelivery(state: SyncedState | None, event_id: str) -> bool:
    """True when ``event_id`` is the change that produced ``state`` (its output may be lost)."""
    return state is not None and state.event_id == event_id


def next_output(command: ApplyCommand, state: SyncedState | None, event_id: str) -> tuple[ApplyCommand | None,
                                                                                        SyncedState]:
    """(the command to send or ``None``, the state to store) for one mapped change."""
    sent, values = suppress_unchanged(command, state.values if state is not None else None,
                                      redelivered=is_redelivery(state, event_id))
    return sent, SyncedState(values, event_id)


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return {"__bytes__": base64.b64encode(o).decode()}
    if isinstance(o, datetime):
        return {"__datetime__": o.isoformat()}
    raise TypeError(type(o).__name__)


def _json_object_hook(d: dict[str, Any]) -> Any:
    if "__bytes__" in d and len(d) == 1:
        return base64.b64decode(d["__bytes__"])
    if "__datetime__" in d and len(d) == 1:
        return datetime.fromisoformat(d["__datetime__"])
    return d
