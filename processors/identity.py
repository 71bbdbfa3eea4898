"""One record, one state, across the moment a local record gets its Salesforce id. Pure, no I/O.

A record created in PostgreSQL is keyed ``{object}:local:{pk}`` until the Salesforce sink writes its new sfid
onto the row; from then on both directions key its changes ``{object}:{sfid}`` (the sfid wins in
:func:`~sfsync.records.record_key`): another key, most often another partition, and so an empty entry in the
processor's Table. Deciding there without the state kept under the local key would lose what it knows: which
values sfsync sent to Salesforce with the create (so a value Salesforce automation set during that create
would be taken for sfsync's own echo and never reach PostgreSQL), and who won each field.

So the state moves, once per record, over the compacted ``links`` topic (:class:`~sfsync.records.Link`):

1. A change met under an sfid key for which the Table holds nothing, and which names a local key (the
   create's echo carries it in the external id field; a local change always does), is **parked**: it and
   every later change of that key wait, unacknowledged, and a **pull** goes to the links topic under the
   local key — the partition whose entry holds the state.
2. The worker of that partition answers with a **handover** under the sfid key: the entry kept under the
   local key, or nothing. It records the sfid in that entry, so a straggler change still keyed by the local
   key sends commands that carry it.
3. The handover's entry is **adopted** under the sfid key (:func:`adopt`), and the parked changes are decided
   against it, in the order they were read.

A record created in Salesforce never pulls: its first change is Salesforce's create, which names no local
key. A parked change that waited ``processor.identity_wait_s`` during which the worker read nothing from the
links topic (a pull or handover that cannot come) is decided without it, as if the record were new, and logged
(:func:`wait_over`); while links keep arriving the round trip is late, not lost (a backlog: both messages queue
behind the changes the workers have read), so it waits on, up to :data:`WAIT_CAP` times that. The wait is
checked on a timer beside the worker's stream, not after events: the parked change's partition may get no
other event at all.

A worker that holds the local key's partition as well (always, with one worker) does not go round: it reads the
entry there, adopts it and decides at once, and records the sfid under the local key in that partition
(``moved_here`` in :mod:`processors.app`). It writes nothing to the links topic: only this worker would read it
back, and nothing there would be news to it (both entries, each naming the other id, are in the Table and its
changelog). Until 4 December it wrote the pull and the handover all the same: 2 of the 4 messages it read per
outbound record in ``bench/outbound.py``.
"""

from __future__ import annotations

from dataclasses import replace

from processors.conflicts import RecordState
from processors.entry import Entry
from sfsync.records import ChangeEvent, record_key


def needs_pull(stored: Entry | None, change: ChangeEvent, state_key: bytes) -> bool:
    """Whether ``change``, met under ``state_key`` with ``stored`` there, waits for the state under its local
    key (see the module docstring)."""
    if stored is not None or not change.sfid or not change.local_key:
        return False
    return state_key == record_key(change.object, sfid=change.sfid).encode()


def adopt(moved: Entry | None, sfid: str, local_key: str) -> Entry:
    """The entry the sfid key starts from: the one kept under the local key, its ids set, or an entry that
    knows no field (decided like a record never seen) when there was none, so the key does not pull again.
    The read positions are dropped: they are offsets of the other partition, and the sfid key's changes are
    new to it."""
    if moved is None:
        return Entry(RecordState(), sfid, local_key)
    return Entry(replace(moved.record, positions={}), sfid, moved.local_key or local_key)


def with_sfid(stored: Entry, sfid: str) -> Entry:
    """The entry under the local key once the pull named its sfid."""
    return stored if stored.sfid == sfid else replace(stored, sfid=sfid)


#: changes never wait for a handover longer than this many times ``processor.identity_wait_s``
WAIT_CAP = 20


def wait_over(since: float, last_link: float, now: float, wait_s: float) -> bool:
    """Whether changes parked at ``since`` stop waiting for their handover at ``now`` (monotonic seconds):
    after ``wait_s`` both since they were parked and since the worker last read a links message
    (``last_link``), or after ``WAIT_CAP * wait_s`` in any case.

    Why not ``wait_s`` alone: under a backlog the pull and the handover queue behind every change the two
    workers have read; with two workers on a slow machine a 30 s wait ran out for 28 % of the 10,000 records
    of the outbound benchmark, each then decided without its state."""
    waited = now - since
    return waited >= WAIT_CAP * wait_s or (waited > wait_s and now - last_link > wait_s)
