"""The API budget decision (pure)."""

from __future__ import annotations

from sfsync.salesforce.budget import Pace, allowed_calls, decide


def test_unknown_usage_goes() -> None:
    assert decide(None, 0.5).pace is Pace.GO


def test_go_slow_stop() -> None:
    assert decide((100, 1000), 0.5).pace is Pace.GO
    slow = decide((450, 1000), 0.5, max_delay_s=2.0)
    assert slow.pace is Pace.SLOW and slow.delay_s == 1.0  # halfway between 400 and 500
    assert decide((499, 1000), 0.5).pace is Pace.SLOW
    stop = decide((500, 1000), 0.5, retry_after_s=30)
    assert stop.pace is Pace.STOP and stop.retry_after_s == 30 and stop.allowed == 500


def test_the_calls_about_to_be_made_count() -> None:
    assert decide((495, 1000), 0.5, calls=5).pace is not Pace.STOP
    assert decide((495, 1000), 0.5, calls=6).pace is Pace.STOP


def test_delay_grows_with_usage() -> None:
    delays = [decide((u, 1000), 0.5).delay_s for u in range(400, 500, 10)]
    assert delays == sorted(delays) and delays[0] == 0.0 and delays[-1] < 2.0


def test_allowed_calls_keep_one_for_the_org() -> None:
    assert allowed_calls(1000, 0.5) == 500
    assert allowed_calls(10, 0.99) == 9
    assert allowed_calls(1000, 1.0) == 1000
    assert decide((0, 0), 0.5).pace is Pace.STOP
