"""The processor's Table entry (:mod:`processors.entry`): every field value and every part of the conflict
state survives the changelog (pure, no broker)."""

from __future__ import annotations

from typing import Any

from field_value_strategies import field_values, same_value
from hypothesis import given
from hypothesis import strategies as st

from processors.conflicts import FieldState, RecordState, Sent, Side, Values
from processors.entry import Entry, EntryCache, dump_entry, load_entry
from processors.state import SourcePosition

positions = st.builds(SourcePosition, st.integers(0, 10_000), st.integers(0, 2**63 - 1))
versions = st.tuples(st.integers(-(2**62), 2**62), st.integers(-1, 2**62))
field_states = st.builds(
    FieldState, st.builds(Values, field_values, field_values), st.sampled_from(list(Side)),
    st.integers(0, 2**62), positions | st.none(),
    st.dictionaries(st.sampled_from(list(Side)), st.builds(Sent, versions, field_values)),
    st.lists(st.tuples(st.integers(0, 2**40), field_values), max_size=3).map(tuple))
entries = st.builds(Entry, st.builds(RecordState, st.dictionaries(st.text(min_size=1, max_size=8), field_states,
                                                                  max_size=4),
                                     st.dictionaries(st.sampled_from(list(Side)), positions), st.integers(0, 2**40)),
                    st.text(min_size=1, max_size=18) | st.none(), st.text(min_size=1, max_size=8) | st.none())


def same_field(a: FieldState, b: FieldState) -> bool:
    return (same_value(a.value.local, b.value.local) and same_value(a.value.remote, b.value.remote)
            and (a.side, a.ts, a.position) == (b.side, b.ts, b.position)
            and a.sent.keys() == b.sent.keys()
            and all(a.sent[s].version == b.sent[s].version and same_value(a.sent[s].value, b.sent[s].value)
                    for s in a.sent)
            and len(a.pending) == len(b.pending)
            and all(x[0] == y[0] and same_value(x[1], y[1]) for x, y in zip(a.pending, b.pending, strict=True)))


@given(entries)
def test_an_entry_round_trips(entry: Entry) -> None:
    back = load_entry(dump_entry(entry))
    assert back is not None
    assert (back.sfid, back.local_key, dict(back.record.positions), back.record.writes) == (
        entry.sfid, entry.local_key, dict(entry.record.positions), entry.record.writes)
    assert back.record.fields.keys() == entry.record.fields.keys()
    assert all(same_field(back.record.fields[k], v) for k, v in entry.record.fields.items())


def test_a_record_never_seen_and_an_entry_of_the_old_tables_have_no_entry() -> None:
    old: Any = b'{"v": {"Title": {"value": "A", "logical": null}}, "e": "e1", "p": [0, 4]}'
    assert load_entry(None) is None and load_entry(old) is None


def test_the_entry_cache_answers_only_for_the_bytes_it_was_given() -> None:
    """The worker keeps the entries it wrote decoded (:class:`EntryCache`); it may answer only when the Table
    still holds exactly those bytes, else the caller loads them (a value recovered or written elsewhere)."""
    first = Entry(RecordState({}, {Side.LOCAL: SourcePosition(0, 1)}, 1), "003A", "7")
    second = Entry(RecordState({}, {Side.LOCAL: SourcePosition(0, 2)}, 2), "003A", "7")
    cache = EntryCache(size=2)
    raw = dump_entry(first)
    cache.put(b"k", raw, first)
    assert cache.get(b"k", bytes(bytearray(raw))) is first  # equal bytes (a RocksDB read is a new object)
    assert cache.get(b"k", dump_entry(second)) is None and cache.get(b"k", None) is None
    assert cache.get(b"other", raw) is None
    cache.put(b"k", dump_entry(second), second)
    assert cache.get(b"k", raw) is None and cache.get(b"k", dump_entry(second)) is second
    cache.put(b"a", raw, first)
    cache.put(b"b", raw, first)  # over the size: the oldest written goes
    assert len(cache) == 2 and cache.get(b"k", dump_entry(second)) is None
    cache.clear()
    assert len(cache) == 0
