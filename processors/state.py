"""The processor's per-record state and the decision it drives. Pure functions, no I/O.

A record's entry in a processor Table is its last synced values, the id of the change that set them and
that change's source position (partition and offset in the change topic the table belongs to). The agent
loads it, asks :func:`next_output` what to send for the change in hand, and, once the send was accepted,
stores the state that returns — nothing else.

Contract of :func:`next_output`:

- A **redelivery** — a change at or below the stored position (same partition) — is sent in full, with
  the values of the change, and the stored state stays as it is. faust commits a source offset only after
  the outputs were delivered, so a worker that crashed may have stored the state of several changes whose
  outputs were lost; each of them comes again, at or below the position of the newest, and must not be
  suppressed by state it produced itself. The state never moves back to an older change.
- Any other change: values equal to the last synced ones are dropped (an echo becomes a no-op). What is
  left is sent and becomes the state, with this change's id and position; nothing left: nothing is sent
  and nothing stored.

Entries written before positions were stored (no ``"p"``) load with ``position=None``: for them only the
change that set them counts as a redelivery (the old rule), until their next change stores a position.

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


@dataclass(frozen=True, slots=True, order=True)
class SourcePosition:
    """Where a change was read: partition and offset in the one change topic a table serves."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class SyncedState:
    """What the processor knows of one record: its last synced values, and the id and source position of
    the newest change that set them (``position`` is ``None`` in entries written before it was stored)."""

    values: dict[str, FieldPyValue] = field(default_factory=dict)
    event_id: str | None = None
    position: SourcePosition | None = None


def dump_state(state: SyncedState) -> bytes:
    """The Table value for ``state``."""
    position = None if state.position is None else [state.position.partition, state.position.offset]
    entry = {"v": encode_values(state.values), "e": state.event_id, "p": position}
    return json.dumps(entry, default=_json_default, allow_nan=True).encode()


def load_state(raw: bytes | None) -> SyncedState | None:
    """The state a Table value holds (old entries without a position too); ``None`` for a record never seen."""
    if raw is None:
        return None
    entry = json.loads(raw, object_hook=_json_object_hook)
    position = entry.get("p")
    return SyncedState(decode_values(entry["v"]), entry["e"],
                       None if position is None else SourcePosition(int(position[0]), int(position[1])))


def is_redelivery(state: SyncedState | None, event_id: str, position: SourcePosition) -> bool:
    """True when the change at ``position`` was processed before and its output may be lost: it is at or
    below the stored position (same partition); for an entry without a position, it is the change that set
    the entry (``event_id``)."""
    if state is None:
        return False
    if state.position is not None and state.position.partition == position.partition:
        return position.offset <= state.position.offset
    return state.event_id == event_id


def next_output(command: ApplyCommand, state: SyncedState | None, event_id: str,
                position: SourcePosition) -> tuple[ApplyCommand | None, SyncedState | None]:
    """(the command to send or ``None``, the state to store once it was sent or ``None`` to keep the stored
    one) for one mapped change read at ``position`` (see the module docstring)."""
    if is_redelivery(state, event_id, position):
        return command, None
    sent, values = suppress_unchanged(command, state.values if state is not None else None)
    if sent is None:
        return None, None
    return sent, SyncedState(values, event_id, position)


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
