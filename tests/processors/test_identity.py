"""processors.identity: which changes wait for the state under the local key, and what the sfid key adopts."""

from __future__ import annotations

from datetime import UTC, datetime

from processors.conflicts import FieldState, RecordState, Side, Values
from processors.entry import Entry
from processors.identity import WAIT_CAP, adopt, needs_pull, wait_over, with_sfid
from processors.state import SourcePosition
from sfsync.records import ChangeEvent, Operation, Source

SFID = "003000000000001AAA"
NOW = datetime(2026, 12, 3, tzinfo=UTC)


def change(sfid: str | None, local_key: str | None, source: Source = Source.SALESFORCE) -> ChangeEvent:
    return ChangeEvent(source=source, object="Contact", operation=Operation.CREATE, sfid=sfid, local_key=local_key,
                       values={"Title": "x"}, changed_fields=["Title"], commit_ts=NOW, source_position="1")


def test_a_change_under_its_sfid_with_no_state_that_names_a_local_key_pulls() -> None:
    key = f"Contact:{SFID}".encode()
    assert needs_pull(None, change(SFID, "42"), key)  # the create's echo, or a local change after the link
    assert needs_pull(None, change(SFID, "42", Source.POSTGRES), key)


def test_no_pull_when_there_is_state_or_nothing_to_pull_from() -> None:
    key = f"Contact:{SFID}".encode()
    assert not needs_pull(Entry(), change(SFID, "42"), key)  # the sfid key already holds the record
    assert not needs_pull(None, change(SFID, None), key)  # created in Salesforce: no local key
    assert not needs_pull(None, change(None, "42", Source.POSTGRES), b"Contact:local:42")  # not linked yet


def test_the_sfid_key_adopts_the_moved_state_without_the_other_partitions_positions() -> None:
    fs = FieldState(Values("x", "x"), Side.LOCAL, 5, SourcePosition(2, 7))
    moved = Entry(RecordState({"Title": fs}, {Side.LOCAL: SourcePosition(2, 7)}, 1), None, "42")
    adopted = adopt(moved, SFID, "42")
    assert adopted == Entry(RecordState({"Title": fs}, {}, 1), SFID, "42")
    assert adopt(None, SFID, "42") == Entry(RecordState(), SFID, "42")  # nothing moved: known, no second pull
    assert with_sfid(moved, SFID).sfid == SFID and with_sfid(moved, SFID).record == moved.record


def test_a_handover_is_waited_for_while_links_keep_arriving_up_to_the_cap() -> None:
    wait = 30.0
    assert not wait_over(since=0, last_link=0, now=29, wait_s=wait)  # within the wait
    assert wait_over(since=0, last_link=0, now=31, wait_s=wait)  # nothing read from links: it cannot come
    assert not wait_over(since=0, last_link=25, now=31, wait_s=wait)  # links arrive: a backlog, late not lost
    assert not wait_over(since=0, last_link=590, now=599, wait_s=wait)
    assert wait_over(since=0, last_link=599, now=WAIT_CAP * wait, wait_s=wait)  # never longer than the cap
    assert wait_over(since=100, last_link=0, now=131, wait_s=wait)  # the links went quiet before the park
