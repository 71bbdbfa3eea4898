"""Convergence of one record under every conflict and delete policy: a state machine of both sides.

Issue 11's invariant: once both sides stop changing, every ``both`` field holds the same value on both
sides and it is the policy's winner; no flip-flop; no resurrected delete.

What is under test is the processor's whole pure path, exactly where each decision is made:

- :func:`processors.mapping.map_inbound` / :func:`~processors.mapping.map_outbound`: the ``delete_policy``
  (``ignore``: the delete is skipped; ``unlink`` from PostgreSQL: the Salesforce record's external id is
  cleared; ``propagate``: a delete command), and what an echo keeps;
- :func:`processors.commands.next_step`: per field the conflict decision (:func:`processors.conflicts.decide`),
  a delete (versioned after sfsync's writes, a tombstone in the record's state), an undelete (every field
  wins), redeliveries;
- :func:`consumers.versions.screen` / :func:`~consumers.versions.advance`: the sinks' version guard, one store
  per sink, as the real sinks keep it (inbound keyed by sfid, outbound by local key), deletes included.

Around it, a model of what the adapters do, from their contracts: the PostgreSQL sink (an upsert updates
the row with the command's local key when it is unlinked or holds that sfid, else the row with that sfid,
else inserts one; a delete deletes, unlinks or is ignored by the policy; none of its writes is captured),
the Salesforce sink (a linked record is written by Id: a record in the recycle bin refuses it,
``ENTITY_IS_DELETED``, a permanent failure; a delete moves it to the bin, a second one is a success; each
write that lands comes back as a CDC event with sfsync's origin, listing the fields it changed), the capture
trigger (each local change carries the sink's field versions the row held, ``seen_versions``) and the
processor's store (entries by record key, as the agent keys them).

The network: the processor reads each side's change stream in order (one partition each) but interleaves
the two at random, may crash after storing an entry and before its commands went out (the change comes
again), and may read an earlier change again; commands wait in a queue per sink and land in any order,
some twice. Users on either side create, edit the same or different fields, delete, and (in Salesforce)
undelete, at any moment, with a clock skew between the two systems.

After quiescence (every change read, every command landed) :meth:`Convergence.teardown` checks the
invariant for the drawn ``conflict_policy`` x ``delete_policy``, and no flip-flop: every write sfsync
decided once it had read the users' last changes, and that landed, carries the value the side ends with.

Not modelled (:data:`GAPS`, each outside the pure logic): records created locally, whose state moves from
the ``local:<pk>`` key to the sfid key over the links topic (processors/identity.py: the move itself is the
agent's, tested end to end in tests/e2e/test_identity.py; every record here is created in Salesforce);
edits of a row unlinked by ``unlink``; under ``ignore``, Salesforce changes that reach a row deleted locally,
or local edits while Salesforce's record is deleted (dead-lettered writes); more than about ``MAX_PENDING``
writes to Salesforce on their way at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from consumers.versions import advance, record_id, screen
from processors.commands import next_step
from processors.conflicts import MAX_PENDING, Change, Side, Values, decide
from processors.entry import Entry
from processors.mapping import Mapped, Skipped, map_inbound, map_outbound
from processors.state import SourcePosition
from sfsync.config import ConflictPolicy, DeletePolicy, SfsyncConfig, build_config
from sfsync.records import (
    ApplyCommand,
    ApplyOperation,
    ApplyTarget,
    ChangeEvent,
    Direction,
    Operation,
    Source,
)

OBJECT, TABLE, SFID, EXT = "Contact", "contacts", "003000000000001AAA", "Local_Id__c"
COLUMN = {"FirstName": "first_name", "Title": "title"}  # Salesforce field -> column, both `both`
FIELDS = tuple(COLUMN)
CLIENT = "sfsync"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SF, LOCAL = Side.SALESFORCE, Side.LOCAL
Version = tuple[int, int]

#: user edits per example: each may make a write to Salesforce (a repair included) whose echo is pending, and
#: a write lost in a crash stays pending until its change is read again; beyond MAX_PENDING an older write's
#: echo is taken for a new value (the documented bound)
EDITS = MAX_PENDING - 2

#: what the rules leave out (preconditions), because the pure logic does not decide it
GAPS = {
    "unlinked row edited": "under unlink a Salesforce delete unlinks the row; an edit of it is an edit of an "
                           "unlinked record (key local:<pk>): map_outbound upserts it by external id, which "
                           "creates a second Salesforce record while the first is in the recycle bin",
    "ignore, then a Salesforce change": "under ignore map_outbound skips a local delete, so the processor "
                                        "never learns of it; a Salesforce change of the record read later (or "
                                        "already on its way) is upserted, and the PostgreSQL sink inserts the "
                                        "deleted row again holding only the changed columns",
    "ignore, then a local edit": "under ignore the processor never learns of a Salesforce delete either; local "
                                 "edits meanwhile are refused by Salesforce (ENTITY_IS_DELETED, dead-lettered): "
                                 "no echo comes, and an echo after the undelete is judged without them "
                                 "(the documented limit of writes that never echo)",
    "unlink, a row written again": "not excluded, not asserted: under unlink a write of sfsync on its way when "
                                   "the user deleted the row inserts it again; the delete sfsync sends after it "
                                   "is applied by the PostgreSQL sink as an unlink, so the row stays, unlinked "
                                   "(with only the columns that write carried); the sink would need a delete "
                                   "that ignores the policy",
    "many writes on their way": "more than MAX_PENDING writes to Salesforce not echoed yet (EDITS): an older "
                                "one's echo is taken for a new value (the documented bound)",
}


@cache
def config(conflict: ConflictPolicy, delete: DeletePolicy) -> SfsyncConfig:
    return build_config({
        "salesforce": {"auth": {"username": "u", "password": "p"}, "call_options_client": CLIENT},
        "objects": {OBJECT: {"table": TABLE, "conflict_policy": conflict.value, "delete_policy": delete.value,
                             "fields": [{"column": c, "field": f} for f, c in COLUMN.items()]}},
    })


def at(ts: int) -> datetime:
    return EPOCH + timedelta(microseconds=ts)


@dataclass
class SfRecord:
    values: dict[str, Any]                    # Salesforce field -> value, the external id among them
    deleted: bool = False


@dataclass
class Row:
    sfid: str | None
    values: dict[str, Any]                    # column -> value


@dataclass
class Stream:
    """One side's change topic (one partition) and how far the processor read it."""

    events: list[ChangeEvent] = field(default_factory=list)
    read: int = 0


