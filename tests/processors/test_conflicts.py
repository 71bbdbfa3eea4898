"""The pure conflict logic (:mod:`processors.conflicts`): scenarios, and a state machine of both sides.

The state machine is a model of the whole loop around :func:`decide`: Salesforce and PostgreSQL each hold
one record's fields; users edit either side at any moment (with a clock skew between the two); every edit
is a change in its side's ordered stream; the processor reads the two streams in any interleaving, may
crash after storing its state and before its writes went out (the change comes again) and may read a
change twice; the sinks apply the writes in any order, through the same version rule as the real sinks
(:func:`consumers.versions.screen`: a field is written only when the write is newer than what was
written); every Salesforce write comes back as its echo, and a Salesforce automation
may change a value during sfsync's write. After quiescence: both sides hold the same value of every field,
and it is the processor's winner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from processors.conflicts import Change, Decision, RecordState, Side, Values, Write, decide
from processors.state import SourcePosition
from sfsync.config import ConflictPolicy

FIELDS = ("A", "B")
SF, LOCAL = Side.SALESFORCE, Side.LOCAL


def both(v: Any) -> Values:
    return Values(v, v)


def change(side: Side, ts: int, offset: int, echo: bool = False, seen: dict[str, Any] | None = None,
           **fields: Any) -> Change:
    return Change(side, ts, (ts, offset), SourcePosition(0, offset), {k: both(v) for k, v in fields.items()},
                  seen or {}, echo)


def lww(_name: str) -> ConflictPolicy:
    return ConflictPolicy.LAST_WRITER_WINS


def sent(d: Decision, side: Side, repair: bool | None = None) -> dict[str, Any] | None:
    w = d.writes.get(side)
    if w is None or (repair is not None and w.repair is not repair):
        return None
    return {k: v.on(side) for k, v in w.values.items()}


def version_to(d: Decision, side: Side) -> tuple[int, int]:
    return d.writes[side].version


# ---------------------------------------------------------------------------------------------- scenarios

def test_a_first_change_wins_and_goes_to_the_other_side() -> None:
    d = decide(None, change(LOCAL, 10, 1, A="x"), lww)
    assert sent(d, SF, repair=False) == {"A": "x"} and sent(d, LOCAL) is None
    assert d.state is not None and d.state.fields["A"].pending == ((1, "x"),)
    assert version_to(d, SF) == (10, 1)


def test_both_sides_edit_at_once_the_later_commit_wins_everywhere() -> None:
    """The reported case: LOCAL in PostgreSQL, REMOTE in Salesforce a few ms later."""
    d1 = decide(None, change(LOCAL, 10, 1, A="LOCAL"), lww)       # -> Salesforce, not echoed yet
    d2 = decide(d1.state, change(SF, 12, 1, A="REMOTE"), lww)      # concurrent and later: wins
    assert sent(d2, LOCAL, repair=False) == {"A": "REMOTE"}
    # and goes back to Salesforce after sfsync's LOCAL write, which has not landed yet
    assert sent(d2, SF, repair=True) == {"A": "REMOTE"} and version_to(d2, SF) > version_to(d1, SF)
    d3 = decide(d2.state, change(SF, 13, 2, echo=True, A="LOCAL"), lww)   # the late LOCAL write's echo
    assert d3.writes == {}  # the REMOTE write after it is still pending: nothing more to do
    d4 = decide(d3.state, change(SF, 14, 3, echo=True, A="REMOTE"), lww)
    assert d4.writes == {} and d4.state is not None and d4.state.fields["A"].pending == ()


def test_the_echo_of_one_write_does_not_confirm_a_later_write_of_another_field() -> None:
    """Two writes to Salesforce, of FirstName then of Title; the first's echo (FirstName only) must leave the
    Title write pending, so a Salesforce edit of Title read next is concurrent (it did not see it).

    Failed first (end to end, salesforce_wins): the FirstName echo popped Title's pending write, the user's
    concurrent Title edit was taken as a plain newer edit, and the local value won."""
    sf_wins = lambda _n: ConflictPolicy.SALESFORCE_WINS  # noqa: E731
    d1 = decide(None, change(SF, 10, 1, echo=True, F="Ada", T="start"), sf_wins)  # a create's echo
    d2 = decide(d1.state, change(LOCAL, 11, 1, F="Ada-2"), sf_wins)
    d3 = decide(d2.state, change(LOCAL, 12, 2, T="LOCAL"), sf_wins)
    d4 = decide(d3.state, change(SF, 13, 2, echo=True, F="Ada-2"), sf_wins)  # echo of the FirstName write
    assert d4.state is not None and d4.state.fields["T"].pending == ((2, "LOCAL"),)
    d5 = decide(d4.state, change(SF, 14, 3, T="REMOTE"), sf_wins)  # the user's edit, before LOCAL landed
    assert d5.state is not None and d5.state.fields["T"].value.remote == "REMOTE"
    assert sent(d5, LOCAL) == {"T": "REMOTE"} and sent(d5, SF, repair=True) == {"T": "REMOTE"}


def test_a_concurrent_older_local_change_loses_and_the_winner_on_its_way_needs_no_repair() -> None:
    d1 = decide(None, change(SF, 20, 1, A="REMOTE"), lww)
    d2 = decide(d1.state, change(LOCAL, 15, 1, A="LOCAL"), lww)  # the row had not got REMOTE yet
    assert d2.writes == {}
    assert [(x.field, x.side, x.lost, x.kept) for x in d2.losses] == [("A", LOCAL, "LOCAL", "REMOTE")]
    # once the REMOTE write had landed (seen), an older-stamped local change saw it: a newer edit
    d3 = decide(d1.state, change(LOCAL, 15, 2, seen={"A": version_to(d1, LOCAL)}, A="LOCAL2"), lww)
    assert sent(d3, SF) == {"A": "LOCAL2"} and d3.losses == []


def test_a_losing_change_after_sfsyncs_write_landed_is_repaired() -> None:
    fill = lambda _n: ConflictPolicy.FILL_EMPTY  # noqa: E731
    d1 = decide(None, change(SF, 20, 1, A="set"), fill)
    d2 = decide(d1.state, change(LOCAL, 25, 1, seen={"A": version_to(d1, LOCAL)}, A="mine"), fill)
    assert sent(d2, LOCAL, repair=True) == {"A": "set"} and version_to(d2, LOCAL) > version_to(d1, LOCAL)


@pytest.mark.parametrize(("policy", "winner"), [(ConflictPolicy.SALESFORCE_WINS, "REMOTE"),
                                                (ConflictPolicy.LOCAL_WINS, "LOCAL"),
                                                (ConflictPolicy.LAST_WRITER_WINS, "LOCAL")])
def test_policies_decide_concurrent_changes(policy: ConflictPolicy, winner: str) -> None:
    d1 = decide(None, change(SF, 10, 1, A="REMOTE"), lambda _n: policy)
    d2 = decide(d1.state, change(LOCAL, 11, 1, A="LOCAL"), lambda _n: policy)
    assert d2.state is not None and d2.state.fields["A"].value.local == winner


def test_fill_empty_lets_local_values_fill_only_empty_salesforce_fields() -> None:
    def policy(_n: str) -> ConflictPolicy:
        return ConflictPolicy.FILL_EMPTY

    d1 = decide(None, change(SF, 10, 1, A="", B="set"), policy)
    d2 = decide(d1.state, change(LOCAL, 11, 1, A="filled", B="mine"), policy)
    assert sent(d2, SF) == {"A": "filled"} and d2.state is not None
    assert d2.state.fields["B"].value.local == "set"


def test_salesforce_automation_during_sfsyncs_write_reaches_postgresql() -> None:
    d1 = decide(None, change(LOCAL, 10, 1, A="ada"), lww)
    d2 = decide(d1.state, change(SF, 11, 1, echo=True, A="ADA"), lww)  # a flow upper-cased it
    assert sent(d2, LOCAL, repair=False) == {"A": "ADA"}
    assert d2.state is not None and d2.state.fields["A"].value.remote == "ADA"


def test_an_echo_of_the_winner_is_a_no_op_and_a_first_seen_echo_is_taken_as_confirmed() -> None:
    d1 = decide(None, change(LOCAL, 10, 1, A="x"), lww)
    assert decide(d1.state, change(SF, 11, 1, echo=True, A="x"), lww).writes == {}
    first = decide(None, change(SF, 11, 1, echo=True, A="y"), lww)
    assert first.writes == {} and first.state is not None and first.state.fields["A"].value.remote == "y"


def test_a_redelivered_change_resends_sfsyncs_newest_writes_that_carry_the_winner() -> None:
    d1 = decide(None, change(LOCAL, 10, 1, A="a1"), lww)
    d2 = decide(d1.state, change(LOCAL, 11, 2, A="a2", B="b2"), lww)
    d3 = decide(d2.state, change(SF, 12, 1, A="remote"), lww)  # newer: wins A; goes to the row
    again = decide(d3.state, change(LOCAL, 11, 2, A="a2", B="b2"), lww)
    # per field sfsync's newest write to each side that carries the winner, each with its own version: A's
    # win (and its repair to Salesforce) at 12, B's write at 11 — never B under A's newer version
    assert [(to, w.version, {k: v.on(to) for k, v in w.values.items()}) for to, w in again.resends] == [
        (LOCAL, (12, 1), {"A": "remote"}),
        (SF, (11, 2), {"B": "b2"}),
        (SF, (12, 1), {"A": "remote"}),
    ]
    assert again.writes == {} and again.state is None  # nothing decided again, the state stays
    assert d3.state is not None
    assert decide(d3.state, change(SF, 13, 2, A="later"), lww).writes[LOCAL].version > version_to(d3, LOCAL)


def test_a_replayed_echo_never_puts_an_older_value_over_a_newer_edit_on_its_side() -> None:
    """Name went to Salesforce at version 10, Phone later at 20; both echoed. A user then sets Name in
    Salesforce, and before the processor reads that, it replays the echo of the first write (a restart).
    The replay resends Name at 10 — the Salesforce sink wrote 10 already and skips it — and Phone at 20.

    Failed before the fix (seed 2028258776 of the kill test): the resend went out as one write under the
    highest version of its fields, Name at 20: newer than the 10 the sink held, so it overwrote the user's
    Name with the old one."""
    from consumers.versions import screen
    from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Source, version_time

    d1 = decide(None, change(LOCAL, 10, 1, Name="n1", Phone="p1"), lww)
    echo1 = change(SF, 11, 1, echo=True, Name="n1", Phone="p1")
    d2 = decide(d1.state, echo1, lww)
    d3 = decide(d2.state, change(LOCAL, 20, 2, Phone="p2"), lww)
    d4 = decide(d3.state, change(SF, 21, 2, echo=True, Phone="p2"), lww)
    assert d4.state is not None
    held = {"Name": version_to(d1, SF), "Phone": version_to(d3, SF)}  # what the Salesforce sink wrote

    replay = decide(d4.state, echo1, lww)  # at or below the stored position: a redelivery
    written: dict[str, Any] = {}
    for to, write in [*replay.writes.items(), *replay.resends]:
        if to is not SF:
            continue
        command = ApplyCommand(command_id="c", target=ApplyTarget.SALESFORCE, object="Account", source=Source.POSTGRES,
                               source_event_id="e",
                               operation=ApplyOperation.UPSERT, sfid="001", local_key="1",
                               values={k: v.remote for k, v in write.values.items()}, fields=sorted(write.values),
                               source_commit_ts=version_time(write.version[0]), source_position=str(write.version[1]))
        kept = screen(command, held)
        written.update(kept.values if kept is not None else {})
    assert "Name" not in written  # the user's newer Name in Salesforce stays


# ---------------------------------------------------------------------------------------------- the model

@dataclass
class SideModel:
    values: dict[str, Any] = field(default_factory=dict)
    stream: list[Change] = field(default_factory=list)   # every change of this side, in commit order
    read: int = 0                                        # how far the processor read it
    queue: list[Write] = field(default_factory=list)     # writes sfsync sent to this side, not applied yet
    written: dict[str, tuple[int, int]] = field(default_factory=dict)  # the sink's field versions


POLICIES = list(ConflictPolicy)


class TwoSides(RuleBasedStateMachine):
    """Both sides of one record, the processor and the sinks (module docstring)."""

    @initialize(policy=st.sampled_from(POLICIES), skew=st.integers(-5, 5))
    def setup(self, policy: ConflictPolicy, skew: int) -> None:
        self.policy = policy
        self.skew = {SF: 0, LOCAL: skew}
        self.time = 100
        self.sides = {SF: SideModel(), LOCAL: SideModel()}
        self.state: RecordState | None = None
        self.counter = 0

    def _pol(self, _name: str) -> ConflictPolicy:
        return self.policy

    def _emit(self, side: Side, values: dict[str, Any], echo: bool = False,
              seen: dict[str, Any] | None = None) -> None:
        self.time += 1
        s = self.sides[side]
        offset = len(s.stream)
        ts = self.time + self.skew[side]
        s.stream.append(Change(side, ts, (ts, offset), SourcePosition(0, offset),
                               {k: both(v) for k, v in values.items()}, seen or {}, echo))

    def _fresh(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    @rule(side=st.sampled_from([SF, LOCAL]), names=st.sets(st.sampled_from(FIELDS), min_size=1),
          empty=st.booleans())
    def user_edits(self, side: Side, names: set[str], empty: bool) -> None:
        s = self.sides[side]
        values = {n: ("" if empty and n == "A" else self._fresh()) for n in sorted(names)}
        s.values.update(values)
        # the capture trigger reads the versions of sfsync's writes the row holds
        self._emit(side, values, seen=dict(s.written) if side is LOCAL else None)

    def _process(self, side: Side, crash: bool, index: int | None = None) -> None:
        s = self.sides[side]
        c = s.stream[s.read if index is None else index]
        d = decide(self.state, c, self._pol)
        if d.state is not None:
            self.state = d.state  # the Table is written (changelog) before the crash
        if crash:
            return  # the writes are lost; the offset was not committed: the change comes again
        if index is None:
            s.read += 1
        for target, write in [*d.writes.items(), *d.resends]:
            self.sides[target].queue.append(write)

    @precondition(lambda self: any(s.read < len(s.stream) for s in self.sides.values()))
    @rule(data=st.data(), crash=st.booleans())
    def processor_reads(self, data: st.DataObject, crash: bool) -> None:
        side = data.draw(st.sampled_from([x for x, s in self.sides.items() if s.read < len(s.stream)]))
        self._process(side, crash and data.draw(st.integers(0, 3)) == 0)

    @precondition(lambda self: any(s.read for s in self.sides.values()))
    @rule(data=st.data())
    def processor_reads_a_change_again(self, data: st.DataObject) -> None:
        side = data.draw(st.sampled_from([x for x, s in self.sides.items() if s.read]))
        self._process(side, False, data.draw(st.integers(0, self.sides[side].read - 1)))

    @precondition(lambda self: any(s.queue for s in self.sides.values()))
    @rule(data=st.data(), automation=st.booleans())
    def sink_writes(self, data: st.DataObject, automation: bool) -> None:
        side = data.draw(st.sampled_from([x for x, s in self.sides.items() if s.queue]))
        self._apply(side, data.draw(st.integers(0, len(self.sides[side].queue) - 1)), automation)

    def _apply(self, side: Side, index: int, automation: bool) -> None:
        """The sink applies one write (any queued one: retries reorder writes), screened like the real sinks;
        a Salesforce write comes back as its echo."""
        s = self.sides[side]
        write = s.queue.pop(index)
        applied: dict[str, Any] = {}
        for name, value in write.values.items():
            stored = s.written.get(name)
            if stored is None or write.version > stored:  # consumers.versions.screen: strictly newer
                s.written[name] = write.version
                applied[name] = value.on(side)
        if not applied:
            return
        if side is SF and automation and isinstance(applied.get("B"), str) and not applied["B"].endswith("+"):
            applied["B"] += "+"  # a flow changes B as part of sfsync's write
        changed = {n: v for n, v in applied.items() if s.values.get(n) != v}
        s.values.update(applied)
        if side is SF:
            self._emit(SF, changed, echo=True)  # every Salesforce write makes a CDC event, sfsync's origin

    def quiesce(self) -> None:
        """Read every change and apply every write, in order, until nothing is left."""
        for _ in range(2000):
            unread = [x for x, s in self.sides.items() if s.read < len(s.stream)]
            if unread:
                self._process(unread[0], False)
                continue
            queued = [x for x, s in self.sides.items() if s.queue]
            if not queued:
                return
            self._apply(queued[0], 0, False)
        raise AssertionError("no quiescence: sfsync keeps writing")

    def teardown(self) -> None:
        """Let everything arrive, then check: both sides equal, and equal to the processor's winner."""
        if not hasattr(self, "sides"):
            return
        self.quiesce()
        sf, local = self.sides[SF].values, self.sides[LOCAL].values
        for name in set(sf) | set(local):
            assert sf.get(name) == local.get(name), (name, sf, local, self.policy)
            assert self.state is not None
            winner = self.state.fields[name].value
            assert (winner.remote, winner.local) == (sf[name], local[name]), (name, winner, sf, local)


TwoSides.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
test_two_sides_converge_under_every_policy = TwoSides.TestCase


def test_a_force_sync_writes_the_winner_to_the_other_side_even_when_nothing_changed() -> None:
    """``sfsync sync``: the other side may have been changed without a change event (an uncaptured write):
    a forced change equal to the winner still writes it there; an unforced one is a no-op."""
    d1 = decide(None, change(SF, 10, 1, A="x"), lww)
    d2 = decide(d1.state, change(SF, 11, 2, echo=False, A="x"), lww)
    assert d2.writes == {}
    forced = Change(SF, 12, (12, 3), SourcePosition(0, 3), {"A": both("x")}, {}, False, force=True)
    d3 = decide(d1.state, forced, lww)
    assert sent(d3, LOCAL, repair=False) == {"A": "x"} and sent(d3, SF) is None
    assert version_to(d3, LOCAL) > version_to(d1, LOCAL)
