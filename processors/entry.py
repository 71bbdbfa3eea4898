"""The processor Table's entry of one record: its :class:`~processors.conflicts.RecordState` and its ids.

One entry per record key, shared by both directions (``records`` table). The ids are the record's sfid and
local key as last seen in any change, so every command sfsync sends carries both (the sinks' version guards
key on them). Encoding: JSON of sfsync's typed value encoding (:func:`sfsync.records.encode_values`),
bytes and datetimes tagged as in :mod:`processors.state`, so every field value survives the changelog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from processors.conflicts import FieldState, RecordState, Sent, Side, Values
from processors.state import SourcePosition, json_default, json_object_hook
from sfsync.records import FieldPyValue, decode_values, encode_values


@dataclass(frozen=True, slots=True)
class Entry:
    """What the processor keeps of one record."""

    record: RecordState = field(default_factory=RecordState)
    sfid: str | None = None
    local_key: str | None = None


def _pos(p: SourcePosition | None) -> list[int] | None:
    return None if p is None else [p.partition, p.offset]


def _unpos(raw: Any) -> SourcePosition | None:
    return None if raw is None else SourcePosition(int(raw[0]), int(raw[1]))


def _values(values: dict[str, FieldPyValue]) -> Any:
    return encode_values(values)


def dump_entry(entry: Entry) -> bytes:
    """The Table value for ``entry``."""
    fields: dict[str, Any] = {}
    for name, fs in entry.record.fields.items():
        fields[name] = {
            "v": _values({"l": fs.value.local, "r": fs.value.remote}),
            "s": fs.side.value, "t": fs.ts, "p": _pos(fs.position),
            "sent": {side.value: [list(sent.version), _values({"v": sent.value})] for side, sent in fs.sent.items()},
            "pend": _values({str(i): v for i, (_n, v) in enumerate(fs.pending)}),
            "pn": [n for n, _v in fs.pending],
        }
    doc = {"f": fields, "pos": {side.value: _pos(p) for side, p in entry.record.positions.items()},
           "w": entry.record.writes, "sfid": entry.sfid, "lk": entry.local_key}
    return json.dumps(doc, default=json_default, allow_nan=True).encode()


def load_entry(raw: bytes | None) -> Entry | None:
    """The entry a Table value holds; ``None`` for a record never seen (or an entry of the old per-direction
    tables, which held no conflict state: the record starts afresh)."""
    if raw is None:
        return None
    doc = json.loads(raw, object_hook=json_object_hook)
    if not isinstance(doc, dict) or "f" not in doc:
        return None
    fields: dict[str, FieldState] = {}
    for name, f in doc["f"].items():
        v = decode_values(f["v"])
        pend = decode_values(f["pend"])
        sent = {Side(side): Sent((int(s[0][0]), int(s[0][1])), decode_values(s[1])["v"])
                for side, s in f["sent"].items()}
        numbers = f.get("pn") or [0] * len(pend)
        fields[name] = FieldState(Values(v["l"], v["r"]), Side(f["s"]), int(f["t"]), _unpos(f["p"]), sent,
                                  tuple((int(numbers[i]), pend[str(i)]) for i in range(len(pend))))
    positions = {Side(side): p for side, raw_p in doc["pos"].items() if (p := _unpos(raw_p)) is not None}
    return Entry(RecordState(fields, positions, int(doc.get("w") or 0)), doc.get("sfid"), doc.get("lk"))


class EntryCache:
    """The entries the worker wrote last, kept decoded next to the Table's bytes, so the next change of a
    record skips :func:`load_entry` (JSON with an object hook per dict: ~8 % of the processor's CPU in
    ``bench/inbound.py``).

    Contract: :meth:`get` returns an entry only when the Table's value for the key is byte for byte the value
    it was :meth:`put` with, so what it returns is the entry those bytes were dumped from (entries are
    immutable): the same decision input as loading them (:func:`load_entry` of :func:`dump_entry` gives the
    entry back, tests/processors/test_state.py). Anything else (a value recovered from the changelog after a
    rebalance, written by another worker meanwhile) is loaded from its bytes. Equality, not identity: a
    RocksDB store returns a new bytes object on every read. At most ``size`` records are kept (the oldest
    written first out), so memory stays bounded whatever the Table holds: an entry of a three-field record
    takes about 3.3 KB decoded, so the default 20,000 cost up to ~65 MB (bench/outbound.py's peak RSS of
    the processor includes them)."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._entries: dict[bytes, tuple[bytes, Entry]] = {}

    def get(self, key: bytes, raw: bytes | None) -> Entry | None:
        """The entry ``raw`` (the Table's value for ``key``) holds, when it is the one last put; else ``None``."""
        if raw is None:
            return None
        found = self._entries.get(key)
        return found[1] if found is not None and found[0] == raw else None

    def put(self, key: bytes, raw: bytes, entry: Entry) -> None:
        """``raw`` (``dump_entry(entry)``) is now the Table's value for ``key``."""
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (raw, entry)
        if len(entries) > self.size:
            del entries[next(iter(entries))]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
