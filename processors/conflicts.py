"""One record, both directions: who wins each field, and what to write where. Pure, no I/O.

Every change of a record — from Salesforce (``changes.inbound``) or from PostgreSQL (``changes.outbound``) —
meets the record's one :class:`RecordState`. Per field the state holds the **winner** (the value both sides
should hold, in each side's representation; which side wrote it, its commit time, where the winning change
was read) and, per side, sfsync's newest write of the field to that side. :func:`decide` takes the state and
one change and returns the writes for each side and the new state.

**sfsync versions its own writes.** Every write of a field to a side carries a version strictly above every
earlier write of that field to that side (the change's source version when that is higher, else the last
one bumped by one), so the sinks' version guard (:mod:`consumers.versions`) lets the *last decided* write
win at the target whatever order writes land in — retries, replicas and replays included.

**Concurrency comes from each side's own ordered stream**, never from clocks. A change *saw* sfsync's newest
write of a field to its side when that write had landed before it:

- Salesforce: the write's CDC echo came before the change (both are in Salesforce's commit order);
  writes whose echo has not come are ``pending`` (a write that a later write's echo showed landed — writes
  of a record land in order unless one is retried — stays known, marked, until its own echo comes).
- PostgreSQL: the capture trigger records with each change the versions of sfsync's writes the row held
  (``seen``, read from the version store in the same statement, under the row lock).

A change is **concurrent** with the winner when the winner came from the other side and the change did not
see sfsync's newest write to its side. A change that is not concurrent is a plain newer edit and wins under
every policy but ``fill_empty`` (Salesforce is the master; a local value only fills a field empty in
Salesforce). A concurrent change is decided by the field's policy: ``salesforce_wins``, ``local_wins``,
``last_writer_wins`` (the later commit time, a tie goes to Salesforce: clocks of two systems are compared,
see docs/conflicts.md).

**Convergence.** A change that wins while a write of sfsync to its own side is still on its way is written
back to its side as well (after that write, by version). A change that loses gets the winner written back to
its side, unless sfsync's newest write there, still on its way, already carries it. Either write is a
*repair* (:attr:`Write.repair`).

**Echo by value.** An echo whose value sfsync sent confirms that write (an older one landing late gets the
winner re-sent if no newer write follows); any other value in an echo was set by Salesforce during
sfsync's write (a flow, a trigger, a default): a real change, which wins (it acted on sfsync's value) and
flows to PostgreSQL. Fields of an echo of a record the state knows nothing of are taken as confirmed.

**Redelivery** (a change at or below its side's stored position, replayed after a crash): nothing is decided
again and the state stays; for each of its fields, sfsync's newest write to either side is sent again with
its version when it carries the current winner (a sink skips a write it already has).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from processors.state import SourcePosition
from sfsync.config import ConflictPolicy
from sfsync.records import FieldPyValue

#: unconfirmed Salesforce writes remembered per field (a write that never echoes, e.g. dead-lettered, must
#: not keep the field "in flight" for ever)
MAX_PENDING = 8

Version = tuple[int, int]  # (commit time in µs, position): what the sinks' version guard compares


class Side(StrEnum):
    """Where a change was made, and where a value is written."""

    SALESFORCE = "salesforce"
    LOCAL = "local"

    @property
    def other(self) -> Side:
        return Side.LOCAL if self is Side.SALESFORCE else Side.SALESFORCE


@dataclass(frozen=True, slots=True)
class Values:
    """One field's value in both representations: as PostgreSQL holds it and as Salesforce holds it."""

    local: FieldPyValue
    remote: FieldPyValue

    def on(self, side: Side) -> FieldPyValue:
        return self.local if side is Side.LOCAL else self.remote


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one record, as the processor read it.

    ``fields`` maps Salesforce field names to the values the change set; ``version`` is the source's
    (commit time µs, outbox id / replay id); ``seen`` (local changes) the versions of sfsync's writes the
    row held when it changed; ``echo``: a Salesforce change made by sfsync's own write; ``force``: a force
    sync (``sfsync sync``): a field it carries that equals the winner is written to the other side anyway
    (that side may have been changed behind sfsync's back, without a change event).
    """

    side: Side
    ts: int
    version: Version
    position: SourcePosition
    fields: Mapping[str, Values]
    seen: Mapping[str, Version] = field(default_factory=dict)
    echo: bool = False
    force: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    """sfsync's newest write of one field to one side."""

    version: Version
    value: FieldPyValue


@dataclass(frozen=True, slots=True)
class FieldState:
    """The winner of one field; sfsync's newest write of it per side; its Salesforce writes not yet echoed
    (``pending``: the record's write number and the value, oldest first)."""

    value: Values
    side: Side
    ts: int
    position: SourcePosition | None
    sent: Mapping[Side, Sent] = field(default_factory=dict)
    pending: tuple[tuple[int, FieldPyValue], ...] = ()


@dataclass(frozen=True, slots=True)
class RecordState:
    """Per field its state; per side the newest position read (for redeliveries); how many writes sfsync
    sent to Salesforce for the record (numbering ``pending``)."""

    fields: Mapping[str, FieldState] = field(default_factory=dict)
    positions: Mapping[Side, SourcePosition] = field(default_factory=dict)
    writes: int = 0


@dataclass(frozen=True, slots=True)
class Loss:
    """A change that lost a field: both values, the policy and the time — no loss is silent."""

    field: str
    side: Side
    lost: FieldPyValue
    kept: FieldPyValue
    policy: ConflictPolicy
    ts: int


@dataclass(frozen=True, slots=True)
class Write:
    """Values to write to one side, with their version; ``repair``: it goes back to the side the change (or
    echo) came from."""

    values: dict[str, Values]
    version: Version
    repair: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """At most one write per side, the losses, and the new state (``None``: keep the stored one);
    ``resends``: a redelivery's earlier writes sent again, each with its own version."""

    writes: dict[Side, Write]
    losses: list[Loss]
    state: RecordState | None
    resends: list[tuple[Side, Write]] = field(default_factory=list)


def is_redelivery(state: RecordState | None, change: Change) -> bool:
    """True when ``change`` is at or below the newest position read from its side (same partition)."""
    if state is None:
        return False
    stored = state.positions.get(change.side)
    return stored is not None and stored.partition == change.position.partition \
        and change.position.offset <= stored.offset


def _empty(value: FieldPyValue) -> bool:
    return value is None or value == ""


def _same(a: FieldPyValue, b: FieldPyValue) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN == NaN for change detection
    return type(a) is type(b) and a == b


def _index(pending: tuple[tuple[int, FieldPyValue], ...], value: FieldPyValue) -> int | None:
    return next((i for i, (_n, v) in enumerate(pending) if _same(v, value)), None)


def _unconfirmed(pending: tuple[tuple[int, FieldPyValue], ...]) -> tuple[tuple[int, FieldPyValue], ...]:
    """The writes still on their way: a negative number marks a write a later write's echo showed landed
    (inferred, its own echo not seen yet: kept to recognise that echo when it comes late)."""
    return tuple(p for p in pending if p[0] >= 0)


def _inferred(pending: tuple[tuple[int, FieldPyValue], ...], landed: int) -> tuple[tuple[int, FieldPyValue], ...]:
    """``pending`` once write number ``landed`` is known to have landed: every write up to it is marked."""
    return tuple((-n if n > 0 else -1, v) if 0 <= n <= landed else (n, v) for n, v in pending)


def in_flight(current: FieldState, change: Change, name: str) -> bool:
    """Is a write of sfsync to ``change``'s side still on its way, to land after ``change``?"""
    if change.side is Side.SALESFORCE:
        return bool(_unconfirmed(current.pending))
    sent = current.sent.get(Side.LOCAL)
    if sent is None:
        return False
    seen = change.seen.get(name)
    return seen is None or tuple(seen) < sent.version


def wins(current: FieldState, change: Change, name: str, policy: ConflictPolicy) -> bool:
    """Does ``change``'s (different) value of ``name`` replace the winner ``current``?"""
    if policy is ConflictPolicy.FILL_EMPTY:
        return change.side is Side.SALESFORCE or _empty(current.value.remote)
    if current.side is change.side or not in_flight(current, change, name):
        return True  # a plain newer edit: it saw the winner
    if policy is ConflictPolicy.SALESFORCE_WINS:
        return change.side is Side.SALESFORCE
    if policy is ConflictPolicy.LOCAL_WINS:
        return change.side is Side.LOCAL
    if change.ts != current.ts:
        return change.ts > current.ts
    return change.side is Side.SALESFORCE


def _above(sent: Sent | None, version: Version) -> Version:
    """A write version above ``sent`` (``version`` itself when that is above already)."""
    if sent is None or version > sent.version:
        return version
    return sent.version[0], sent.version[1] + 1


class _Builder:
    """One decision's writes, and each field's state as it evolves."""

    def __init__(self, state: RecordState | None) -> None:
        self.fields: dict[str, FieldState] = dict(state.fields) if state is not None else {}
        self.numbered = state.writes if state is not None else 0
        self.writes: dict[Side, Write] = {}
        self.losses: list[Loss] = []
        self.versions: dict[Side, dict[str, Version]] = {}

    def send(self, side: Side, name: str, value: Values, version: Version, repair: bool) -> None:
        write = self.writes.get(side)
        if write is None:
            self.writes[side] = Write({name: value}, version, repair)
        else:
            write.values[name] = value
            self.writes[side] = replace(write, version=max(write.version, version), repair=write.repair or repair)

    def win(self, name: str, value: Values, change: Change, current: FieldState | None) -> None:
        self.fields[name] = FieldState(value, change.side, change.ts, change.position,
                                       current.sent if current is not None else {},
                                       current.pending if current is not None else ())
        self.send(change.side.other, name, value, change.version, repair=False)

    def finish(self) -> dict[Side, Write]:
        """Version each side's write above every earlier write of its fields, and record it as sent."""
        out: dict[Side, Write] = {}
        for side, write in self.writes.items():
            if side is Side.SALESFORCE:
                self.numbered += 1
            version = write.version
            for name in write.values:
                version = max(version, _above(self.fields[name].sent.get(side), write.version))
            for name, value in write.values.items():
                fs = self.fields[name]
                sent = {**fs.sent, side: Sent(version, value.on(side))}
                pending = (*fs.pending, (self.numbered, value.remote))[-MAX_PENDING:] if side is Side.SALESFORCE \
                    else fs.pending
                self.fields[name] = replace(fs, sent=sent, pending=pending)
            out[side] = replace(write, version=version)
        return out


def decide(state: RecordState | None, change: Change, policy: Callable[[str], ConflictPolicy],
           one_way: Callable[[str], bool] = lambda _name: False) -> Decision:
    """What ``change`` makes sfsync write, given the record's ``state`` (``None``: never seen).

    ``policy(field)`` is the field's conflict policy; ``one_way(field)`` is true for a field that flows
    only from ``change``'s side (its mapping direction): it always wins.
    """
    if is_redelivery(state, change):
        assert state is not None
        return _redeliver(state, change)
    b = _Builder(state)
    side = change.side
    known = state is not None and bool(state.fields)
    landed = 0  # an echo: the number of the newest write of sfsync it shows landed
    for name, value in change.fields.items():
        current = b.fields.get(name)
        mine = value.on(side)
        if change.echo and current is None and not known:
            # a record first seen through its echo (e.g. one sfsync created): taken as confirmed
            b.fields[name] = FieldState(value, side, change.ts, change.position)
            continue
        if change.echo and current is not None:
            at = _index(current.pending, mine)
            if at is not None:  # one of sfsync's writes landed
                landed = max(landed, abs(current.pending[at][0]))
                rest = current.pending[at + 1:]
                b.fields[name] = current = replace(current, pending=rest)
                if not _same(mine, current.value.remote) and _index(_unconfirmed(rest), current.value.remote) is None:
                    b.send(side, name, current.value, change.version, repair=True)  # a late older write
                continue
            if _same(mine, current.value.remote):
                continue  # the winner, though no write of it is pending: nothing new
            # a value sfsync did not send: Salesforce set it during sfsync's write; that write has landed
            first = next((i for i, (n, _v) in enumerate(current.pending) if n >= 0), None)
            if first is not None:
                landed = max(landed, current.pending[first][0])
                pending = current.pending[:first] + current.pending[first + 1:]
                b.fields[name] = current = replace(current, pending=pending)
            b.win(name, value, change, current)
            continue
        if current is None or one_way(name):
            b.win(name, value, change, current)
            continue
        if _same(mine, current.value.on(side)):
            if change.force:  # the other side may differ without sfsync knowing: write the winner there
                b.send(side.other, name, current.value, change.version, repair=False)
            continue  # the side holds the winner already
        if wins(current, change, name, policy(name)):
            b.win(name, value, change, current)
            if in_flight(current, change, name):  # sfsync's older write to this side lands after it
                b.send(side, name, value, change.version, repair=True)
            continue
        b.losses.append(Loss(name, side, mine, current.value.on(side), policy(name), change.ts))
        newest = current.sent.get(side)
        carried = newest is not None and _same(newest.value, current.value.on(side))
        if not (in_flight(current, change, name) and carried):
            b.send(side, name, current.value, change.version, repair=True)
    if landed:
        # An echo lists changed fields only: a field sfsync wrote without changing it is not in it. The
        # echo showed write number ``landed`` arrived; that write and every earlier one landed for every
        # field (writes of a record land in order) — or one of them fails and is retried, landing later: its
        # echo must still be known as sfsync's (a retry reorders writes), so they are marked, not forgotten.
        # An echo that matches no pending value says nothing.
        for name, current in list(b.fields.items()):
            if name not in change.fields and current.pending:
                b.fields[name] = replace(current, pending=_inferred(current.pending, landed))
    writes = b.finish()
    positions = {**(state.positions if state is not None else {}), side: change.position}
    return Decision(writes, b.losses, RecordState(b.fields, positions, b.numbered))


def _redeliver(state: RecordState, change: Change) -> Decision:
    """Resend what ``change`` may have decided when it was first read (module docstring).

    Per field of the change, sfsync's newest write to each side is sent again when it carries the current
    winner: the sink skips it if it landed and writes it if the crash lost it. Each goes out with **its own
    version**, one write per side and version: bundled under the highest version of the bundle, an older
    field's value would pass the sink's guard as newer than what it wrote, and overwrite a change made on
    that side since (seed 2028258776 of the kill test: a replayed echo put Name back over a user's newer
    Name in Salesforce). The state does not change. A newest write that no longer carries the winner was
    superseded."""
    groups: dict[tuple[Side, Version], dict[str, Values]] = {}
    for name in change.fields:
        current = state.fields.get(name)
        if current is None:
            continue
        for to in (change.side.other, change.side):
            sent = current.sent.get(to)
            if sent is not None and _same(sent.value, current.value.on(to)):
                groups.setdefault((to, sent.version), {})[name] = current.value
    resends = [(to, Write(values, version, repair=to is change.side))
               for (to, version), values in sorted(groups.items())]
    return Decision({}, [], None, resends)