@dataclass
class Sink:
    queue: list[ApplyCommand] = field(default_factory=list)
    versions: dict[Any, dict[str, Version]] = field(default_factory=dict)   # consumers.versions, per record
    dead: list[tuple[ApplyCommand, str]] = field(default_factory=list)


class Convergence(RuleBasedStateMachine):
    """Both sides of one Salesforce-created record, the processor's pure path and both sinks (module doc)."""

    @initialize(conflict=st.sampled_from(list(ConflictPolicy)), delete=st.sampled_from(list(DeletePolicy)),
                skew=st.integers(-3, 3), first=st.text("ab", min_size=1, max_size=1))
    def create_in_salesforce(self, conflict: ConflictPolicy, delete: DeletePolicy, skew: int, first: str) -> None:
        self.cfg = config(conflict, delete)
        self.conflict, self.delete = conflict, delete
        self.skew = {SF: 0, LOCAL: skew}
        self.time = 1000
        self.counter = 0
        self.sf: dict[str, SfRecord] = {}
        self.rows: dict[str, Row] = {}        # pk -> row
        self.unlinked: dict[str, str] = {}    # the PostgreSQL sink's unlinked table: sfid -> pk
        self.next_pk = 1
        self.streams = {SF: Stream(), LOCAL: Stream()}
        self.sinks = {SF: Sink(), LOCAL: Sink()}
        self.entries: dict[str, Entry] = {}   # the processor's records table, by record key
        #: per side, the user's existence actions on the record in order: "create", "delete", "undelete"
        self.history: list[tuple[Side, str]] = [(SF, "create")]
        self.edited = False  # a user edit since the last of them
        self.edits = 0
        #: no flip-flop: per stream the index of the users' last change; the commands decided once the
        #: processor had read every user change (``late``), and what of them landed
        self.last_user = {SF: -1, LOCAL: -1}
        self.late: list[ApplyCommand] = []
        self.landed: list[tuple[Side, str, Any]] = []
        values = {"FirstName": first + self._fresh(), "Title": self._fresh(), EXT: None}
        self.sf[SFID] = SfRecord(values)
        self._cdc(Operation.CREATE, {k: v for k, v in values.items() if v is not None}, own=False)

    # ------------------------------------------------------------------------------------- the sides

    def _fresh(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def _tick(self, side: Side) -> int:
        self.time += 1
        return self.time + self.skew[side]

    def _cdc(self, operation: Operation, values: dict[str, Any], own: bool) -> None:
        """A Salesforce change (a user's, or sfsync's write coming back with its ``changeOrigin``)."""
        s = self.streams[SF]
        replay = len(s.events) + 1
        ext = self.sf[SFID].values.get(EXT)
        changed = sorted(values) if operation is not Operation.DELETE else []
        s.events.append(ChangeEvent(
            source=Source.SALESFORCE, object=OBJECT, entity=OBJECT, operation=operation, commit_ts=at(self._tick(SF)),
            source_position=str(replay), sfid=SFID, local_key=None if ext in (None, "") else str(ext),
            changed_fields=changed, values=dict(values) if operation is not Operation.DELETE else {},
            origin=CLIENT if own else None, event_id=f"sf-{replay}"))
        if not own:
            self._user_changed(SF)

    def _outbox(self, operation: Operation, pk: str, row: Row, changed: list[str]) -> None:
        """A local change as the capture trigger writes it: the full row, the changed columns, and the
        versions of sfsync's writes the row held (read under the row lock)."""
        s = self.streams[LOCAL]
        outbox_id = len(s.events) + 1
        held = self.sinks[LOCAL].versions.get((OBJECT, row.sfid), {}) if row.sfid else {}
        seen = {c: f"{v[0]}:{v[1]}" for c, v in held.items() if c in COLUMN.values()}
        s.events.append(ChangeEvent(
            source=Source.POSTGRES, object=OBJECT, entity=TABLE, operation=operation,
            commit_ts=at(self._tick(LOCAL)), source_position=str(outbox_id), sfid=row.sfid, local_key=pk,
            changed_fields=changed, values={"sfid": row.sfid, **row.values}, seen_versions=seen,
            event_id=f"pg-{outbox_id}"))
        self._user_changed(LOCAL)

    def _user_changed(self, side: Side) -> None:
        self.last_user[side] = len(self.streams[side].events) - 1
        self.late.clear()
        self.landed.clear()

    def _live(self) -> SfRecord | None:
        rec = self.sf.get(SFID)
        return rec if rec is not None and not rec.deleted else None

    def _linked_row(self) -> tuple[str, Row] | None:
        return next(((pk, r) for pk, r in self.rows.items() if r.sfid == SFID), None)

    @precondition(lambda self: self._live() is not None and self.edits < EDITS
                  and not (self.delete is DeletePolicy.IGNORE and self._locally_deleted()))
    @rule(names=st.sets(st.sampled_from(FIELDS), min_size=1), same=st.booleans(), empty=st.booleans())
    def salesforce_user_edits(self, names: set[str], same: bool, empty: bool) -> None:
        """``same``: Title set to the value it has (with another field: not in the change); ``empty``: Title
        emptied (what ``fill_empty`` lets a local value fill)."""
        rec = self._live()
        assert rec is not None
        values = {n: (rec.values[n] if same and n == "Title" and len(names) > 1 else
                      "" if empty and n == "Title" else self._fresh()) for n in sorted(names)}
        changed = {n: v for n, v in values.items() if rec.values.get(n) != v}
        rec.values.update(changed)
        self.edited, self.edits = True, self.edits + 1
        self._cdc(Operation.UPDATE, changed, own=False)

    @precondition(lambda self: self._linked_row() is not None and self.edits < EDITS
                  and not (self.delete is DeletePolicy.IGNORE and self.sf[SFID].deleted))
    @rule(names=st.sets(st.sampled_from(FIELDS), min_size=1))
    def local_user_edits(self, names: set[str]) -> None:
        """Edits of the linked row (an unlinked row is another record: see GAPS)."""
        found = self._linked_row()
        assert found is not None
        pk, row = found
        for n in names:
            row.values[COLUMN[n]] = self._fresh()
        self.edited, self.edits = True, self.edits + 1
        self._outbox(Operation.UPDATE, pk, row, sorted(COLUMN[n] for n in names))

    @precondition(lambda self: self._live() is not None)
    @rule()
    def salesforce_user_deletes(self) -> None:
        rec = self._live()
        assert rec is not None
        rec.deleted = True
        self.history.append((SF, "delete"))
        self.edited = False
        self._cdc(Operation.DELETE, {}, own=False)

    @precondition(lambda self: SFID in self.sf and self.sf[SFID].deleted)
    @rule()
    def salesforce_user_undeletes(self) -> None:
        rec = self.sf[SFID]
        rec.deleted = False
        self.history.append((SF, "undelete"))
        self.edited = False
        self._cdc(Operation.UNDELETE, {k: v for k, v in rec.values.items() if v is not None}, own=False)

    def _locally_deleted(self) -> bool:
        """Was the local row deleted by its user and not brought back by an undelete since?"""
        for side, what in reversed(self.history):
            if side is LOCAL and what == "delete":
                return True
            if what == "undelete":
                return False
        return False

    @precondition(lambda self: self._linked_row() is not None and not (
        self.delete is DeletePolicy.IGNORE and (self._unread() or self.sinks[LOCAL].queue)))
    @rule()
    def local_user_deletes(self) -> None:
        found = self._linked_row()
        assert found is not None
        pk, row = found
        del self.rows[pk]
        self.history.append((LOCAL, "delete"))
        self.edited = False
        self._outbox(Operation.DELETE, pk, row, [])

    # ------------------------------------------------------------------------------------- the processor

    def _process(self, side: Side, index: int, crash: bool) -> None:
        """The agent's path for one event (processors/app.py ``decide``), over the pure functions."""
        event = self.streams[side].events[index]
        result = map_inbound(event, self.cfg, keep_echo=True) if side is SF else map_outbound(event, self.cfg)
        if isinstance(result, Skipped):
            return
        assert isinstance(result, Mapped), result
        key = event.key
        step = next_step(self.entries.get(key), event, result.command, side, result.echo,
                         SourcePosition(0, index), self.cfg)
        if step.entry is not None:
            self.entries[key] = step.entry  # the changelog is written with the commands ...
        if crash:
            return  # ... and the commands are lost: the offset was not committed, the change comes again
        read = {x: max(s.read, index + 1) if x is side else s.read for x, s in self.streams.items()}
        late = all(read[x] > self.last_user[x] for x in (SF, LOCAL))
        for command, _repair in step.commands:
            self.sinks[SF if command.target is ApplyTarget.SALESFORCE else LOCAL].queue.append(command)
            if late:
                self.late.append(command)

    def _unread(self) -> list[Side]:
        return [x for x, s in self.streams.items() if s.read < len(s.events)]

    @precondition(lambda self: bool(self._unread()))
    @rule(data=st.data(), crash=st.integers(0, 5))
    def processor_reads(self, data: st.DataObject, crash: int) -> None:
        side = data.draw(st.sampled_from(self._unread()))
        s = self.streams[side]
        self._process(side, s.read, crash == 0)
        if crash:
            s.read += 1

    @precondition(lambda self: any(s.read for s in self.streams.values()))
    @rule(data=st.data())
    def processor_reads_a_change_again(self, data: st.DataObject) -> None:
        side = data.draw(st.sampled_from([x for x, s in self.streams.items() if s.read]))
        self._process(side, data.draw(st.integers(0, self.streams[side].read - 1)), False)

    # ------------------------------------------------------------------------------------- the sinks

    def _screened(self, side: Side, command: ApplyCommand) -> tuple[Any, ApplyCommand | None]:
        rid = record_id(command, Direction.INBOUND if side is LOCAL else Direction.OUTBOUND)
        if rid is None:
            return None, command
        return rid, screen(command, self.sinks[side].versions.get(rid, {}))

    def _written(self, side: Side, rid: Any, command: ApplyCommand) -> None:
        if rid is not None:
            self.sinks[side].versions[rid] = advance(self.sinks[side].versions.get(rid, {}), command)

    def _apply_local(self, command: ApplyCommand) -> None:
        """The PostgreSQL sink (its contract: consumers/postgres/sink.py, plan.py, statements.py: update by local
        key, else relink the row the sfid was unlinked from, else insert on sfid). Not captured."""
        rid, kept = self._screened(LOCAL, command)
        if kept is None:
            return
        if kept.operation is ApplyOperation.DELETE:
            if not kept.sfid:
                self.sinks[LOCAL].dead.append((kept, "delete without Salesforce id"))
                return
            for pk, row in list(self.rows.items()):
                if row.sfid == kept.sfid:
                    if self.delete is DeletePolicy.PROPAGATE:
                        del self.rows[pk]
                    elif self.delete is DeletePolicy.UNLINK:
                        row.sfid = None
                        self.unlinked[kept.sfid] = pk  # the sink remembers which row held the sfid
            self._written(LOCAL, rid, kept)  # a success, also when no row was left: its version is kept
            return
        target = None
        if kept.local_key is not None and kept.local_key in self.rows:
            row = self.rows[kept.local_key]
            if row.sfid is None or row.sfid == kept.sfid:
                target = kept.local_key
        if target is None:
            target = next((pk for pk, r in self.rows.items() if r.sfid == kept.sfid), None)
        if target is None and kept.sfid in self.unlinked:  # relink_unlinked: the row the sfid was unlinked from
            pk = self.unlinked.pop(kept.sfid)
            target = pk if pk in self.rows and self.rows[pk].sfid is None else None
        if target is None:
            target = str(self.next_pk)
            self.next_pk += 1
            self.rows[target] = Row(kept.sfid, dict.fromkeys(COLUMN.values()))
        row = self.rows[target]
        row.sfid = kept.sfid
        row.values.update(kept.values)
        self._written(LOCAL, rid, kept)
        self._landed(LOCAL, command, {f: kept.values[c] for f, c in COLUMN.items() if c in kept.values})

    def _apply_salesforce(self, command: ApplyCommand) -> None:
        """The Salesforce sink (consumers/salesforce/plan.py): a linked record written by Id, the external id
        set to the local key unless the command carries it; every write that lands comes back as CDC."""
        rid, kept = self._screened(SF, command)
        if kept is None:
            return
        assert kept.sfid == SFID, kept
        rec = self.sf.get(SFID)
        if kept.operation is ApplyOperation.DELETE:
            self._written(SF, rid, kept)
            if rec is not None and not rec.deleted:
                rec.deleted = True
                self._cdc(Operation.DELETE, {}, own=True)
            return
        if rec is None or rec.deleted:
            self.sinks[SF].dead.append((kept, "ENTITY_IS_DELETED"))  # permanent: dead-lettered
            return
        values = dict(kept.values)
        if EXT not in values and kept.local_key is not None:
            values[EXT] = kept.local_key
        changed = {k: v for k, v in values.items() if rec.values.get(k) != v}
        rec.values.update(values)
        self._written(SF, rid, kept)
        self._landed(SF, command, {f: v for f, v in kept.values.items() if f in COLUMN})
        self._cdc(Operation.UPDATE, changed, own=True)

    def _deliver(self, side: Side, index: int, duplicate: bool) -> None:
        queue = self.sinks[side].queue
        command = queue[index] if duplicate else queue.pop(index)
        (self._apply_local if side is LOCAL else self._apply_salesforce)(command)

    @precondition(lambda self: any(s.queue for s in self.sinks.values()))
    @rule(data=st.data(), duplicate=st.integers(0, 4))
    def sink_writes(self, data: st.DataObject, duplicate: int) -> None:
        """Any queued command lands (retries and replicas reorder them); now and then one lands twice."""
        side = data.draw(st.sampled_from([x for x, s in self.sinks.items() if s.queue]))
        self._deliver(side, data.draw(st.integers(0, len(self.sinks[side].queue) - 1)), duplicate == 0)

    # ------------------------------------------------------------------------------------- the invariant

    def _landed(self, side: Side, command: ApplyCommand, values: dict[str, Any]) -> None:
        if any(c is command for c in self.late):
            self.landed.extend((side, name, value) for name, value in values.items())

    def quiesce(self) -> None:
        for _ in range(5000):
            unread = self._unread()
            if unread:
                s = self.streams[unread[0]]
                self._process(unread[0], s.read, False)
                s.read += 1
                continue
            queued = [x for x, s in self.sinks.items() if s.queue]
            if not queued:
                return
            self._deliver(queued[0], 0, False)
        raise AssertionError("no quiescence: sfsync keeps writing")

    def teardown(self) -> None:
        if not hasattr(self, "sf"):
            return
        self.quiesce()
        rec, linked = self.sf[SFID], self._linked_row()
        where = (self.conflict, self.delete, self.history, rec, self.rows)
        last = self.history[-1]
        sf_last = [what for side, what in self.history if side is SF][-1]
        if self.delete is DeletePolicy.PROPAGATE:
            # a delete on either side is a delete on both, an undelete brings the record back on both: the
            # sides agree, no row is left unlinked, and after a last delete nothing came back
            assert rec.deleted is (linked is None), where
            assert all(r.sfid is not None for r in self.rows.values()), where
            if last[1] == "delete" and not self.edited and (last[0] is SF or self.skew[LOCAL] == 0):
                # (a local delete and a concurrent, later edit in Salesforce: either may win; local deletes are
                # ordered by commit time: the clock caveat)
                assert rec.deleted, where
        else:
            # unlink / ignore: sfsync deletes nothing in Salesforce
            assert rec.deleted is (sf_last == "delete"), where
        if self.delete is DeletePolicy.UNLINK:
            # a local delete unlinks the Salesforce record (it stays, naming no row); a Salesforce delete
            # unlinks the row (it stays); an undelete relinks (or recreates) the row
            if last == (LOCAL, "delete") and not self.edited and self.skew[LOCAL] == 0:
                # (the external id is not cleared on a record in the recycle bin: Salesforce refuses the write)
                assert (rec.deleted or rec.values.get(EXT) is None) and linked is None, where
            elif last == (SF, "delete"):
                assert linked is None, where
            elif (LOCAL, "delete") not in self.history:
                assert linked is not None, where  # (a local delete concurrent with an undelete wins)
        if self.delete is DeletePolicy.IGNORE:
            # neither side's delete reaches the other; a row deleted locally stays gone until an undelete
            assert (linked is None) is self._locally_deleted(), where
        if rec.deleted or linked is None:
            return
        _pk, row = linked
        entry = self.entries.get(f"{OBJECT}:{SFID}")
        assert entry is not None, where
        for name, column in COLUMN.items():
            assert rec.values.get(name) == row.values.get(column), (name, where)
            winner = entry.record.fields.get(name)
            assert winner is not None and (winner.value.remote, winner.value.local) \
                == (rec.values.get(name), row.values.get(column)), (name, winner, where)
        # no flip-flop: what sfsync decided after it had read the users' last changes carries the end value
        for side, name, value in self.landed:
            assert value == (rec.values[name] if side is SF else row.values[COLUMN[name]]), (side, name, where)


Convergence.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
test_one_record_converges_under_every_policy = Convergence.TestCase


# ------------------------------------------------------------------------------------- regressions found by it

def _change(side: Side, ts: int, offset: int, echo: bool = False, seen: dict[str, Version] | None = None,
            **fields: Any) -> Change:
    return Change(side, ts, (ts, offset), SourcePosition(0, offset), {k: Values(v, v) for k, v in fields.items()},
                  seen or {}, echo)


def test_a_late_echo_of_a_write_retried_after_a_newer_one_is_not_taken_for_automation() -> None:
    """Three local edits go to Salesforce as writes #1 (FirstName v3), #2 (Title v4), #3 (FirstName v5); #1
    fails and is retried, so #2 lands first. Its echo made the processor infer #1 had landed (writes of a
    record land in order) and forget it; when #1's echo came, v3 was "a value sfsync did not send", taken for
    Salesforce automation, won, and went to PostgreSQL: the row showed v5, then v3, then v5 again (found by
    the state machine: a flip-flop after the users' last write)."""
    sf_wins = lambda _n: ConflictPolicy.SALESFORCE_WINS  # noqa: E731
    d = decide(None, _change(SF, 10, 1, echo=True, F="a", T="b"), sf_wins)
    d = decide(d.state, _change(LOCAL, 11, 1, F="v3"), sf_wins)
    d = decide(d.state, _change(LOCAL, 12, 2, T="v4"), sf_wins)
    d = decide(d.state, _change(SF, 13, 2, echo=True, T="v4"), sf_wins)    # #2 landed first
    d = decide(d.state, _change(LOCAL, 14, 3, F="v5"), sf_wins)
    late = decide(d.state, _change(SF, 15, 3, echo=True, F="v3"), sf_wins)  # #1, retried, lands
    assert LOCAL not in late.writes
    assert late.state is not None and late.state.fields["F"].value.remote == "v5"
    done = decide(late.state, _change(SF, 16, 4, echo=True, F="v5"), sf_wins)  # #3 lands after it
    assert done.writes == {} and done.state is not None and done.state.fields["F"].value.local == "v5"


def _machine(conflict: ConflictPolicy, delete: DeletePolicy, skew: int = 0) -> Convergence:
    m = Convergence()
    m.create_in_salesforce(conflict, delete, skew, "a")
    return m


def _read(m: Convergence, side: Side, crash: bool = False) -> None:
    s = m.streams[side]
    m._process(side, s.read, crash)
    if not crash:
        s.read += 1


def test_a_salesforce_edit_read_after_a_local_unlink_does_not_insert_the_deleted_row_again() -> None:
    """Found by the state machine (unlink). The local delete cleared the record's state; the Salesforce edit
    read after it (made before the unlink reached Salesforce) was then a first change, won, and went to
    PostgreSQL, whose sink inserted the deleted row again, for good, holding only the edited column."""
    m = _machine(ConflictPolicy.SALESFORCE_WINS, DeletePolicy.UNLINK)
    _read(m, SF)
    m._deliver(LOCAL, 0, False)
    m.local_user_deletes()
    m.salesforce_user_edits({"Title"}, False, False)
    _read(m, LOCAL)
    _read(m, SF)
    assert [c for c in m.sinks[LOCAL].queue if c.operation is ApplyOperation.UPSERT] == []
    m.teardown()
    assert m.rows == {} and m.sf[SFID].values[EXT] is None and not m.sf[SFID].deleted


def test_an_inbound_delete_is_not_skipped_as_older_than_sfsyncs_own_writes_to_the_row() -> None:
    """Found by the state machine (fill_empty, propagate). A local edit lost (Salesforce's value is kept) and
    got the winner written back to its row, versioned after the edit; the Salesforce delete, committed before
    that edit, went out with its own older version, and the PostgreSQL sink's guard skipped it as older
    than what it had written: the row stayed, the Salesforce record was gone."""
    m = _machine(ConflictPolicy.FILL_EMPTY, DeletePolicy.PROPAGATE)
    m.salesforce_user_edits({"FirstName"}, False, False)
    m.salesforce_user_deletes()
    _read(m, SF)
    m._deliver(LOCAL, 0, False)
    m.local_user_edits({"FirstName"})
    _read(m, LOCAL, crash=True)
    m.teardown()
    assert m.rows == {} and m.sf[SFID].deleted


def test_an_echo_after_an_undelete_is_still_known_as_sfsyncs_write() -> None:
    """Found by the state machine (propagate). A local edit went to Salesforce while the record was deleted
    and undeleted there; the delete had cleared the record's state, so the edit's echo, after the undelete,
    was a value sfsync did not send, taken for automation: the row showed the edit, then the undeleted
    value, then the edit again."""
    m = _machine(ConflictPolicy.SALESFORCE_WINS, DeletePolicy.PROPAGATE)
    m.salesforce_user_deletes()
    m.salesforce_user_undeletes()
    _read(m, SF)
    m._deliver(LOCAL, 0, False)
    m.local_user_edits({"FirstName"})
    _read(m, LOCAL)
    m._deliver(SF, 0, False)  # lands on the undeleted record
    m.teardown()  # no flip-flop, both sides equal
    assert m.sf[SFID].values["FirstName"] == m._linked_row()[1].values["first_name"]  # type: ignore[index]


def test_a_local_delete_concurrent_with_a_later_undelete_and_edit_in_salesforce_loses() -> None:
    """Found by the state machine (propagate). The row was deleted before the undelete's and the edit's writes
    reached it; the delete, read last, sent a delete that Salesforce's guard skipped (older than sfsync's
    writes there) while the row stayed deleted: Salesforce held the record, PostgreSQL did not. Now the
    older delete loses, the loss is noted, and the row comes back with the winners."""
    m = _machine(ConflictPolicy.SALESFORCE_WINS, DeletePolicy.PROPAGATE)
    _read(m, SF)
    m._deliver(LOCAL, 0, False)
    m.local_user_edits({"FirstName"})
    m.local_user_deletes()
    m.salesforce_user_deletes()
    m.salesforce_user_undeletes()
    _read(m, LOCAL, crash=True)
    m.salesforce_user_edits({"FirstName"}, False, False)
    m.salesforce_user_deletes()
    m.salesforce_user_undeletes()
    m.teardown()
    found = m._linked_row()
    assert not m.sf[SFID].deleted and found is not None
    assert found[1].values["first_name"] == m.sf[SFID].values["FirstName"]


def test_a_lost_local_delete_read_again_after_a_crash_still_loses() -> None:
    """Found by the state machine (unlink). A local delete lost to a newer Salesforce edit on its way to the
    row; the processor stored that and crashed before sending. Read again, the delete was taken for a
    redelivery of a delete and sent as mapped: the Salesforce record was unlinked while the edit put the row
    back, linked, holding only the edited column."""
    m = _machine(ConflictPolicy.SALESFORCE_WINS, DeletePolicy.UNLINK)
    _read(m, SF)
    m._deliver(LOCAL, 0, False)
    m.local_user_deletes()
    m.salesforce_user_edits({"FirstName"}, False, False)
    _read(m, SF)
    _read(m, LOCAL, crash=True)
    m.teardown()
    found = m._linked_row()
    assert found is not None and not m.sf[SFID].deleted
    assert found[1].values == {"first_name": m.sf[SFID].values["FirstName"], "title": m.sf[SFID].values["Title"]}
