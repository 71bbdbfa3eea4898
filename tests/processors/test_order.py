"""Each source partition is processed gaplessly and in order (:mod:`processors.order`)."""

from __future__ import annotations

from processors.order import Check, SourceOrder, Verdict

OUT, IN = "changes.outbound", "changes.inbound"
TP = ("p", 0)


def order() -> SourceOrder:
    return SourceOrder({OUT: 0, IN: 1})


def test_a_partition_resumes_at_its_committed_offset_and_goes_on_in_order() -> None:
    o = order()
    assert not o.known(TP)
    o.start(TP, 10)
    assert o.known(TP)
    assert [o.check(TP, OUT, n).verdict for n in (10, 11, 12)] == [Verdict.PROCESS] * 3


def test_a_jump_after_a_rebalance_reads_the_partition_again_and_drops_what_was_read_before_the_seek() -> None:
    """faust resumed fetching before seeking back: 247 arrives while 223 is next. The partition is read again
    from 223; 248.. (still buffered from before the seek) are dropped; the re-read 223.. are processed."""
    o = order()
    o.start(TP, 223)
    assert o.check(TP, OUT, 247) == Check(Verdict.SEEK, seek=223)
    assert [o.check(TP, OUT, n).verdict for n in (248, 249)] == [Verdict.DROP] * 2
    assert [o.check(TP, OUT, n) for n in (223, 224)] == [Check(Verdict.PROCESS, reread=True), Check(Verdict.PROCESS)]
    assert o.check(TP, OUT, 225).verdict is Verdict.PROCESS


def test_a_jump_the_re_read_confirms_is_a_hole_in_a_topic_without_holes() -> None:
    o = order()
    o.start(TP, 5)
    assert o.check(TP, OUT, 7).verdict is Verdict.SEEK
    assert o.check(TP, OUT, 7) == Check(Verdict.HOLE, gap=(5, 7), reread=True)


def test_a_commit_marker_passes_and_a_confirmed_larger_gap_is_named_in_a_transactional_topic() -> None:
    o = order()
    o.start(TP, 5)
    assert o.check(TP, IN, 6) == Check(Verdict.PROCESS)  # offset 5: a commit marker
    assert o.check(TP, IN, 10) == Check(Verdict.SEEK, seek=7)
    assert o.check(TP, IN, 10) == Check(Verdict.PROCESS, gap=(7, 10), reread=True)  # e.g. an aborted transaction
    assert o.check(TP, IN, 11) == Check(Verdict.PROCESS)


def test_a_re_read_below_the_next_offset_is_processed_and_revocation_forgets_everything() -> None:
    o = order()
    o.start(TP, 0)
    for n in range(5):
        o.check(TP, OUT, n)
    assert o.check(TP, OUT, 2) == Check(Verdict.PROCESS)  # faust's own seek back: the redelivery rule handles it
    assert o.check(TP, OUT, 3) == Check(Verdict.PROCESS)
    o.forget()
    assert not o.known(TP)
    o.start(TP, None)  # never committed: it starts wherever its first record is
    assert o.check(TP, OUT, 40) == Check(Verdict.PROCESS)
    assert o.check(TP, OUT, 42).verdict is Verdict.SEEK
